"""The CronJob's command line, as rendered, drives `pipelines.cluster feature-job-trigger` end to end (Kafka
lag and the Kubernetes API replaced by fakes): it reads the rendered files and creates the rendered RayJob."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines import cluster
from tests.fixtures_helm import Rendered

pytestmark = pytest.mark.integration


class RecordingApi:
    def __init__(self) -> None:
        self.created: list[dict[str, Any]] = []
        self.selectors: list[str] = []

    def list_namespaced_custom_object(self, *args: Any, label_selector: str) -> dict[str, Any]:
        self.selectors.append(label_selector)
        return {"items": []}

    def create_namespaced_custom_object(self, *args: Any) -> dict[str, Any]:
        self.created.append(args[-1])
        return {"metadata": {"name": "surge-feature-job-x1"}}


@pytest.mark.parametrize(("scenario", "lag", "creates"), [("default", 1, True), ("pgvector", 999, False)])
def test_the_rendered_cronjob_command_creates_the_rendered_rayjob_only_past_min_lag(
    scenarios: dict[str, Rendered],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    scenario: str,
    lag: int,
    creates: bool,
) -> None:
    rendered = scenarios[scenario]
    data = rendered.one("ConfigMap", "-feature-job")["data"]
    for key in ("rayjob.yaml", "feature-job.json"):
        (tmp_path / key).write_text(data[key])
    pod = rendered.one("CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"][:3] == ["python", "-m", "pipelines.cluster"]
    args = [
        a.replace("/etc/surge/", f"{tmp_path}/").replace("$(POD_NAMESPACE)", "surge")
        for a in [*container["command"][3:], *container["args"]]
    ]
    measured: list[tuple[str, str]] = []

    def fake_lag(kafka: Any, topic: str, group_id: str) -> int:
        measured.append((topic, group_id))
        return lag

    api = RecordingApi()
    monkeypatch.setattr(cluster, "feature_job_lag", fake_lag)
    monkeypatch.setattr(cluster, "kubernetes_api", lambda: api)
    assert cluster.main(args) == 0
    settings = json.loads(data["feature-job.json"])
    assert measured == [(settings["topic"], settings["progress_group"])]
    assert api.created == ([yaml.safe_load(data["rayjob.yaml"])] if creates else [])
    assert api.selectors and "app.kubernetes.io/component=feature-job" in api.selectors[0]
