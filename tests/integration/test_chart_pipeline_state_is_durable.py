"""The pipelines' state outlives pods and runs on a cluster: the feature job's stores and ledger and the drift
monitor's reference are on claims, not on volumes that go with a pod or a job's Ray cluster."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pipelines.drift import DriftMonitorSettings
from tests.fixtures_helm import SCENARIOS, HelmRenderError, Rendered, Renderer

pytestmark = pytest.mark.integration

DEFAULT = SCENARIOS["default"]


def _volumes(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in pod["volumes"]}


def _drift_deployment(rendered: Rendered) -> dict[str, Any]:
    return rendered.one("Deployment", "drift-monitor")


def test_the_feature_stores_and_their_ledger_are_on_a_kept_claim(render_chart: Renderer) -> None:
    rendered = render_chart(DEFAULT)
    job = rendered.feature_rayjob()
    assert job is not None
    head = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    claim = _volumes(head)["features"]["persistentVolumeClaim"]["claimName"]
    pvc = rendered.one("PersistentVolumeClaim", "-features")
    assert pvc["metadata"]["name"] == claim
    assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    settings = json.loads(rendered.one("ConfigMap", "feature-job")["data"]["feature-job.json"])
    mount = next(m for m in head["containers"][0]["volumeMounts"] if m["name"] == "features")["mountPath"]
    assert settings["online"]["path"].startswith(mount) and settings["offline_path"].startswith(mount)


def test_an_existing_claim_replaces_the_charts_own(render_chart: Renderer) -> None:
    rendered = render_chart(DEFAULT, sets=("featureJob.existingClaim=my-features",))
    job = rendered.feature_rayjob()
    assert job is not None
    head = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    assert _volumes(head)["features"]["persistentVolumeClaim"]["claimName"] == "my-features"
    assert not [
        p for p in rendered.of_kind("PersistentVolumeClaim") if p["metadata"]["name"].endswith("-features")
    ]


def test_the_drift_monitors_state_file_is_on_a_kept_claim(render_chart: Renderer) -> None:
    rendered = render_chart(DEFAULT)
    pod = _drift_deployment(rendered)["spec"]["template"]["spec"]
    claim = _volumes(pod)["state"]["persistentVolumeClaim"]["claimName"]
    pvc = rendered.one("PersistentVolumeClaim", "-drift-state")
    assert (
        pvc["metadata"]["name"] == claim
        and pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    )
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "state")["mountPath"]
    settings = DriftMonitorSettings.model_validate_json(
        rendered.one("ConfigMap", "pipelines")["data"]["drift-monitor.json"]
    )
    assert str(settings.state_path).startswith(mount)


def test_two_drift_monitor_replicas_cannot_share_one_state_file(render_chart: Renderer) -> None:
    with pytest.raises(HelmRenderError) as failure:
        render_chart(DEFAULT, sets=("consumers.driftMonitor.keda.maxReplicaCount=2",))
    assert "set consumers.driftMonitor.keda.maxReplicaCount to 1" in failure.value.stderr
    # Without persistence (state in an emptyDir, relearnt after a restart) two replicas are allowed.
    rendered = render_chart(
        DEFAULT,
        sets=(
            "consumers.driftMonitor.keda.maxReplicaCount=2",
            "consumers.driftMonitor.persistence.enabled=false",
        ),
    )
    assert "emptyDir" in _volumes(_drift_deployment(rendered)["spec"]["template"]["spec"])["state"]


def test_the_drift_monitor_can_use_static_membership_with_its_pod_name(render_chart: Renderer) -> None:
    from pipelines.drift import register_cli

    rendered = render_chart(DEFAULT, sets=("consumers.driftMonitor.staticMembership=true",))
    args = _drift_deployment(rendered)["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--group-instance-id=$(POD_NAME)" in args
    # The flag the chart passes is one the CLI accepts.
    import argparse

    parser = argparse.ArgumentParser()
    register_cli(parser.add_subparsers(dest="command"))
    parsed = parser.parse_args(["drift-monitor", *args[1:-1], "--group-instance-id=pod-0"])
    assert parsed.group_instance_id == "pod-0"


def test_the_learned_warmers_state_is_on_a_kept_claim_the_serve_controller_is_pointed_at(
    render_chart: Renderer,
) -> None:
    # The policies run in the Serve controller on the head; without the claim a head restart or a
    # NewCluster upgrade forgot every learned arrival model.
    rendered = render_chart(DEFAULT)
    head = rendered.one("RayService")["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]
    claim = _volumes(head)["autoscaling-state"]["persistentVolumeClaim"]["claimName"]
    pvc = rendered.one("PersistentVolumeClaim", "-autoscaling-state")
    assert pvc["metadata"]["name"] == claim
    assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    container = head["containers"][0]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "autoscaling-state")["mountPath"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["SURGE_AUTOSCALING_STATE_DIR"] == mount


def test_without_persistence_the_learned_state_is_an_emptydir_and_no_claim_is_made(
    render_chart: Renderer,
) -> None:
    rendered = render_chart(DEFAULT, sets=("rayCluster.head.autoscalingState.persistence.enabled=false",))
    head = rendered.one("RayService")["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]
    assert "emptyDir" in _volumes(head)["autoscaling-state"]
    assert not [
        p
        for p in rendered.of_kind("PersistentVolumeClaim")
        if p["metadata"]["name"].endswith("-autoscaling-state")
    ]
