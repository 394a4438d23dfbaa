"""Kubernetes client code: the feature-job RayJob validates against KubeRay's CRD; RayService status summary."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import ValidationError

from pipelines.cluster import (
    FeatureRayJobSpec,
    LagTriggerPolicy,
    active_rayjobs,
    decide_trigger,
    feature_rayjob_body,
    summarise_rayservice,
)

IMAGE = "ghcr.io/example/surge:0.1.0"


def test_feature_rayjob_validates_against_the_rayjob_crd(crd_validators: Any) -> None:
    body = feature_rayjob_body(FeatureRayJobSpec(image=IMAGE, settings_configmap="surge-feature-job"))
    assert crd_validators.errors(body) == []
    assert body["spec"]["entrypoint"] == (
        "python -m pipelines.feature_job run --settings /etc/surge/feature-job.json"
    )


def test_feature_rayjob_with_postgres_claim_and_min_lag_validates(crd_validators: Any) -> None:
    spec = FeatureRayJobSpec(
        image=IMAGE,
        namespace="features",
        storage_claim="surge-features",
        pg_dsn_secret="surge-pg",
        service_account="surge-ray",
        min_workers=1,
        max_workers=8,
    )
    body = feature_rayjob_body(spec, extra_args="--min-lag 10000")
    assert crd_validators.errors(body) == []
    head = body["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    env = {e["name"]: e for e in head["containers"][0]["env"]}
    assert env["SURGE_FEATURES_PG_DSN"]["valueFrom"]["secretKeyRef"] == {"name": "surge-pg", "key": "dsn"}
    assert body["spec"]["entrypoint"].endswith("--min-lag 10000")


def test_the_crd_check_catches_a_broken_body(crd_validators: Any) -> None:
    body = feature_rayjob_body(FeatureRayJobSpec(image=IMAGE))
    broken = copy.deepcopy(body)
    broken["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["maxReplicas"] = "many"
    del broken["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]
    assert len(crd_validators.errors(broken)) >= 2


def test_spec_rejects_inverted_worker_bounds_naming_the_field() -> None:
    with pytest.raises(ValidationError, match="max_workers"):
        FeatureRayJobSpec(image=IMAGE, min_workers=5, max_workers=2)


@pytest.mark.parametrize(
    ("lag", "active", "create"),
    [(12_500, [], True), (12_500, ["surge-feature-job-x1"], False), (800, [], False)],
)
def test_trigger_creates_a_job_only_above_min_lag_and_when_none_is_running(
    lag: int, active: list[str], create: bool
) -> None:
    decision = decide_trigger(lag, active, LagTriggerPolicy(min_lag=10_000))
    assert decision.create is create


def test_finished_rayjobs_do_not_count_as_running() -> None:
    listed = {
        "items": [
            {"metadata": {"name": "a"}, "status": {"jobDeploymentStatus": "Complete"}},
            {"metadata": {"name": "b"}, "status": {"jobDeploymentStatus": "Running"}},
            {"metadata": {"name": "c"}, "status": {"jobDeploymentStatus": "Failed"}},
            {"metadata": {"name": "d"}},  # just created: no status yet
        ]
    }
    assert active_rayjobs(listed) == ["b", "d"]


def rayservice(status: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": "surge", "namespace": "default"},
        "spec": {
            "serveConfigV2": "applications: []\n",
            "rayClusterConfig": {
                "rayVersion": "2.60.0",
                "headGroupSpec": {
                    "rayStartParams": {},
                    "template": {"spec": {"containers": [{"name": "ray-head", "image": IMAGE}]}},
                },
            },
        },
        "status": status,
    }


def cluster_status(name: str, ready: int, desired: int) -> dict[str, Any]:
    return {
        "rayClusterName": name,
        "rayClusterStatus": {
            "state": "ready",
            "desiredWorkerReplicas": desired,
            "availableWorkerReplicas": ready,
            "readyWorkerReplicas": ready,
            "minWorkerReplicas": 0,
            "maxWorkerReplicas": 4,
        },
    }


STEADY = {
    "serviceStatus": "Running",
    "numServeEndpoints": 1,
    "conditions": [
        {
            "type": "Ready",
            "status": "True",
            "reason": "NonZeroServeEndpoints",
            "message": "",
            "lastTransitionTime": "2026-11-29T01:00:00Z",
        },
        {
            "type": "UpgradeInProgress",
            "status": "False",
            "reason": "NoPendingCluster",
            "message": "",
            "lastTransitionTime": "2026-11-29T01:00:00Z",
        },
    ],
    "activeServiceStatus": {
        **cluster_status("surge-raycluster-abcde", 2, 2),
        "applicationStatuses": {
            "surge": {
                "status": "RUNNING",
                "serveDeploymentStatuses": {
                    "Gateway": {"status": "HEALTHY"},
                    "Embedder": {"status": "HEALTHY"},
                    "LLMServer": {"status": "UPSCALING"},
                },
            }
        },
    },
}


def test_steady_rayservice_status_is_summarised(crd_validators: Any) -> None:
    obj = rayservice(STEADY)
    assert crd_validators.errors(obj) == []  # the status document is shaped by the CRD
    summary = summarise_rayservice(obj)
    assert summary.ready and not summary.upgrade_in_progress
    assert summary.deployments == {
        "surge": {"Embedder": "HEALTHY", "Gateway": "HEALTHY", "LLMServer": "UPSCALING"}
    }
    assert summary.unhealthy == []
    assert summary.active_cluster is not None and summary.active_cluster.ready == 2
    assert summary.pending_cluster is None
    assert summary.line() == "surge: ready, 1 app(s), 3 deployment(s), 0 unhealthy, workers 2/2 ready"


def test_upgrading_rayservice_reports_the_pending_cluster_and_unhealthy_deployments(
    crd_validators: Any,
) -> None:
    status = copy.deepcopy(STEADY)
    status["conditions"][1] = {
        "type": "UpgradeInProgress",
        "status": "True",
        "reason": "BothActivePendingClustersExist",
        "message": "pending cluster is starting",
        "lastTransitionTime": "2026-11-29T01:05:00Z",
    }
    status["activeServiceStatus"]["applicationStatuses"]["surge"]["serveDeploymentStatuses"]["Embedder"] = {
        "status": "UNHEALTHY",
        "message": "replica failed to start",
    }
    status["pendingServiceStatus"] = {
        **cluster_status("surge-raycluster-fghij", 0, 2),
        "trafficRoutedPercent": 20,
    }
    obj = rayservice(status)
    assert crd_validators.errors(obj) == []
    summary = summarise_rayservice(obj)
    assert summary.upgrade_in_progress
    assert summary.pending_cluster is not None and summary.pending_cluster.name == "surge-raycluster-fghij"
    assert summary.traffic_routed_percent == 20
    assert summary.unhealthy == ["surge/Embedder: UNHEALTHY replica failed to start"]
    assert "UpgradeInProgress: pending cluster is starting" in summary.messages


def test_a_new_rayservice_without_status_summarises_as_not_ready() -> None:
    summary = summarise_rayservice(rayservice({}) | {"status": None})
    assert not summary.ready and summary.applications == {} and summary.active_cluster is None


def test_status_command_summarises_a_saved_object_and_exits_nonzero_when_unhealthy(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from pipelines.cluster import main

    healthy = tmp_path / "healthy.json"
    healthy.write_text(json.dumps(rayservice(STEADY)))
    assert main(["status", "--from-file", str(healthy)]) == 0
    assert capsys.readouterr().out.strip() == (
        "surge: ready, 1 app(s), 3 deployment(s), 0 unhealthy, workers 2/2 ready"
    )
    broken = copy.deepcopy(STEADY)
    broken["activeServiceStatus"]["applicationStatuses"]["surge"]["serveDeploymentStatuses"]["Gateway"] = {
        "status": "UNHEALTHY",
        "message": "health check failed",
    }
    sick = tmp_path / "sick.json"
    sick.write_text(json.dumps(rayservice(broken)))
    assert main(["status", "--from-file", str(sick), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["unhealthy"] == [
        "surge/Gateway: UNHEALTHY health check failed"
    ]
