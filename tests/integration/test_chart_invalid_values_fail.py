"""Invalid values fail the render with the message written for them (schema violations and `fail` checks)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures_helm import SCENARIOS, HelmRenderError, Renderer

pytestmark = pytest.mark.integration


def _models(*entries: dict[str, Any]) -> str:
    """A `models` list for --set-json-like use: Helm replaces a values list whole, so `--set models[0].x`
    would drop the entry's other keys; each case gives whole entries (written to a values file)."""
    base = {"name": "m", "version": "1", "model": "smollm2-135m-instruct"}
    return "models=" + json.dumps([{**base, **e} for e in entries])


CROSS_FIELD: list[tuple[tuple[str, ...], str | None]] = [
    (
        ("gateway.maxTokensLimit=4096",),
        "gateway.maxTokensLimit (4096) must be smaller than models[0].maxModelLen (2048",
    ),
    ((_models({"gpus": 0, "dtype": "float16"}),), "models[0] (m@1): dtype float16 with gpus 0"),
    ((_models({}, {"model": "other"}),), "models[1]: m@1 is listed twice (name@version must be unique)"),
    (
        (_models({}), "aliases.chat.weights.m@9=5"),
        "aliases.chat.weights: m@9 is not a version in models (registered: [m@1])",
    ),
    ((_models({}), "aliases.chat.weights.m@1=5", "aliases.chat.shadow=m@2"), "aliases.chat.shadow: m@2"),
    ((_models({}), "aliases.m.weights.m@1=5"), "aliases.m: an alias may not have the name of a model"),
    (
        (_models({"gpus": 2, "accelerator": "h100"}),),
        "models[0] (m@1): accelerator h100 is not a key of rayCluster.gpuAccelerators",
    ),
    ((_models({"gpus": 0, "accelerator": "a100"}),), "models[0] (m@1): accelerator a100 with gpus 0"),
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
    (
        (_models({"autoscaling": {"minReplicas": 3, "maxReplicas": 2}}),),
        "models[0].autoscaling (m@1): maxReplicas (2) must be >= minReplicas (3",
    ),
    (
        (
            "autoscaling.gateway.minReplicas=0",
            "autoscaling.gateway.maxReplicas=1",
            "autoscaling.gateway.keepWarm=true",
        ),
        None,  # keepWarm with max 1 is fine: effective minimum 1 <= 1
    ),
    (("featureJob.onlineStore.backend=postgres",), "featureJob.onlineStore.backend postgres needs"),
    (("modelCache.type=pvc",), "models[0].model (smollm2-135m-instruct) is not a folder under it"),
    (
        ("modelCache.type=pvc", _models({"model": "/models/m"})),
        "modelCache.type pvc needs modelCache.pvc.existingClaim",
    ),
    (
        (
            "modelCache.type=pvc",
            _models({"model": "/models/m", "hfRepo": "a/b"}),
            "modelCache.pvc.existingClaim=w",
            "modelCache.init.enabled=true",
        ),
        "set modelCache.pvc.readOnly=false",
    ),
    (("modelCache.type=ephemeral", _models({"model": "/models/m"})), "turn modelCache.init.enabled on"),
    (("modelCache.init.enabled=true",), "modelCache.init.enabled needs a models[].hfRepo"),
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
]

SCHEMA: list[tuple[tuple[str, ...], str | None]] = [
    ((_models({"engine": "tgi"}),), "at '/models/0/engine'"),
    ((_models({"gpus": -1}),), "at '/models/0/gpus'"),
    ((_models({"version": "1 beta"}),), "at '/models/0/version'"),
    (("models=[]",), "at '/models'"),
    (("aliases.chat.weights.m1=5",), "'m1' does not match pattern"),  # a weight names name@version
    (("model.gpus=1",), "additional properties 'model' not allowed"),  # the old single-model values
    (("rayCluster.gpuWorkers.enabled=false",), "additional properties 'enabled' not allowed"),
    (("kafka.bootstrapServers=no-port",), "at '/kafka/bootstrapServers'"),
    (("image.digest=latest",), "at '/image/digest'"),
    (("rayCluster.upgradeStrategy=NewClusterWithIncrementalUpgrade",), "at '/rayCluster/upgradeStrategy'"),
    (("featureJob.schedule=hourly",), "at '/featureJob/schedule'"),
    (("featureJob.deletion=never",), "at '/featureJob/deletion'"),
    (("modelCache.type=s3",), "at '/modelCache/type'"),
    (("gateway.embedQueries=llm",), "at '/gateway/embedQueries'"),
    (("gateway.retrieveQueries=embedder",), "at '/gateway/retrieveQueries'"),
    (("modle.gpus=1",), "additional properties 'modle' not allowed"),
    ((_models({"autoscaling": {"minReplica": 1}}),), "additional properties 'minReplica' not allowed"),
]


@pytest.mark.parametrize(
    ("sets", "message"), CROSS_FIELD + SCHEMA, ids=lambda v: ",".join(v) if isinstance(v, tuple) else None
)
def test_invalid_values_should_fail_with_a_message_naming_the_keys(
    render_chart: Renderer, sets: tuple[str, ...], message: str | None, tmp_path: Path
) -> None:
    base = SCENARIOS["default"]  # the defaults plus the one required value, image.repository
    files = [base]
    for pair in sets:  # `models=<json>` travels as a values file (a list cannot be --set in part)
        if pair.startswith("models="):
            files.append(tmp_path / "models.yaml")
            files[-1].write_text(json.dumps({"models": json.loads(pair.removeprefix("models="))}))
    plain = tuple(p for p in sets if not p.startswith("models="))
    if message is None:
        render_chart(*files, sets=plain)  # the valid neighbour of an invalid case renders
        return
    with pytest.raises(HelmRenderError) as failure:
        render_chart(*files, sets=plain)
    assert message in failure.value.stderr
