"""The event-driven warmer: a consumer group's backlog holds a stage's floor, read from the broker at most
every poll_s, and a broker that cannot be read never breaks the autoscaler."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from deployments.autoscaling.backlog import BacklogWarmer
from deployments.autoscaling.serve_policy import SurgeAutoscalingPolicy
from deployments.settings import AutoscalingSettings

KAFKA = {"bootstrap_servers": "127.0.0.1:1"}


def warmer(lags: list[int | Exception], now: list[float], **params: object) -> BacklogWarmer:
    def read() -> int:
        lag = lags.pop(0)
        if isinstance(lag, Exception):
            raise lag
        return lag

    return BacklogWarmer(
        kafka=KAFKA, topic="documents", group_id="g", read_lag=read, clock=lambda: now[0], **params
    )  # type: ignore[arg-type]


def test_the_floor_is_held_while_the_group_lags_and_dropped_once_it_has_caught_up() -> None:
    now = [0.0]
    backlog = warmer([0, 30, 0], now, poll_s=5.0)
    assert backlog.floor(0.0) == 0
    now[0] = 5.0
    assert backlog.floor(0.0) == 1  # 30 documents waiting: the Embedder starts now
    now[0] = 10.0
    assert backlog.floor(0.0) == 0


def test_the_broker_is_read_at_most_once_per_poll_interval() -> None:
    now = [0.0]
    backlog = warmer([7], now, poll_s=5.0)  # a second read would pop from an empty list
    for t in (0.0, 1.0, 4.9):
        now[0] = t
        assert backlog.floor(0.0) == 1


def test_min_lag_and_replicas_set_the_threshold_and_the_floor() -> None:
    now = [0.0]
    backlog = warmer([9, 10], now, poll_s=1.0, min_lag=10, replicas=2)
    assert backlog.floor(0.0) == 0
    now[0] = 1.0
    assert backlog.floor(0.0) == 2


def test_an_unreachable_broker_gives_no_floor_instead_of_an_error() -> None:
    now = [0.0]
    assert warmer([ConnectionError("no broker")], now).floor(0.0) == 0


def test_the_serve_config_builds_the_warmer_serve_runs() -> None:
    autoscaling = AutoscalingSettings.model_validate(
        {"min_replicas": 0, "policy": {"backlog": {"kafka": KAFKA, "topic": "documents", "min_lag": 3}}}
    )
    serve = autoscaling.to_serve(64)
    kwargs = json.loads(json.dumps(serve["policy"]["policy_kwargs"]))  # what Serve's controller receives
    policy = SurgeAutoscalingPolicy(**kwargs)
    (built,) = policy.warmers
    assert isinstance(built, BacklogWarmer)
    assert (built.topic, built.group_id, built.min_lag) == ("documents", "surge-ingestion", 3)


def test_a_bad_backlog_setting_fails_at_load_naming_the_field() -> None:
    with pytest.raises(ValidationError, match="min_lag"):
        AutoscalingSettings.model_validate({"policy": {"backlog": {"min_lag": 0}}})
