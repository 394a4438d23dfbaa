"""The RayService runs the same serve config as `serve run`, with exactly the documented cluster overrides.

The overrides are re-implemented here from the chart's documentation (templates/_serveconfig.tpl, README),
independently of the template, and the args must still validate as the app's SurgeAppSettings.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from deployments.model_registry import SurgeAppSettings
from pipelines.drift import DriftMonitorSettings
from pipelines.feature_job import FeatureJobSettings
from pipelines.ingestion import IngestionSettings
from tests.fixtures_helm import CHART_DIR, REPO_ROOT, SCENARIOS, Rendered

pytestmark = pytest.mark.integration

AUTOSCALING_KEYS = {
    "minReplicas": "min_replicas",
    "maxReplicas": "max_replicas",
    "targetOngoingRequests": "target_ongoing_requests",
    "keepWarm": "keep_warm",
    "upscaleDelaySeconds": "upscale_delay_s",
    "downscaleDelaySeconds": "downscale_delay_s",
    "downscaleToZeroDelaySeconds": "downscale_to_zero_delay_s",
}


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        out[key] = (
            _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        )
    return out


def scenario_values(scenario: str) -> dict[str, Any]:
    defaults = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    return _merge(defaults, yaml.safe_load(SCENARIOS[scenario].read_text()) or {})


def expected_serve_config(values: dict[str, Any]) -> dict[str, Any]:
    """deployments/serve_config.yaml with the documented overrides, and nothing else."""
    config = yaml.safe_load((REPO_ROOT / "deployments" / "serve_config.yaml").read_text())
    config["http_options"]["host"] = "0.0.0.0"
    config["http_options"]["port"] = values["rayCluster"]["servePort"]
    args = config["applications"][0]["args"]
    base = {k: v for k, v in args["models"][0].items() if k not in ("name", "version", "model")}
    args["models"] = [_expected_model(base, item) for item in values["models"]]
    args["aliases"] = {
        name: {
            "weights": alias["weights"],
            **({"shadow": alias["shadow"]} if alias.get("shadow") else {}),
            **({"shadow_fraction": alias["shadowFraction"]} if "shadowFraction" in alias else {}),
        }
        for name, alias in values["aliases"].items()
    }
    if values["systemPrompts"]:
        args["system_prompts"] = values["systemPrompts"]
    for stage, overrides in values["autoscaling"].items():
        autoscaling = args[stage].setdefault("autoscaling", {})
        for key, value in overrides.items():
            if key != "backlogWarmer":
                autoscaling[AUTOSCALING_KEYS[key]] = value
    warmer = values["autoscaling"]["embedder"].get("backlogWarmer", {})
    if warmer.get("enabled"):
        ingest = values["consumers"]["ingest"]
        args["embedder"]["autoscaling"].setdefault("policy", {})["backlog"] = {
            "kafka": _kafka_settings(values["kafka"]),
            "topic": values["kafka"]["topicPrefix"] + "documents",
            "group_id": ingest["settings"].get("group_id", ingest["consumerGroup"]),
            "min_lag": warmer["minLag"],
            "replicas": warmer["replicas"],
            "poll_s": warmer["pollSeconds"],
        }
    store = values["vectorStore"]
    if store["backend"] == "pgvector":
        args["retriever"]["store"] = {
            "backend": "pgvector",
            "dsn_env": "SURGE_PG_DSN",
            "table": store["pgvector"]["table"],
            "pool_size": store["pgvector"]["poolSize"],
        }
    else:
        args["retriever"]["store"] = {"backend": "embedded", "path": store["embedded"]["path"]}
    args["gateway"]["max_tokens_limit"] = values["gateway"]["maxTokensLimit"]
    for value, arg in (("embedQueries", "embed_queries"), ("retrieveQueries", "retrieve_queries")):
        if values["gateway"].get(value):
            args["gateway"][arg] = values["gateway"][value]
    if values["gateway"]["inferenceLog"]:
        args["gateway"]["inference_log"] = {
            "enabled": True,
            "kafka": _kafka_settings(values["kafka"]),
            "topic_prefix": values["kafka"]["topicPrefix"],
        }
    else:
        args["gateway"]["inference_log"] = {"enabled": False}
    return config


def _kafka_settings(kafka: dict[str, Any]) -> dict[str, Any]:
    """KafkaSettings as the chart documents them from `kafka.*` (release "surge": client_id "surge")."""
    settings = {
        "bootstrap_servers": kafka["bootstrapServers"],
        "security_protocol": kafka["securityProtocol"],
        "client_id": "surge",
    }
    if kafka["securityProtocol"].startswith("SASL"):
        settings["sasl_mechanism"] = kafka["saslMechanism"]
    if kafka["securityProtocol"].endswith("SSL") and kafka["caSecret"]["name"]:
        settings["ssl_cafile"] = "/etc/surge/kafka-ca/ca.crt"  # the CA Secret, mounted
    return settings


MODEL_DEFAULTS = {"engine": "vllm", "gpus": 1, "accelerator": "", "maxModelLen": 2048, "dtype": "auto",
                  "gpuMemoryUtilization": 0.9, "numCpus": 1}  # fmt: skip


def _expected_model(base: dict[str, Any], item: dict[str, Any]) -> dict[str, Any]:
    """One `models` item as the documented override renders it onto the serve config's first entry."""
    item = {**MODEL_DEFAULTS, **item}
    entry = copy.deepcopy(base)
    entry.update(
        name=item["name"], version=str(item["version"]), model=item["model"], engine=item["engine"],
        max_model_len=item["maxModelLen"], dtype=item["dtype"],
    )  # fmt: skip
    gpus = item["gpus"]
    if gpus > 0:
        group = f"gpu-{item['accelerator']}-{gpus}" if item["accelerator"] else f"gpu-{gpus}"
        entry.update(
            device="cuda", num_gpus=gpus, tensor_parallel_size=gpus,
            gpu_memory_utilization=item["gpuMemoryUtilization"], num_cpus=0,
            ray_resources={"surge_group_" + group.replace("-", "_"): 1},
        )  # fmt: skip
    else:
        entry.update(device="cpu", num_gpus=0, num_cpus=item["numCpus"])
    autoscaling = entry.setdefault("autoscaling", {})
    for key, value in item.get("autoscaling", {}).items():
        autoscaling[AUTOSCALING_KEYS[key]] = value
    entry.update(copy.deepcopy(item.get("extra", {})))
    return entry


def test_chart_copy_of_serve_config_is_identical_to_deployments_one() -> None:
    assert (CHART_DIR / "files" / "serve_config.yaml").read_bytes() == (
        REPO_ROOT / "deployments" / "serve_config.yaml"
    ).read_bytes(), "copy deployments/serve_config.yaml to helm/surge/files/serve_config.yaml"


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_serve_config_v2_should_equal_local_config_with_documented_overrides(
    scenarios: dict[str, Rendered], scenario: str
) -> None:
    embedded = yaml.safe_load(scenarios[scenario].one("RayService")["spec"]["serveConfigV2"])
    assert embedded == expected_serve_config(scenario_values(scenario))


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_serve_config_v2_args_should_validate_as_app_settings(
    scenarios: dict[str, Rendered], scenario: str
) -> None:
    embedded = yaml.safe_load(scenarios[scenario].one("RayService")["spec"]["serveConfigV2"])
    settings = SurgeAppSettings.model_validate(embedded["applications"][0]["args"])
    items = scenario_values(scenario)["models"]
    assert settings.version_keys() == [f"{m['name']}@{m['version']}" for m in items]
    for version, item in zip(settings.model_versions(), items, strict=True):
        gpus = item.get("gpus", 1)
        assert version.engine == item.get("engine", "vllm")
        assert version.device == ("cuda" if gpus else "cpu")
        assert version.num_gpus == gpus
    assert settings.gateway.api_keys_env == "SURGE_API_KEYS"
    gateway = scenario_values(scenario)["gateway"]
    assert (settings.gateway.embed_queries, settings.gateway.retrieve_queries) == (
        gateway["embedQueries"],
        gateway["retrieveQueries"],
    )


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_feature_job_settings_should_validate_as_feature_job_settings(
    scenarios: dict[str, Rendered], scenario: str
) -> None:
    config_map = scenarios[scenario].one("ConfigMap", "-feature-job")
    settings = FeatureJobSettings.model_validate(json.loads(config_map["data"]["feature-job.json"]))
    values = scenario_values(scenario)
    assert settings.kafka.bootstrap_servers == values["kafka"]["bootstrapServers"]
    assert settings.online.backend == values["featureJob"]["onlineStore"]["backend"]
    job = scenarios[scenario].feature_rayjob()
    assert job is not None
    entrypoint = job["spec"]["entrypoint"]
    assert entrypoint == "python -m pipelines.feature_job run --settings /etc/surge/feature-job.json"
    # The lag threshold is the trigger's: below it no RayJob (and no Ray cluster) is created at all.
    trigger = scenarios[scenario].one("CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert f"--min-lag={values['featureJob']['minLag']}" in trigger["containers"][0]["args"]


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_consumer_settings_should_validate_and_agree_with_keda(
    scenarios: dict[str, Rendered], scenario: str
) -> None:
    rendered = scenarios[scenario]
    data = rendered.one("ConfigMap", "-pipelines")["data"]
    ingest = IngestionSettings.model_validate(json.loads(data["ingest.json"]))
    drift = DriftMonitorSettings.model_validate(json.loads(data["drift-monitor.json"]))
    values = scenario_values(scenario)
    for settings, component, topic in (
        (ingest, "ingest", "documents"),
        (drift, "drift-monitor", "inference-log"),
    ):
        assert settings.metrics_host == "0.0.0.0", "Prometheus and the probes must reach /metrics"
        assert settings.kafka.bootstrap_servers == values["kafka"]["bootstrapServers"]
        assert settings.kafka.security_protocol == values["kafka"]["securityProtocol"]
        trigger = rendered.one("ScaledObject", f"-{component}")["spec"]["triggers"][0]["metadata"]
        assert trigger["consumerGroup"] == settings.group_id
        assert trigger["topic"] == settings.topic_prefix + topic
        assert trigger["bootstrapServers"] == settings.kafka.bootstrap_servers
        deployment = rendered.one("Deployment", f"-{component}")
        port = deployment["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"]
        assert port == settings.metrics_port
    assert ingest.sink.kind == "http"
    assert ingest.sink.url == f"http://surge-serve:{values['rayCluster']['servePort']}"


def test_k8s_manifests_should_equal_the_chart_rendered_with_defaults(render_k8s: Any) -> None:
    stale = render_k8s.differences(Path(REPO_ROOT / "k8s"))
    assert not stale, f"k8s/ is stale ({stale}): run .venv/bin/python scripts/render_k8s.py"
