"""Invalid values fail the render with the message written for them (schema violations and `fail` checks)."""

from __future__ import annotations

import pytest

from tests.fixtures_helm import SCENARIOS, HelmRenderError, Renderer

pytestmark = pytest.mark.integration

CROSS_FIELD: list[tuple[tuple[str, ...], str | None]] = [
    (("model.gpus=0",), "rayCluster.gpuWorkers.enabled is true but model.gpus is 0"),
    (("rayCluster.gpuWorkers.enabled=false",), "model.gpus is 1 but rayCluster.gpuWorkers.enabled is false"),
    (("model.gpus=2",), "model.gpus (2) is larger than rayCluster.gpuWorkers.gpusPerPod (1)"),
    (
        ("gateway.maxTokensLimit=4096",),
        "gateway.maxTokensLimit (4096) must be smaller than model.maxModelLen (2048)",
    ),
    (("autoscaling.retriever.maxReplicas=2",), "vectorStore.backend embedded keeps the index in one process"),
    (
        ("vectorStore.backend=pgvector",),
        "vectorStore.backend pgvector needs vectorStore.pgvector.dsnSecret.name",
    ),
    (("kafka.securityProtocol=SASL_SSL",), "kafka.securityProtocol SASL_SSL needs kafka.saslMechanism"),
    (
        ("kafka.securityProtocol=SASL_PLAINTEXT", "kafka.saslMechanism=PLAIN"),
        "kafka.securityProtocol SASL_PLAINTEXT needs kafka.saslSecret.name",
    ),
    (("kafka.saslMechanism=PLAIN",), "kafka.saslMechanism is set but kafka.securityProtocol is PLAINTEXT"),
    (("autoscaling.llm.minReplicas=3",), "autoscaling.llm: maxReplicas (2) must be >= minReplicas (3"),
    (
        (
            "autoscaling.gateway.minReplicas=0",
            "autoscaling.gateway.maxReplicas=1",
            "autoscaling.gateway.keepWarm=true",
        ),
        None,  # keepWarm with max 1 is fine: effective minimum 1 <= 1
    ),
    (("featureJob.onlineStore.backend=postgres",), "featureJob.onlineStore.backend postgres needs"),
    (("modelCache.type=pvc",), "model.name (smollm2-135m-instruct) is not a folder under it"),
    (
        ("modelCache.type=pvc", "model.name=/models/m"),
        "modelCache.type pvc needs modelCache.pvc.existingClaim",
    ),
    (
        (
            "modelCache.type=pvc",
            "model.name=/models/m",
            "modelCache.pvc.existingClaim=w",
            "modelCache.init.enabled=true",
            "modelCache.init.hfRepo=a/b",
        ),
        "set modelCache.pvc.readOnly=false",
    ),
    (("modelCache.type=ephemeral", "model.name=/models/m"), "turn modelCache.init.enabled on"),
    (("modelCache.init.enabled=true",), "modelCache.init.enabled needs modelCache.init.hfRepo"),
    (
        ("vectorStore.embedded.persistence.accessModes[0]=ReadWriteOnce",),
        "cannot be mounted by 4 CPU worker pods on different nodes",
    ),
    (
        (
            "vectorStore.embedded.persistence.accessModes[0]=ReadWriteOnce",
            "rayCluster.cpuWorkers.maxReplicas=1",
        ),
        None,  # one CPU worker may use a ReadWriteOnce claim
    ),
    (("rayCluster.gcsFaultTolerance.enabled=true",), "needs rayCluster.gcsFaultTolerance.redisAddress"),
    (("httpRoute.enabled=true",), "httpRoute.enabled needs httpRoute.parentRefs"),
    (("consumers.ingest.settings.group_instance_id=x",), "set consumers.ingest.staticMembership=true"),
    (("rayCluster.extraGpuWorkerGroups[0].name=gpu",), "name gpu is already used"),
]

SCHEMA: list[tuple[tuple[str, ...], str | None]] = [
    (("model.engine=tgi",), "at '/model/engine'"),
    (("model.gpus=-1",), "at '/model/gpus'"),
    (("kafka.bootstrapServers=no-port",), "at '/kafka/bootstrapServers'"),
    (("image.digest=latest",), "at '/image/digest'"),
    (("rayCluster.upgradeStrategy=NewClusterWithIncrementalUpgrade",), "at '/rayCluster/upgradeStrategy'"),
    (("featureJob.schedule=hourly",), "at '/featureJob/schedule'"),
    (("featureJob.deletion=never",), "at '/featureJob/deletion'"),
    (("modelCache.type=s3",), "at '/modelCache/type'"),
    (("modle.gpus=1",), "additional properties 'modle' not allowed"),
    (("autoscaling.llm.minReplica=1",), "additional properties 'minReplica' not allowed"),
]


@pytest.mark.parametrize(
    ("sets", "message"), CROSS_FIELD + SCHEMA, ids=lambda v: ",".join(v) if isinstance(v, tuple) else None
)
def test_invalid_values_should_fail_with_a_message_naming_the_keys(
    render_chart: Renderer, sets: tuple[str, ...], message: str | None
) -> None:
    base = SCENARIOS["default"]  # the defaults plus the one required value, image.repository
    if message is None:
        render_chart(base, sets=sets)  # the valid neighbour of an invalid case renders
        return
    with pytest.raises(HelmRenderError) as failure:
        render_chart(base, sets=sets)
    assert message in failure.value.stderr
