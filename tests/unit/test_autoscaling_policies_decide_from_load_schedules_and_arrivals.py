"""Custom autoscaling decisions: the SLO policy scales on slots and TTFT with a dead band, the scheduled
warmer holds replicas inside its windows (plus lead), the learned warmer pre-warms and keeps alive from the
idle-time percentiles it learned, persists what it learned, and the Serve policy class combines them."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from deployments.autoscaling import stats
from deployments.autoscaling.policies import LoadView, QueueLengthPolicy, SloPolicy, build_replica_policy
from deployments.autoscaling.serve_policy import SurgeAutoscalingPolicy
from deployments.autoscaling.stats import GenerationStats, RollingQuantile
from deployments.autoscaling.warmers import (
    ArrivalModel,
    LearnedWarmer,
    ScheduledWarmer,
    Window,
    build_warmer,
)
from deployments.settings import AppSettings, AutoscalingSettings, LLMSettings


def at(day: int, hh: int, mm: int, ss: int = 0) -> float:
    """Epoch seconds of a day in the week of Monday 2026-11-30 (UTC)."""
    monday = dt.datetime(2026, 11, 30, tzinfo=dt.UTC)
    return (monday + dt.timedelta(days=day, hours=hh, minutes=mm, seconds=ss)).timestamp()


def view(current: int, running: float = 0, waiting: float = 0, ttft: float | None = None) -> LoadView:
    return LoadView(
        now=0.0,
        current_replicas=current,
        ongoing=running + waiting,
        waiting=waiting,
        running=running,
        ttft_p90_s=ttft,
    )


# ---------------------------------------------------------------------------------------- replica policies


def test_queue_length_policy_divides_ongoing_by_the_target() -> None:
    assert QueueLengthPolicy(4).replicas(view(1, running=10)) == 2.5


def test_slo_policy_follows_its_worked_example() -> None:
    policy = SloPolicy(ttft_slo_s=2.0, max_num_seqs=16, target_utilization=0.75, scale_down_below=0.5)
    assert policy.replicas(view(2, running=24, waiting=6, ttft=1.0)) == 2.5
    assert policy.replicas(view(2, running=14, ttft=1.2)) == 2  # dead band: hold
    assert policy.replicas(view(1, running=8, ttft=2.6)) == 2  # SLO missed: one more now
    assert policy.replicas(view(2, running=4, ttft=0.4)) == 1  # clearly idle: shrink
    assert policy.replicas(view(1, ttft=None)) == 0  # nothing left: to zero (Serve's delays apply)


def test_slo_policy_wakes_a_stage_at_zero_for_waiting_requests() -> None:
    assert SloPolicy().replicas(view(0, waiting=3)) > 0


@given(
    current=st.integers(0, 8),
    running=st.floats(0, 500),
    waiting=st.floats(0, 500),
    ttft=st.none() | st.floats(0, 60),
)
def test_slo_policy_never_asks_for_less_than_the_slots_in_use_need(
    current: int, running: float, waiting: float, ttft: float | None
) -> None:
    policy = SloPolicy(max_num_seqs=16, target_utilization=0.75)
    decision = policy.replicas(view(current, running, waiting, ttft))
    assert decision >= 0
    assert decision >= (running + waiting) / 12 - 1e-9
    if current > 0 and running + waiting > 0 and ttft is not None and ttft > policy.ttft_slo_s:
        assert decision >= current + 1


def test_unknown_policies_and_warmers_name_the_known_ones() -> None:
    with pytest.raises(ValueError, match="queue_length"):
        build_replica_policy({"kind": "magic"})
    with pytest.raises(ValueError, match="learned"):
        build_warmer({"kind": "magic"})


# ---------------------------------------------------------------------------------------- scheduled warmer


def test_scheduled_warmer_holds_its_window_from_the_lead_time_to_the_close() -> None:
    warmer = ScheduledWarmer((Window(days=(0, 1, 2, 3, 4), start_minute=540, end_minute=1020),), lead_s=120)
    assert warmer.floor(at(0, 8, 57, 59)) == 0
    assert warmer.floor(at(0, 8, 58, 0)) == 1
    assert warmer.floor(at(0, 16, 59)) == 1
    assert warmer.floor(at(0, 17, 0)) == 0
    assert warmer.floor(at(5, 9, 30)) == 0  # Saturday


def test_scheduled_warmer_lead_wraps_from_sunday_into_monday() -> None:
    warmer = ScheduledWarmer((Window(days=(0,), start_minute=0, end_minute=60, replicas=2),), lead_s=600)
    assert warmer.floor(at(6, 23, 55)) == 2
    assert warmer.floor(at(6, 23, 45)) == 0


@given(minute=st.integers(0, 7 * 1440 - 1), start=st.integers(0, 1438), length=st.integers(1, 600))
def test_scheduled_warmer_is_on_exactly_inside_the_window(minute: int, start: int, length: int) -> None:
    end = min(1440, start + length)
    warmer = ScheduledWarmer((Window(days=(2,), start_minute=start, end_minute=end),))
    inside = 2 * 1440 + start <= minute < 2 * 1440 + end
    assert warmer.floor(at(0, 0, 0) + minute * 60 + 30) == (1 if inside else 0)


# ---------------------------------------------------------------------------------------- learned warmer


def replay(warmer: LearnedWarmer, busy_periods: list[tuple[float, float]]) -> ArrivalModel:
    """Feed busy periods [(start, end)] to the model, with a replica warm when the warmer said so."""
    model = ArrivalModel()
    for start, end in busy_periods:
        model = warmer.observe(model, start, busy=True, warm=warmer.floor(start, model) > 0)
        model = warmer.observe(model, end, busy=False, warm=True)
    return model


def test_learned_warmer_unloads_then_prewarms_before_the_expected_arrival() -> None:
    warmer = LearnedWarmer(lead_s=20, min_unload_s=10, slot_min_periods=1000)
    periods, t = [], 0.0
    for _ in range(20):  # a client that comes back every 300 s (busy 5 s)
        periods.append((t, t + 5))
        t += 305
    model = replay(warmer, periods)
    end = t - 305 + 5
    pre_warm, keep_alive = warmer.windows(model)
    assert pre_warm == pytest.approx(300) and keep_alive == pytest.approx(330)
    assert warmer.floor(end + 100, model) == 0  # the gap is worth unloading
    assert warmer.floor(end + 285, model) == 1  # lead time before the expected arrival
    assert warmer.floor(end + 340, model) == 0  # past the keep-alive
    assert model.hit_rate is not None and model.hit_rate > 0.7  # all but the first few arrivals were warm


def test_learned_warmer_keeps_alive_by_default_until_it_has_samples() -> None:
    warmer = LearnedWarmer(default_keep_alive_s=600, min_samples=5)
    model = replay(warmer, [(0, 1)])
    assert warmer.floor(300, model) == 1 and warmer.floor(700, model) == 0


def test_learned_warmer_holds_a_slot_of_the_week_seen_busy_in_earlier_weeks() -> None:
    warmer = LearnedWarmer(slot_min_periods=2, default_keep_alive_s=0, lead_s=60)
    week = 7 * 86400
    model = replay(warmer, [(at(0, 9, 5), at(0, 9, 6)), (at(0, 9, 10) + week, at(0, 9, 11) + week)])
    assert warmer.floor(at(0, 8, 59, 30) + 2 * week, model) == 1  # within the lead of Monday 09:00
    assert warmer.floor(at(0, 11, 0) + 2 * week, model) == 0


def test_learned_warmer_with_a_lead_longer_than_a_slot_holds_from_the_lead_until_the_slot_ends() -> None:
    # A 3 h lead against hourly slots: held from Monday 06:00 through the known 09:00 slot, not only for the
    # hour whose end is 3 h ahead (the bug a compressed replay found: warm 06:00-07:00, cold at 09:00).
    warmer = LearnedWarmer(slot_min_periods=2, default_keep_alive_s=0, lead_s=3 * 3600)
    week = 7 * 86400
    model = replay(warmer, [(at(0, 9, 5), at(0, 9, 6)), (at(0, 9, 10) + week, at(0, 9, 11) + week)])
    for hour, minute in ((6, 0), (7, 30), (8, 59), (9, 30)):
        assert warmer.floor(at(0, hour, minute) + 2 * week, model) == 1, (hour, minute)
    assert warmer.floor(at(0, 5, 59) + 2 * week, model) == 0
    assert warmer.floor(at(0, 10, 1) + 2 * week, model) == 0


@settings(max_examples=60, deadline=None)
@given(gaps=st.lists(st.floats(0.5, 5000), min_size=1, max_size=80), busy=st.floats(0.1, 30))
def test_learned_warmer_stays_consistent_on_any_arrival_sequence(gaps: list[float], busy: float) -> None:
    warmer = LearnedWarmer(max_samples=16, min_samples=3)
    t, periods = 0.0, []
    for gap in gaps:
        periods.append((t, t + busy))
        t += busy + gap
    model = replay(warmer, periods)
    pre_warm, keep_alive = warmer.windows(model)
    assert 0 <= pre_warm <= keep_alive <= max(warmer.max_keep_alive_s, warmer.default_keep_alive_s)
    assert len(model.idle_times_s) <= warmer.max_samples
    assert list(model.idle_times_s) == sorted(model.idle_times_s)
    assert model.arrivals == len(gaps) and 0 <= model.hits <= model.arrivals
    assert ArrivalModel.from_json(json.loads(json.dumps(model.to_json()))) == model


# ---------------------------------------------------------------------------------------- replica stats


def test_generation_stats_report_waiting_running_and_a_rolling_ttft_p90() -> None:
    generation = GenerationStats()
    assert generation.report() == {stats.WAITING: 0.0, stats.RUNNING: 0.0, stats.STARTED: 0.0}  # no TTFT yet
    for ttft in [0.1 * i for i in range(1, 11)]:
        generation.started()
        generation.first_token(ttft)
    generation.started()
    report = generation.report()
    assert report[stats.WAITING] == 1 and report[stats.RUNNING] == 10
    assert report[stats.TTFT_P90] == pytest.approx(0.9)
    generation.finished(had_first_token=False)
    assert generation.report()[stats.WAITING] == 0
    assert generation.report()[stats.STARTED] == 11  # a counter: finished requests stay counted


def test_rolling_quantile_forgets_samples_older_than_its_window() -> None:
    quantile = RollingQuantile(0.9, window_s=10)
    quantile.add(5.0, now=0)
    assert quantile.value(now=5) == 5.0 and quantile.value(now=11) is None


# ---------------------------------------------------------------------------------------- the Serve policy


def context(now: float, ongoing: float, current: int, metrics: dict[str, Any] | None = None) -> Any:
    return SimpleNamespace(
        current_time=now,
        total_num_requests=ongoing,
        total_queued_requests=0.0,
        current_num_replicas=current,
        aggregated_metrics=metrics or {},
        policy_state={},
        app_name="surge",
        deployment_name="LLMServer",
    )


def test_serve_policy_takes_the_larger_of_demand_and_the_warmers_floor(tmp_path: Path) -> None:
    kwargs = AutoscalingSettings(
        min_replicas=0,
        max_replicas=4,
        policy={
            "replica_policy": "slo",
            "schedule": {"windows": [{"days": ["mon"], "start": "09:00", "end": "10:00"}]},
        },
    ).to_serve(capacity_per_replica=16)["policy"]["policy_kwargs"]
    policy = SurgeAutoscalingPolicy(**{**kwargs, "state_dir": str(tmp_path)})
    assert policy(context(at(0, 9, 30), 0, 0))[0] == 1  # window, no traffic
    assert policy(context(at(0, 12, 0), 0, 1))[0] == 0  # outside, idle
    busy = {stats.RUNNING: {"r1": 14.0}, stats.WAITING: {"r1": 16.0}, stats.TTFT_P90: {"r1": 1.0}}
    assert policy(context(at(0, 9, 30), 30, 2, busy))[0] == 2.5  # replicas the load needs


def test_a_stage_whose_requests_keep_arriving_is_not_idle_though_none_was_in_flight_when_sampled(
    tmp_path: Path,
) -> None:
    # Requests of 0.1 s every second: the sampled in-flight count reads 0, the started counter moves.
    policy = SurgeAutoscalingPolicy(replica_policy={"kind": "slo"}, state_dir=str(tmp_path))
    started = {"r1": 40.0}
    assert policy(context(100.0, 0, 1, {stats.STARTED: started}))[0] == 0  # first tick: nothing to compare
    assert policy(context(100.5, 0, 1, {stats.STARTED: {"r1": 41.0}}))[0] == 1  # it moved: hold the replica
    assert policy(context(101.0, 0, 1, {stats.STARTED: {"r1": 41.5}}))[0] == 1
    assert policy(context(101.5, 0, 1, {stats.STARTED: {"r1": 41.5}}))[0] == 0  # still: idle, to zero
    # Nothing to hold at zero (Serve's fast path starts a replica for waiting requests).
    assert policy(context(102.0, 0, 0, {stats.STARTED: {"r1": 42.0}}))[0] == 0
    # Replicas that report no counter (an older image) leave the policy as it was.
    assert policy(context(102.5, 0, 1))[0] == 0


def test_the_learned_warmer_counts_arrivals_seen_only_by_the_started_counter(tmp_path: Path) -> None:
    # Two short requests, 60 s apart, each between two samples: in flight 0 at every tick, the counter moves.
    policy = SurgeAutoscalingPolicy(warmers=[{"kind": "learned"}], state_dir=str(tmp_path))
    for now, started in [(100.0, 5.0), (100.5, 6.0), (101.0, 6.0), (160.0, 6.0), (160.5, 7.0), (161.0, 7.0)]:
        policy(context(now, 0, 1, {stats.STARTED: {"r1": started}}))
    model = policy.models["surge__LLMServer"]
    assert model.arrivals == 2 and model.hits == 2  # both found the replica running
    assert model.idle_times_s == (59.5,)  # from the end of the first busy tick to the second arrival


def test_serve_policy_persists_its_arrivals_model_per_deployment(tmp_path: Path) -> None:
    kwargs = {"warmers": [{"kind": "learned"}], "state_dir": str(tmp_path), "save_every_s": 0.0}
    policy = SurgeAutoscalingPolicy(**kwargs)
    policy(context(100.0, 1, 0))
    policy(context(110.0, 0, 1))
    policy(context(200.0, 1, 1))
    saved = json.loads((tmp_path / "surge__LLMServer.json").read_text())
    assert saved["arrivals"] == 2 and saved["hits"] == 1 and saved["idle_times_s"] == [90.0]
    again = SurgeAutoscalingPolicy(**kwargs)  # a new controller (or redeploy) starts from what was learned
    again(context(300.0, 0, 1))
    assert again._models["surge__LLMServer"].arrivals == 2


def test_without_a_state_dir_the_policy_saves_where_the_chart_mounts_its_claim(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The chart points the head's Serve controller at a kept claim with SURGE_AUTOSCALING_STATE_DIR.
    monkeypatch.setenv("SURGE_AUTOSCALING_STATE_DIR", str(tmp_path / "claim"))
    monkeypatch.setenv("SURGE_CACHE_DIR", str(tmp_path / "cache"))
    assert SurgeAutoscalingPolicy(warmers=[{"kind": "learned"}]).state_dir == tmp_path / "claim"
    monkeypatch.delenv("SURGE_AUTOSCALING_STATE_DIR")
    assert SurgeAutoscalingPolicy().state_dir == tmp_path / "cache" / "autoscaling"


def test_serve_policy_ignores_an_unreadable_model_file(tmp_path: Path) -> None:
    (tmp_path / "surge__LLMServer.json").write_text("{not json")
    policy = SurgeAutoscalingPolicy(warmers=[{"kind": "learned"}], state_dir=str(tmp_path))
    assert policy(context(1.0, 1, 0))[0] >= 0


# ---------------------------------------------------------------------------------------- settings


def test_policy_settings_reach_serve_as_an_import_path_and_json_kwargs() -> None:
    config = AutoscalingSettings(policy={"replica_policy": "slo", "learned": {}}).to_serve(8)
    assert (
        config["policy"]["policy_function"] == "deployments.autoscaling.serve_policy:SurgeAutoscalingPolicy"
    )
    assert config["policy"]["policy_kwargs"]["replica_policy"]["max_num_seqs"] == 8
    json.dumps(config["policy"]["policy_kwargs"])
    assert "policy" not in AutoscalingSettings().to_serve(8)  # unset: Serve's default policy
    # Without the stage's slots, the SLO policy takes those target_ongoing_requests implies: ceil(8 / 0.75).
    implied = AutoscalingSettings(target_ongoing_requests=8, policy={"replica_policy": "slo"}).to_serve()
    assert implied["policy"]["policy_kwargs"]["replica_policy"]["max_num_seqs"] == 11


@pytest.mark.parametrize(
    ("policy", "field"),
    [
        ({"schedule": {"windows": [{"days": ["mon"], "start": "17:00", "end": "09:00"}]}}, "end"),
        ({"schedule": {"windows": [{"days": ["funday"], "start": "09:00", "end": "10:00"}]}}, "days"),
        ({"schedule": {"windows": [{"days": ["mon"], "start": "9am", "end": "10:00"}]}}, "start"),
        ({"learned": {"head": 0.9, "tail": 0.5}}, "head"),
        ({"replica_policy": "fastest"}, "replica_policy"),
        ({"ttft_slo_s": 0}, "ttft_slo_s"),
    ],
)
def test_bad_policy_settings_fail_at_load_naming_the_field(policy: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        AppSettings.model_validate({"llm": {"autoscaling": {"policy": policy}}})


def test_llm_max_ongoing_requests_follows_max_num_seqs_and_may_not_differ() -> None:
    assert LLMSettings(max_num_seqs=8).max_ongoing_requests == 8
    with pytest.raises(ValidationError, match="max_ongoing_requests"):
        LLMSettings(max_num_seqs=8, max_ongoing_requests=32)
