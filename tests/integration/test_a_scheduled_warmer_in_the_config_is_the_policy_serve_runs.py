"""The autoscaling policy configured in a stage's settings is the one Ray Serve's controller runs: a stage with
`min_replicas: 0` and a scheduled-warmer window open now is held at one replica with no traffic at all, while
the same stage whose window is closed stays at zero (so it is the warmer, not a default, that holds it)."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from typing import Any

import pytest
from ray import serve

from deployments.settings import DeploymentSettings

pytestmark = pytest.mark.integration

DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


@serve.deployment
class Idle:
    async def __call__(self, request: Any) -> str:
        return "ok"


def warmed_settings(days: list[str], learned_dir: str) -> DeploymentSettings:
    return DeploymentSettings.model_validate(
        {
            "num_cpus": 0.05,
            "autoscaling": {
                "min_replicas": 0,
                "max_replicas": 2,
                "upscale_delay_s": 0,
                "downscale_delay_s": 2,
                "downscale_to_zero_delay_s": 2,
                "look_back_period_s": 1,
                "metrics_interval_s": 0.5,
                "policy": {
                    "schedule": {"windows": [{"days": days, "start": "00:00", "end": "24:00"}], "lead_s": 0},
                    "learned": {"state_dir": learned_dir, "save_every_s": 1},
                },
            },
        }
    )


def running(app: str, deployment: str) -> int:
    status = serve.status().applications.get(app)
    if status is None or deployment not in status.deployments:
        return 0
    return int(status.deployments[deployment].replica_states.get("RUNNING", 0))


def wait_until(predicate: Any, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.5)
    return bool(predicate())


@pytest.fixture(scope="module")
def warmed_apps(serve_http_port: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    today = dt.datetime.now(dt.UTC).weekday()
    learned_dir = str(tmp_path_factory.mktemp("arrivals"))
    open_now = warmed_settings([DAYS[today]], learned_dir)
    closed_now = warmed_settings([DAYS[(today + 3) % 7]], learned_dir)
    serve.run(
        Idle.options(**open_now.serve_options("Warmed")).bind(), name="warm-open", route_prefix="/warm-open"
    )
    serve.run(
        Idle.options(**closed_now.serve_options("Warmed")).bind(),
        name="warm-closed",
        route_prefix="/warm-closed",
    )
    yield
    serve.delete("warm-open")
    serve.delete("warm-closed")


def test_a_stage_at_min_zero_is_held_at_one_replica_inside_its_scheduled_window(warmed_apps: None) -> None:
    assert wait_until(lambda: running("warm-open", "Warmed") == 1, timeout_s=60), "the warmer did not hold 1"
    time.sleep(5)  # well past the 2 s downscale-to-zero delay: still held, with no request at all
    assert running("warm-open", "Warmed") == 1


def test_the_same_stage_outside_its_window_stays_at_zero(warmed_apps: None) -> None:
    wait_until(lambda: running("warm-open", "Warmed") == 1, timeout_s=60)
    assert running("warm-closed", "Warmed") == 0
