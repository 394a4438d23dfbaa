"""Elasticity workloads come from the trace as declared (business windows on weekdays, at least 0.5 % strays
outside them), and the policy simulator drives surge's own policy objects: always-on never cold-starts, the
scheduled warmer is warm for in-window arrivals, scale to zero pays a cold start for a lone request."""

from __future__ import annotations

from itertools import pairwise

import pytest

from benchmarks.autoscale_sim import Calibration
from benchmarks.elastic_workloads import DAY_S, BusinessDays, Workload, business_days, natural
from benchmarks.policy_sim import policies, simulate_policy
from benchmarks.traces import TraceRequest
from deployments.settings import AutoscalingSettings

TRACE = [TraceRequest(t_s=i * 10.0, context_tokens=100, generated_tokens=40) for i in range(360)]
CAL = Calibration(cold_start_s=20.0, ttft_warm_s=0.1, per_token_s=0.01, slots=8)


def test_business_days_put_traffic_in_weekday_windows_and_strays_outside() -> None:
    workload = business_days(TRACE, BusinessDays(days=7, train_days=3, keep_every=4, stray_share=0.01))
    assert len(workload.windows) == 5  # Monday to Friday
    inside = [t for t, _ in workload.arrivals if any(a <= t < b for a, b in workload.windows)]
    outside = len(workload.arrivals) - len(inside)
    assert len(inside) == 5 * 90
    assert outside / len(workload.arrivals) >= 0.005
    assert all((a % DAY_S) >= 9 * 3600 and (b % DAY_S) <= 17 * 3600 for a, b in workload.windows)


def test_fewer_strays_than_half_a_percent_are_refused() -> None:
    with pytest.raises(ValueError, match="stray_share"):
        BusinessDays(stray_share=0.001)


def test_natural_keeps_the_traces_order_and_compresses_its_gaps() -> None:
    workload = natural(TRACE, compress=2.0, keep_every=3)
    times = [t for t, _ in workload.arrivals]
    assert times == sorted(times) and len(times) == 120 and times[1] - times[0] == pytest.approx(15.0)


def test_a_warmup_plays_the_traces_tail_first_and_scoring_starts_after_it() -> None:
    plain = natural(TRACE, compress=2.0, keep_every=3)
    warmed = natural(TRACE, compress=2.0, keep_every=3, warmup_share=0.25)
    span = TRACE[-1].t_s / 2.0 + 1.0
    warmup = [t for t, _ in warmed.arrivals if t < warmed.scored_from_s]
    scored = [(t, n) for t, n in warmed.arrivals if t >= warmed.scored_from_s]
    assert warmed.warmup_end_s == pytest.approx(span * 0.25) and plain.scored_from_s == 0.0
    # The scored part is the plain workload, shifted by the warm-up.
    assert [n for _, n in scored] == [n for _, n in plain.arrivals]
    assert [t - span * 0.25 for t, _ in scored] == pytest.approx([t for t, _ in plain.arrivals])
    # The warm-up is the trace's last quarter, with its own gaps: traffic already flowing at the start.
    tail = [t for t, _ in plain.arrivals if t >= span * 0.75]
    assert len(warmup) == len(tail) > 10
    assert [b - a for a, b in pairwise(warmup)] == pytest.approx([b - a for a, b in pairwise(tail)])


def lone(at_s: float, end_s: float) -> Workload:
    return Workload("lone", [(at_s, 4)], end_s, {})


def test_always_on_never_cold_starts_and_scale_to_zero_pays_one_for_a_lone_request() -> None:
    on = simulate_policy(lone(500, 1000), AutoscalingSettings(min_replicas=1), CAL)
    zero = simulate_policy(
        lone(500, 1000), AutoscalingSettings(min_replicas=0, downscale_to_zero_delay_s=30), CAL
    )
    assert on.cold_starts == 0 and on.ttft_s == [pytest.approx(0.1)]
    assert zero.cold_starts == 1 and zero.ttft_s[0] == pytest.approx(20.1, abs=0.6)
    assert zero.replica_seconds < on.replica_seconds / 5


def test_the_scheduled_warmer_makes_an_in_window_arrival_warm_in_the_simulator() -> None:
    workload = business_days(TRACE, BusinessDays(days=2, train_days=1, keep_every=360))
    compared = policies(workload, 2.0, 9, 17)
    warmed = simulate_policy(
        workload, compared["slo+scheduled"], CAL, freeze_learning_at_s=workload.train_end_s
    )
    cold = simulate_policy(
        workload, compared["surge-slo"], CAL, freeze_learning_at_s=workload.train_end_s, idle_dt_s=10
    )
    in_window = [t for t, _ in workload.arrivals if any(a <= t < b for a, b in workload.windows)]
    assert len(in_window) == 2
    assert warmed.scored_ttft_s and max(warmed.scored_ttft_s) < 2.0
    assert cold.busy_starts_scored >= 1 and cold.warm_hits_scored == 0
