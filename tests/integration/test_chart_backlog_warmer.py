"""Issue 16: the chart gives the Embedder's backlog warmer (autoscaling.embedder.backlogWarmer) what it needs.

The warmer is an autoscaling policy, so it runs in Serve's controller, which Ray 2.60 pins to the head pod.
With it on, the head gets the ingestion consumer's Kafka settings (in the serve config), the SASL
credentials by secretKeyRef, the Kafka CA, and egress to the brokers; with it off, none of them. The
ci/external-kafka-sasl scenario turns it on (SASL_SSL, a topic prefix, egress peers); the others leave it off.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from deployments.model_registry import SurgeAppSettings
from tests.fixtures_helm import SCENARIOS, HelmRenderError, Rendered, Renderer
from tests.integration.test_chart_notes import render_notes

pytestmark = pytest.mark.integration

ON = "external-kafka-sasl"
OFF = ("autoscaling.embedder.backlogWarmer.enabled=false",)


def _head(rendered: Rendered) -> dict[str, Any]:
    head: dict[str, Any] = rendered.one("RayService")["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]
    return head


def _embedder_policy(rendered: Rendered) -> dict[str, Any] | None:
    config = yaml.safe_load(rendered.one("RayService")["spec"]["serveConfigV2"])
    policy: dict[str, Any] | None = config["applications"][0]["args"]["embedder"]["autoscaling"].get("policy")
    return policy


def _head_kafka_policies(rendered: Rendered) -> list[dict[str, Any]]:
    """NetworkPolicies that select the RayService's head pod and let it out to the Kafka ports."""
    labels = _head(rendered)["metadata"]["labels"]
    return [
        p
        for p in rendered.of_kind("NetworkPolicy")
        if p["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
        and p["spec"]["podSelector"]["matchLabels"].get("surge.io/ray-node") == "head"
    ]


def test_the_head_gets_the_backlog_warmers_kafka_settings_and_egress_to_the_brokers_when_it_is_enabled(
    scenarios: dict[str, Rendered],
) -> None:
    rendered = scenarios[ON]
    policy = _embedder_policy(rendered)
    assert policy is not None and "backlog" in policy
    # The app loads it (BacklogWarmerSettings inside the Embedder's AutoscalingSettings) ...
    args = yaml.safe_load(rendered.one("RayService")["spec"]["serveConfigV2"])["applications"][0]["args"]
    loaded = SurgeAppSettings.model_validate(args).embedder.autoscaling.policy
    assert loaded is not None and loaded.backlog is not None
    backlog = loaded.backlog
    # ... and it reads exactly the group, topic and brokers KEDA scales the ingestion consumer on.
    ingest = json.loads(rendered.one("ConfigMap", "-pipelines")["data"]["ingest.json"])
    trigger = rendered.one("ScaledObject", "-ingest")["spec"]["triggers"][0]["metadata"]
    assert policy["backlog"]["kafka"] == ingest["kafka"]
    assert backlog.group_id == ingest["group_id"] == trigger["consumerGroup"]
    assert backlog.topic == trigger["topic"] == "prod.documents"
    assert (backlog.min_lag, backlog.replicas, backlog.poll_s) == (10, 2, 10.0)
    # The head reads SASL credentials from its environment, where KafkaSettings looks for them.
    env = {e["name"]: e for e in _head(rendered)["spec"]["containers"][0]["env"]}
    for name in (backlog.kafka.sasl_username_env, backlog.kafka.sasl_password_env):
        assert name in env, f"the head has no {name}"
    # Egress from the head to the brokers: the same ports and peers as the ingestion consumers.
    (head_policy,) = _head_kafka_policies(rendered)
    consumers = rendered.one("NetworkPolicy", "-consumers")["spec"]["egress"]
    kafka_rule = next(r for r in consumers if {"protocol": "TCP", "port": 9096} in r.get("ports", []))
    assert head_policy["spec"]["egress"] == [kafka_rule]
    assert kafka_rule["to"] == [{"ipBlock": {"cidr": "10.20.0.0/16"}}]


def test_neither_the_settings_nor_the_egress_reach_the_head_when_the_warmer_is_off(
    scenarios: dict[str, Rendered], render_chart: Renderer
) -> None:
    for rendered in (scenarios["default"], render_chart(SCENARIOS[ON], sets=OFF)):
        policy = _embedder_policy(rendered)
        assert policy is None or "backlog" not in policy
        head = _head(rendered)["spec"]
        names = {e["name"] for e in head["containers"][0]["env"]}
        assert not {n for n in names if n.startswith("KAFKA_")}, names
        assert "kafka-ca" not in {v["name"] for v in head["volumes"]}
        assert _head_kafka_policies(rendered) == []


def test_a_sasl_password_reaches_the_head_only_through_a_secret_key_ref(
    scenarios: dict[str, Rendered],
) -> None:
    rendered = scenarios[ON]
    env = {e["name"]: e for e in _head(rendered)["spec"]["containers"][0]["env"]}
    for name, key in (("KAFKA_SASL_USERNAME", "username"), ("KAFKA_SASL_PASSWORD", "password")):
        assert "value" not in env[name]
        assert env[name]["valueFrom"] == {"secretKeyRef": {"name": "surge-kafka-credentials", "key": key}}
    # The serve config names the variables' defaults and the mechanism, never a credential.
    backlog = (_embedder_policy(rendered) or {})["backlog"]
    assert set(backlog["kafka"]) == {"bootstrap_servers", "security_protocol", "sasl_mechanism", "client_id"}


def test_the_head_mounts_the_kafka_ca_when_the_warmer_reads_a_tls_cluster(render_chart: Renderer) -> None:
    rendered = render_chart(
        SCENARIOS["kafka-tls-ca"], sets=("autoscaling.embedder.backlogWarmer.enabled=true",)
    )
    backlog = (_embedder_policy(rendered) or {})["backlog"]
    assert backlog["kafka"]["ssl_cafile"] == "/etc/surge/kafka-ca/ca.crt"
    head = _head(rendered)["spec"]
    volume = next(v for v in head["volumes"] if v["name"] == "kafka-ca")
    assert volume["secret"]["secretName"] == "surge-cluster-ca-cert"
    mounts = {m["name"]: m["mountPath"] for m in head["containers"][0]["volumeMounts"]}
    assert mounts["kafka-ca"] == "/etc/surge/kafka-ca"


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (("consumers.ingest.enabled=false",), "but consumers.ingest.enabled is false"),
        (
            ("autoscaling.embedder.backlogWarmer.replicas=5",),
            "autoscaling.embedder.backlogWarmer.replicas (5) must be <= autoscaling.embedder.maxReplicas (4)",
        ),
        (("autoscaling.embedder.backlogWarmer.minLag=0",), "minLag"),
    ],
)
def test_a_warmer_that_cannot_work_fails_the_render_naming_the_values(
    render_chart: Renderer, sets: tuple[str, ...], message: str
) -> None:
    with pytest.raises(HelmRenderError) as error:
        render_chart(SCENARIOS[ON], sets=sets)
    assert message in error.value.stderr


def test_notes_say_which_group_and_topic_wake_the_embedder(helm_bin: Path, tmp_path: Path) -> None:
    notes = render_notes(helm_bin, tmp_path, SCENARIOS[ON])
    assert "group surge-ingestion lags 10+ records on\nprod.documents" in notes
    assert "Backlog warmer" not in render_notes(helm_bin, tmp_path / "off", SCENARIOS["default"])
