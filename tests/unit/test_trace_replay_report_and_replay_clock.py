"""The measured trace replay's arithmetic, from recorded polls and outcomes (no Ray): replica-seconds, cold
starts, SLO attainment, idle warm seconds and warm hits over a span; the simulator's error against it; and the
compressed clock surge's policy runs on during a replay (windows and learned hours in workload time)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from benchmarks import replay_report as rr
from benchmarks._replay_clock import POLICY_FUNCTION, ReplayClockPolicy, on_replay_clock
from benchmarks.autoscale_sim import Calibration
from benchmarks.elastic_workloads import MONDAY_EPOCH_S, Workload
from benchmarks.policy_sim import simulate_policy
from benchmarks.trace_replay import compressed, policies
from deployments.settings import AutoscalingSettings

# A replica starts at 1 s (running from 2 s), serves two requests, and is gone at 8 s; replay ends at 10 s.
POLLS: list[rr.Poll] = [(0.0, 0, 0), (1.0, 1, 0), (2.0, 1, 1), (8.0, 0, 0)]
OUTCOMES = [
    {"t_s": 0.5, "ttft_s": 2.5, "total_s": 3.0},  # waited for the cold start: misses a 2 s SLO
    {"t_s": 6.0, "ttft_s": 0.2, "total_s": 0.5},  # found the replica running
    {"t_s": 9.0, "ttft_s": None, "total_s": 0.1, "error": "boom"},
]


def test_replica_seconds_integrate_held_replicas_within_the_span() -> None:
    assert rr.replica_seconds(POLLS, 0.0, 10.0) == pytest.approx(7.0)
    assert rr.replica_seconds(POLLS, 4.0, 10.0) == pytest.approx(4.0)


def test_a_zero_to_one_transition_is_one_cold_start_and_only_inside_the_span() -> None:
    assert rr.cold_starts(POLLS, 0.0, 10.0) == 1
    assert rr.cold_starts(POLLS, 3.0, 10.0) == 0


def test_a_replica_stopping_while_its_successor_starts_is_a_cold_start_though_one_is_always_held() -> None:
    # running 1 -> 0 -> 1 while total never leaves 1: the stopping replica is paid for and serves nothing.
    handover: list[rr.Poll] = [(0.0, 1, 1), (3.0, 2, 0), (4.0, 1, 0), (6.0, 1, 1)]
    assert rr.cold_starts(handover, 0.0, 10.0) == 1


def test_slo_attainment_counts_failed_requests_as_misses() -> None:
    summary = rr.summarize(POLLS, OUTCOMES, 0.0, 10.0, slo_s=2.0)
    assert summary["requests"] == 3 and summary["errors"] == 1
    assert summary["slo_attainment"] == pytest.approx(1 / 3, abs=1e-4)


def test_idle_warm_seconds_are_running_replicas_while_nothing_is_in_flight() -> None:
    # Running from 2 s to 8 s; the first request is in flight until 3.5 s, the second 6.0-6.5 s:
    # the poll steps start at 2 s (busy) only, so 0 idle; from a span starting at 4 s the step is idle.
    assert rr.idle_warm_seconds(POLLS, OUTCOMES, 0.0, 10.0) == pytest.approx(0.0)
    assert rr.idle_warm_seconds(POLLS, OUTCOMES, 4.0, 10.0) == pytest.approx(4.0)


def test_a_busy_period_start_that_found_a_running_replica_is_a_warm_hit() -> None:
    assert rr.warm_hits(POLLS, OUTCOMES, 0.0, 10.0) == (1, 3)
    assert rr.warm_hits(POLLS, OUTCOMES, 5.0, 8.0) == (1, 1)


def test_a_request_sent_during_another_does_not_start_a_busy_period() -> None:
    overlapping = [{"t_s": 2.0, "ttft_s": 0.1, "total_s": 2.0}, {"t_s": 3.0, "ttft_s": 0.1, "total_s": 0.2}]
    assert rr.warm_hits(POLLS, overlapping, 0.0, 10.0) == (1, 1)


def test_ratios_are_against_always_on_and_the_simulator_error_is_a_mean_absolute_error() -> None:
    measured = rr.with_ratios(
        {
            "always-on": {"replica_seconds": 100.0, "slo_attainment": 1.0},
            "zero": {"replica_seconds": 30.0, "slo_attainment": 0.9},
        }
    )
    assert measured["zero"]["replica_seconds_vs_always_on"] == pytest.approx(0.3)
    simulated = {
        "always-on": {"replica_seconds_vs_always_on": 1.0, "slo_attainment": 1.0},
        "zero": {"replica_seconds_vs_always_on": 0.4, "slo_attainment": 0.8},
    }
    error = rr.simulator_error(measured, simulated)
    assert error["replica_seconds_ratio_mae"] == pytest.approx(0.05)
    assert error["slo_attainment_mae"] == pytest.approx(0.05)


def test_spread_across_rounds_gives_median_min_and_max() -> None:
    rounds = [{"x": 0.3}, {"x": 0.5}, {"x": 0.4}, {"x": None}]
    assert rr.across_rounds(rounds, "x") == {"median": 0.4, "min": 0.3, "max": 0.5, "rounds": 3}


def test_cold_start_is_the_extra_ttft_of_requests_sent_at_zero_replicas() -> None:
    assert rr.warm_ttft_s(OUTCOMES, POLLS) == pytest.approx(0.2)
    assert rr.cold_start_s(OUTCOMES, POLLS, 0.2) == pytest.approx(2.3)


def ctx(wall_s: float) -> SimpleNamespace:
    return SimpleNamespace(
        current_time=wall_s,
        total_num_requests=0.0,
        total_queued_requests=0.0,
        current_num_replicas=0,
        aggregated_metrics={},
        policy_state={},
        app_name="a",
        deployment_name="LLMServer",
    )


def test_the_replay_clock_puts_a_compressed_monday_nine_oclock_inside_the_scheduled_window() -> None:
    window = {"days": [0, 1, 2, 3, 4], "start_minute": 9 * 60, "end_minute": 17 * 60, "replicas": 1}
    policy = ReplayClockPolicy(
        replay_origin_s=1000.0,
        compress=480.0,
        virtual_origin_s=MONDAY_EPOCH_S,
        replica_policy={"kind": "slo"},
        warmers=[{"kind": "scheduled", "windows": [window], "lead_s": 0}],
    )
    assert policy.virtual_time(1067.5) == MONDAY_EPOCH_S + 9 * 3600
    assert policy(ctx(1000.0 + 60.0))[0] == 0  # Monday 08:00 in workload time
    assert policy(ctx(1000.0 + 70.0))[0] == 1  # Monday 09:20


def test_on_replay_clock_swaps_only_the_policy_function_and_keeps_the_users_kwargs() -> None:
    config = AutoscalingSettings(min_replicas=0, policy={"replica_policy": "slo"}).to_serve(8)
    moved = on_replay_clock(config, 1.0, 2.0, 3.0)
    assert moved["policy"]["policy_function"] == POLICY_FUNCTION
    assert (
        moved["policy"]["policy_kwargs"]["replica_policy"]
        == config["policy"]["policy_kwargs"]["replica_policy"]
    )
    default = AutoscalingSettings(min_replicas=0).to_serve(8)
    assert on_replay_clock(default, 1.0, 2.0, 3.0) == default


def test_every_compared_policy_is_a_valid_user_config_and_scheduled_needs_windows() -> None:
    compared = policies(2.0, 900.0, 20.0, windows=True, state_dir="/tmp/x")
    assert set(compared) == {
        "always-on",
        "serve-default",
        "surge-slo",
        "slo+scheduled",
        "slo+learned",
        "keep-warm",
    }
    for autoscaling in compared.values():
        AutoscalingSettings.model_validate(autoscaling)
    assert "slo+scheduled" not in policies(2.0, 900.0, 20.0, windows=False, state_dir="/tmp/x")


def test_the_simulator_on_a_compressed_clock_pre_warms_by_the_cold_start_it_measured_like_the_replay() -> (
    None
):
    # A request at workload 09:30 on Monday and on Tuesday, compressed x480. Monday the scheduled warmer
    # leads by its configured 120 s (0.25 s of replay) and measures the 5 s start (2400 workload s); Tuesday
    # it leads by 1.5x that (1 h of workload time = 7.5 s of replay) and the replica is ready; a plain
    # scale-to-zero pays the cold start both days.
    day = 86_400.0
    workload = compressed(Workload("w", [(9.5 * 3600, 4), (day + 9.5 * 3600, 4)], day + 12 * 3600, {}), 480.0)
    cal = Calibration(cold_start_s=5.0, ttft_warm_s=0.1, per_token_s=0.01, slots=8)
    auto = policies(2.0, 7 * day, 20.0, windows=True, state_dir="/tmp/x")
    warm = simulate_policy(
        workload, AutoscalingSettings.model_validate(auto["slo+scheduled"]), cal, clock_scale=480.0
    )
    cold = simulate_policy(
        workload, AutoscalingSettings.model_validate(auto["surge-slo"]), cal, clock_scale=480.0
    )
    assert warm.ttft_s[0] > 1.0  # Monday: the configured lead is far shorter than the start
    assert warm.ttft_s[1] == pytest.approx(0.1, abs=0.3)
    assert min(cold.ttft_s) > 4.0


def test_the_report_of_a_recorded_replay_states_the_headline_slo_hit_rate_and_simulator_error(
    tmp_path,
) -> None:
    import argparse
    import json

    from benchmarks.elastic_workloads import BusinessDays, business_days
    from benchmarks.trace_replay_results import report
    from benchmarks.traces import TraceRequest

    trace = [TraceRequest(t_s=i * 60.0, context_tokens=10, generated_tokens=16) for i in range(60)]
    workload = business_days(trace, BusinessDays(days=3, train_days=2, keep_every=6, stray_share=0.01))
    compress = 86_400.0 / 60.0  # a day in 60 s of replay
    end = workload.end_s / compress
    sent = [t / compress for t, _ in workload.arrivals]
    outcomes = [{"t_s": t, "ttft_s": 0.3, "total_s": 0.5} for t in sent]
    on: list[rr.Poll] = [(i * 0.5, 1, 1) for i in range(int(end * 2))]
    # Held only from 8:00 to 18:00 of each day (workload time): about 0.42 of always-on.
    held: list[rr.Poll] = [
        (i * 0.5, int(20 <= (i * 0.5) % 60 < 45), int(20 <= (i * 0.5) % 60 < 45)) for i in range(int(end * 2))
    ]
    compared = policies(2.0, 3600.0, 20.0, windows=True, state_dir=str(tmp_path))
    run = {
        "polls": {"always-on": on, "slo+learned": held},
        # One request at 02:00 of the first day met no replica: it waited 5 s for one (the cold start).
        "outcomes": {
            "always-on": outcomes,
            "slo+learned": [{"t_s": 5.0, "ttft_s": 5.3, "total_s": 5.5}, *outcomes],
        },
        "end_s": end,
        "policies": {n: compared[n] for n in ("always-on", "slo+learned")},
        "lead_s": 3600.0,
        "engine": {"engine": "synthetic"},
    }
    args = argparse.Namespace(
        slo_s=2.0,
        day_s=60.0,
        days=3,
        train_days=2,
        keep_every=6,
        workloads="business_days",
        rounds=1,
        week=False,
        out=tmp_path,
    )
    real = {"cold_ttft_s": 5.0, "load_s": 3.0, "warm_ttft_s": 0.3, "per_token_s": 0.01}
    path = report(args, {"business_days": (workload, compress)}, {"business_days": [run]}, real, 0.0, {})
    doc = json.loads(path.read_text())
    headline = doc["headline"]
    assert headline["goal"] == 0.4 and headline["better"] == "lower"
    assert headline["value"] == pytest.approx(25 / 60, abs=0.02)
    assert headline["slo_attainment"] == 1.0 and headline["slo_attainment_goal"] == 0.99
    assert headline["warm_hit_rate_held_out"] is not None
    assert headline["simulator_replica_seconds_ratio_mae"] is not None
    error = doc["figures"]["simulator_error"]["business_days"]
    assert error["replica_seconds_ratio_mae"] is not None and error["slo_attainment_mae"] is not None
    calibration = doc["figures"]["simulated"]["model"]["calibration"]
    assert calibration["cold_start_s"] == pytest.approx(5.0) and calibration["ttft_warm_s"] == pytest.approx(
        0.3
    )
