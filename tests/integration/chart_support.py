"""Helpers shared by the chart tests: walk the pod specs of every workload kind the chart renders."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from tests.fixtures_helm import Rendered


def ray_cluster_pod_specs(cluster_spec: dict[str, Any], owner: str) -> Iterator[tuple[str, dict[str, Any]]]:
    yield f"{owner}/head", cluster_spec["headGroupSpec"]["template"]["spec"]
    for group in cluster_spec.get("workerGroupSpecs", []):
        yield f"{owner}/{group['groupName']}", group["template"]["spec"]


def pod_specs(rendered: Rendered) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, pod spec) for every pod the release can create, the feature job's RayJob included."""
    for d in rendered.of_kind("Deployment"):
        yield f"Deployment/{d['metadata']['name']}", d["spec"]["template"]["spec"]
    for d in rendered.of_kind("CronJob"):
        yield f"CronJob/{d['metadata']['name']}", d["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    for d in rendered.of_kind("RayService"):
        yield from ray_cluster_pod_specs(d["spec"]["rayClusterConfig"], f"RayService/{d['metadata']['name']}")
    job = rendered.feature_rayjob()
    if job is not None:
        yield from ray_cluster_pod_specs(job["spec"]["rayClusterSpec"], "RayJob/feature-job")


def autoscaler_options(rendered: Rendered) -> Iterator[tuple[str, dict[str, Any]]]:
    """The KubeRay autoscaler sidecar settings (a container KubeRay adds to each head pod)."""
    for d in rendered.of_kind("RayService"):
        yield f"RayService/{d['metadata']['name']}", d["spec"]["rayClusterConfig"]["autoscalerOptions"]
    job = rendered.feature_rayjob()
    if job is not None:
        yield "RayJob/feature-job", job["spec"]["rayClusterSpec"]["autoscalerOptions"]


def containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod.get("initContainers", []), *pod["containers"]]
