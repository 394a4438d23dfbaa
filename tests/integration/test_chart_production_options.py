"""Issue 12, production options: each is off by default, turned on by a ci/ scenario, and does its job there."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.fixtures_helm import SCENARIOS, HelmRenderError, Rendered, Renderer

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
    gpu = groups["gpu"]["template"]["metadata"]["annotations"]
    assert gpu["cluster-autoscaler.kubernetes.io/safe-to-evict"] == "false"
    assert gpu["karpenter.sh/do-not-disrupt"] == "true"


def test_several_llm_worker_groups_each_fit_the_llm_replica(scenarios: dict[str, Rendered]) -> None:
    rendered = scenarios["multi-gpu-groups"]
    groups = _groups(rendered)
    assert set(groups) == {"cpu", "gpu", "gpu-a100"}
    config = yaml.safe_load(rendered.one("RayService")["spec"]["serveConfigV2"])
    llm_gpus = config["applications"][0]["args"]["llm"]["num_gpus"]
    for name in ("gpu", "gpu-a100"):
        group = groups[name]
        pod = group["template"]["spec"]
        assert int(group["rayStartParams"]["num-gpus"]) >= llm_gpus
        assert group["rayStartParams"]["num-cpus"] == "0"
        assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] >= llm_gpus
    a100 = groups["gpu-a100"]["template"]["spec"]
    assert a100["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-tesla-a100"}
    assert a100["runtimeClassName"] == "nvidia" and groups["gpu-a100"]["maxReplicas"] == 1
    assert {"key": "dedicated", "operator": "Equal", "value": "llm-a100", "effect": "NoSchedule"} in a100[
        "tolerations"
    ]
    # Unset keys come from gpuWorkers (the shared defaults).
    assert a100["containers"][0]["image"] == groups["gpu"]["template"]["spec"]["containers"][0]["image"]


def test_an_extra_gpu_group_too_small_for_the_llm_fails_the_render(render_chart: Renderer) -> None:
    with pytest.raises(HelmRenderError) as failure:
        render_chart(
            SCENARIOS["multi-gpu-groups"], sets=("model.gpus=2", "rayCluster.gpuWorkers.gpusPerPod=2",
                                                 "rayCluster.extraGpuWorkerGroups[0].gpusPerPod=1",
                                                 "rayCluster.extraGpuWorkerGroups[0].name=gpu-a100"))  # fmt: skip
    assert "GPU worker group gpu-a100" in failure.value.stderr


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
