"""The chart's CronJob tick (`python -m pipelines.cluster feature-job-trigger`): lag-aware, never two runs at
once, and finished RayJobs deleted after their TTL. A fake CustomObjectsApi records what the trigger asks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from pipelines.cluster import LagTriggerPolicy, expired_rayjobs, run_feature_job_trigger

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
BODY = {"apiVersion": "ray.io/v1", "kind": "RayJob", "metadata": {"generateName": "surge-feature-job-"}}


def _job(name: str, state: str, ended_s_ago: int | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {"jobDeploymentStatus": state}
    if ended_s_ago is not None:
        status["endTime"] = (NOW - timedelta(seconds=ended_s_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"metadata": {"name": name}, "status": status}


class FakeApi:
    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.items = items
        self.calls: list[tuple[str, Any]] = []

    def list_namespaced_custom_object(self, *args: Any, label_selector: str) -> dict[str, Any]:
        self.calls.append(("list", (args, label_selector)))
        return {"items": self.items}

    def delete_namespaced_custom_object(
        self, group: str, version: str, ns: str, plural: str, name: str
    ) -> None:
        self.calls.append(("delete", name))

    def create_namespaced_custom_object(
        self, group: str, version: str, ns: str, plural: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        self.calls.append(("create", body))
        return {"metadata": {"name": "surge-feature-job-abcde"}}


def _tick(api: FakeApi, lag: int) -> Any:
    return run_feature_job_trigger(
        api,
        "surge",
        BODY,
        lag,
        LagTriggerPolicy(min_lag=100),
        label_selector="a=b",
        keep_finished_s=600,
        now=NOW,
    )


def test_no_rayjob_is_created_below_the_minimum_lag() -> None:
    api = FakeApi([])
    decision = _tick(api, lag=99)
    assert not decision.create and [c[0] for c in api.calls] == ["list"]


def test_no_second_run_starts_while_one_is_still_running() -> None:
    api = FakeApi([_job("running", "Running"), _job("done", "Complete", ended_s_ago=10)])
    decision = _tick(api, lag=10_000)
    assert not decision.create and decision.active_jobs == ("running",)
    assert not [c for c in api.calls if c[0] == "create"]


def test_the_rayjob_from_the_manifest_is_created_when_lag_waits_and_nothing_runs() -> None:
    api = FakeApi([_job("done", "Complete", ended_s_ago=10)])
    decision = _tick(api, lag=100)
    assert decision.create and decision.created == "surge-feature-job-abcde"
    assert ("create", BODY) in api.calls
    assert api.calls[0] == ("list", (("ray.io", "v1", "surge", "rayjobs"), "a=b"))


def test_finished_rayjobs_are_deleted_only_after_their_ttl() -> None:
    items = [
        _job("old-ok", "Complete", ended_s_ago=601),
        _job("old-failed", "Failed", ended_s_ago=3600),
        _job("recent", "Complete", ended_s_ago=599),
        _job("running", "Running"),
        _job("no-end-time", "Complete"),
    ]
    assert expired_rayjobs({"items": items}, NOW, 600) == ["old-failed", "old-ok"]
    api = FakeApi(items)
    _tick(api, lag=0)  # deletion happens on every tick, even with nothing to do
    assert sorted(name for kind, name in api.calls if kind == "delete") == ["old-failed", "old-ok"]
