"""What the rendered chart must do, scenario by scenario ("should ... when ...")."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.fixtures_helm import SCENARIOS, Rendered
from tests.integration.chart_support import autoscaler_options, containers, pod_specs

pytestmark = pytest.mark.integration

ALLOWED_VOLUME_TYPES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret",
}  # fmt: skip
SECRET_LOOKING = re.compile(r"KEY|TOKEN|SECRET|PASSW|DSN|CREDENTIAL|USERNAME", re.IGNORECASE)


def _gpu_group(rendered: Rendered, name: str | None = None) -> dict[str, Any] | None:
    """The GPU worker group `name`, or any GPU group when None (the chart names them gpu-<gpus>)."""
    groups = rendered.one("RayService")["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    return next((g for g in groups if g["groupName"] != "cpu" and name in (None, g["groupName"])), None)


@pytest.mark.parametrize("scenario", ["default", "gpu"])
def test_gpu_group_should_have_gpu_limit_selector_and_tolerations_when_gpu_values(
    scenarios: dict[str, Rendered], scenario: str
) -> None:
    expected_gpus = 2 if scenario == "gpu" else 1
    group = _gpu_group(scenarios[scenario], f"gpu-{expected_gpus}")
    assert group is not None
    pod = group["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == expected_gpus
    assert group["rayStartParams"]["num-gpus"] == str(expected_gpus)
    # No logical CPUs on GPU workers: CPU-only replicas can never pin a GPU node.
    assert group["rayStartParams"]["num-cpus"] == "0"
    assert pod["nodeSelector"], "GPU workers must target the GPU node pool"
    assert any(t["key"] == "nvidia.com/gpu" and t["effect"] == "NoSchedule" for t in pod["tolerations"])
    assert group["minReplicas"] == 0 and group["replicas"] == 0
    assert pod["containers"][0]["image"].endswith("-gpu") or "@sha256:" in pod["containers"][0]["image"]


def test_gpu_group_should_be_absent_and_llm_on_cpu_when_cpu_only_values(
    scenarios: dict[str, Rendered],
) -> None:
    rendered = scenarios["cpu-only"]
    assert _gpu_group(rendered) is None
    assert "nvidia.com/gpu" not in rendered.text


def test_cpu_pods_should_not_tolerate_the_gpu_taint_when_gpu_values(scenarios: dict[str, Rendered]) -> None:
    for where, pod in pod_specs(scenarios["gpu"]):
        if "/gpu" in where:
            continue
        assert not any(t.get("key") == "nvidia.com/gpu" for t in pod.get("tolerations", [])), where
        for c in containers(pod):
            assert "nvidia.com/gpu" not in c.get("resources", {}).get("limits", {}), where


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_worker_group_and_consumer_should_reach_zero_when_idle(
    scenarios: dict[str, Rendered], scenario: str
) -> None:
    rendered = scenarios[scenario]
    service = rendered.one("RayService")["spec"]
    assert service["rayClusterConfig"]["enableInTreeAutoscaling"] is True
    assert service["rayClusterConfig"]["autoscalerOptions"]["idleTimeoutSeconds"] > 0
    for group in service["rayClusterConfig"]["workerGroupSpecs"]:
        assert group["minReplicas"] == 0, group["groupName"]
    job = rendered.feature_rayjob()
    assert job is not None
    assert all(g["minReplicas"] == 0 for g in job["spec"]["rayClusterSpec"]["workerGroupSpecs"])
    # The job's Ray cluster goes when the job ends: shutdownAfterJobFinishes, or KubeRay's DeleteCluster rule.
    rules = job["spec"].get("deletionStrategy", {}).get("deletionRules", [])
    assert job["spec"].get("shutdownAfterJobFinishes") is True or {
        r["condition"]["jobStatus"] for r in rules if r["policy"] == "DeleteCluster"
    } == {"SUCCEEDED", "FAILED"}
    scaled = rendered.of_kind("ScaledObject")
    deployments = rendered.of_kind("Deployment")
    assert {s["spec"]["scaleTargetRef"]["name"] for s in scaled} == {
        d["metadata"]["name"] for d in deployments
    }
    for s in scaled:
        assert s["spec"]["minReplicaCount"] == 0
        trigger = s["spec"]["triggers"][0]
        assert trigger["type"] == "kafka"
        assert {"bootstrapServers", "consumerGroup", "topic", "lagThreshold"} <= set(trigger["metadata"])
    for d in deployments:
        assert "replicas" not in d["spec"], "KEDA owns the replica count"


def test_llm_should_scale_to_zero_unless_kept_warm(scenarios: dict[str, Rendered]) -> None:
    import yaml

    def llm_autoscaling(rendered: Rendered) -> dict[str, Any]:
        config = yaml.safe_load(rendered.one("RayService")["spec"]["serveConfigV2"])
        autoscaling: dict[str, Any] = config["applications"][0]["args"]["models"][0]["autoscaling"]
        return autoscaling

    assert llm_autoscaling(scenarios["default"])["min_replicas"] == 0
    assert llm_autoscaling(scenarios["default"])["keep_warm"] is False
    assert llm_autoscaling(scenarios["gpu"])["keep_warm"] is True


def _pss_restricted_violations(where: str, pod: dict[str, Any]) -> list[str]:
    """Pod Security Standards "restricted" (v1.31 profile), plus this project's read-only root filesystem."""
    problems = []
    psc = pod.get("securityContext", {})
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key):
            problems.append(f"{where}: {key}")
    for volume in pod.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= ALLOWED_VOLUME_TYPES:
            problems.append(f"{where}: volume {volume['name']} of type {kinds}")
    for c in containers(pod):
        sc = c.get("securityContext", {})
        name = f"{where}/{c['name']}"
        if sc.get("privileged"):
            problems.append(f"{name}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation must be false")
        if "ALL" not in sc.get("capabilities", {}).get("drop", []):
            problems.append(f"{name}: capabilities.drop must include ALL")
        if set(sc.get("capabilities", {}).get("add", [])) - {"NET_BIND_SERVICE"}:
            problems.append(f"{name}: adds capabilities")
        if not (sc.get("runAsNonRoot") or psc.get("runAsNonRoot")):
            problems.append(f"{name}: runAsNonRoot")
        if sc.get("runAsUser", psc.get("runAsUser")) == 0:
            problems.append(f"{name}: runs as uid 0")
        seccomp = sc.get("seccompProfile", psc.get("seccompProfile", {})).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{name}: seccompProfile {seccomp}")
        if sc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{name}: readOnlyRootFilesystem")
        if any(p.get("hostPort") for p in c.get("ports", [])):
            problems.append(f"{name}: hostPort")
    return problems


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_pod_should_pass_pss_restricted_when_rendered(
    scenarios: dict[str, Rendered], scenario: str
) -> None:
    rendered = scenarios[scenario]
    pods = list(pod_specs(rendered))
    assert len(pods) >= 6
    problems = [p for where, pod in pods for p in _pss_restricted_violations(where, pod)]
    # KubeRay adds the autoscaler sidecar from autoscalerOptions: it must be just as locked down.
    for where, options in autoscaler_options(rendered):
        sidecar = {"name": "autoscaler", "securityContext": options.get("securityContext", {})}
        head = next(pod for w, pod in pods if w == f"{where}/head")
        problems += _pss_restricted_violations(where, {**head, "containers": [sidecar]})
    assert not problems, "\n".join(problems)


def test_ray_pods_should_mount_writable_tmp_and_ray_dirs_when_root_is_read_only(
    scenarios: dict[str, Rendered],
) -> None:
    for where, pod in pod_specs(scenarios["default"]):
        if not where.startswith("Ray"):
            continue
        mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        for path in ("/tmp", "/tmp/ray", "/dev/shm"):
            assert "emptyDir" in volumes[mounts[path]], f"{where}: {path}"
        # KubeRay's autoscaler sidecar mounts the volume named ray-logs at /tmp/ray.
        assert mounts["/tmp/ray"] == "ray-logs"


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_secrets_should_only_come_from_secret_refs_when_rendered(
    scenarios: dict[str, Rendered], scenario: str
) -> None:
    rendered = scenarios[scenario]
    assert rendered.of_kind("Secret") == [], "the chart must never create Secrets (no credentials in values)"
    problems = []
    refs = set()
    for where, pod in pod_specs(rendered):
        for c in containers(pod):
            for env in c.get("env", []):
                if not SECRET_LOOKING.search(env["name"]):
                    continue
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if "value" in env or ref is None:
                    problems.append(f"{where}/{c['name']}: env {env['name']} is not a secretKeyRef")
                else:
                    refs.add((env["name"], ref["name"]))
    assert not problems, "\n".join(problems)
    assert ("SURGE_API_KEYS", "surge-api-keys") in refs
    if scenario == "pgvector":
        assert ("SURGE_PG_DSN", "surge-postgres") in refs
        assert ("SURGE_FEATURES_PG_DSN", "surge-postgres") in refs
    if scenario == "external-kafka-sasl":
        assert {
            ("KAFKA_SASL_USERNAME", "surge-kafka-credentials"),
            ("KAFKA_SASL_PASSWORD", "surge-kafka-credentials"),
        } <= refs
    # Nothing credential-like in ConfigMaps either (settings name env vars, never hold values).
    for cm in rendered.of_kind("ConfigMap"):
        for key, value in cm.get("data", {}).items():
            assert not re.search(r"(password|passwd)\s*[:=]|://[^/\s]+:[^@\s]+@", value, re.IGNORECASE), key


def test_only_the_head_and_the_trigger_should_mount_api_tokens(scenarios: dict[str, Rendered]) -> None:
    for where, pod in pod_specs(scenarios["default"]):
        needs_token = where.endswith("/head") or where.startswith("CronJob/")
        if not needs_token:
            assert pod.get("automountServiceAccountToken") is False, where
    role = scenarios["default"].one("Role", "feature-job-trigger")
    # list: is a feature job still running; delete: finished RayJobs past their TTL; nothing else.
    assert role["rules"] == [
        {"apiGroups": ["ray.io"], "resources": ["rayjobs"], "verbs": ["list", "create", "delete"]}
    ]


def test_network_policies_should_deny_by_default_and_allow_the_minimum(
    scenarios: dict[str, Rendered],
) -> None:
    rendered = scenarios["default"]
    deny = rendered.one("NetworkPolicy", "default-deny")["spec"]
    assert deny["policyTypes"] == ["Ingress", "Egress"] and "ingress" not in deny and "egress" not in deny
    ray = rendered.one("NetworkPolicy", "-ray")["spec"]
    ingress_ports = {p["port"] for rule in ray["ingress"] for p in rule.get("ports", [])}
    assert {8000, 8080, 8265} <= ingress_ports
    egress_ports = {p["port"] for rule in ray["egress"] for p in rule.get("ports", [])}
    assert {53, 9092} <= egress_ports
    consumers = rendered.one("NetworkPolicy", "-consumers")["spec"]
    assert {53, 9092, 8000} <= {p["port"] for rule in consumers["egress"] for p in rule.get("ports", [])}
    assert rendered.of_kind("NetworkPolicy")
    assert scenarios["external-kafka-sasl"].one("NetworkPolicy", "-consumers")["spec"]["egress"][1]["to"] == [
        {"ipBlock": {"cidr": "10.20.0.0/16"}}
    ]


def test_monitoring_should_be_rendered_only_when_enabled(scenarios: dict[str, Rendered]) -> None:
    default = scenarios["default"]
    assert len(default.of_kind("ServiceMonitor")) == 2
    dashboard = default.one("ConfigMap", "-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    off = scenarios["no-monitoring"]
    assert off.of_kind("ServiceMonitor") == []
    assert not [c for c in off.of_kind("ConfigMap") if c["metadata"]["name"].endswith("-dashboard")]


def test_dashboard_should_chart_every_required_signal(scenarios: dict[str, Rendered]) -> None:
    import json

    dashboard = json.loads(scenarios["default"].one("ConfigMap", "-dashboard")["data"]["surge.json"])
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    for metric in (
        "ray_surge_gateway_request_seconds_bucket",  # latency (Ray prefixes Serve custom metrics with ray_)
        'status=~"401|413|429|503"',  # rejections
        "ray_serve_deployment_replica_healthy",  # replicas per stage
        "ray_surge_cold_start_seconds",
        "ray_surge_gateway_completion_tokens_total",
        "surge_consumer_lag",  # prometheus-client in the consumers: no prefix
        "surge_consumer_records_dead_lettered_total",
        "surge_drift_score",
    ):
        assert metric in exprs, metric
