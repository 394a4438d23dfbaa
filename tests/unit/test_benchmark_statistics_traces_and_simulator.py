"""Benchmark building blocks: statistics, result files, trace carving and the autoscaling simulator."""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

import pytest

from benchmarks import _harness as h
from benchmarks._surge import ALWAYS_ON, FAST_ZERO
from benchmarks.autoscale_sim import Calibration, simulate
from benchmarks.traces import DEFAULT_TRACE, load_trace
from deployments.settings import AutoscalingSettings


def test_percentile_interpolates_like_numpy() -> None:
    assert h.percentile([1, 2, 3, 4], 50) == 2.5
    assert h.percentile([5], 99) == 5
    assert h.percentile([1, 2, 3, 4, 5], 100) == 5
    with pytest.raises(ValueError):
        h.percentile([], 50)


def test_summary_reports_spread_in_the_requested_unit() -> None:
    summary = h.summarize([0.001, 0.002, 0.003, 0.004], scale=1000)
    assert summary["p50"] == 2.5 and summary["min"] == 1 and summary["max"] == 4 and summary["n"] == 4
    assert h.across_rounds([3.0, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0, "rounds": 3}


def test_results_file_is_well_formed_json_with_machine_facts(tmp_path: Path) -> None:
    headline = h.Headline.ratio("x", 1.0, 1.0, goal=None, better="lower", baseline="itself")
    results = h.Results(
        "unit_check", "a check", {"n": 1}, {"x": {"p50": 1.0}}, ["a", "b"], [["row", 1.5]], headline=headline
    )
    path = h.write_results(results, tmp_path, time.time())
    doc = json.loads(path.read_text())
    assert doc["benchmark"] == "unit_check" and doc["figures"] == {"x": {"p50": 1.0}}
    assert doc["machine"]["cpu_count"] and doc["machine"]["versions"]["ray"]
    assert "| row | 1.5 |" in h.markdown_table(["a", "b"], [["row", 1.5]])


def test_the_azure_trace_loads_with_relative_times() -> None:
    if not DEFAULT_TRACE.exists():
        pytest.skip(f"{DEFAULT_TRACE} not present")
    trace = load_trace(DEFAULT_TRACE)
    assert trace[0].t_s == 0 and len(trace) > 10_000
    assert all(a.t_s <= b.t_s for a, b in itertools.pairwise(trace))


def test_simulated_cold_request_waits_for_the_replica_and_scales_back_to_zero() -> None:
    result = simulate(
        [(0.0, 1)],
        AutoscalingSettings.model_validate(FAST_ZERO),
        Calibration(cold_start_s=10, ttft_warm_s=2, per_token_s=0),
        40,
    )
    assert result.cold_starts == 1
    assert result.ttft_s == [pytest.approx(12, abs=0.2)]
    assert result.timeline[1][-1] == 0  # back at zero by the end
    assert 14 < result.replica_seconds < 25


def test_scale_to_zero_costs_less_than_always_on_for_bursty_traffic_but_misses_more_slo() -> None:
    bursts = [(t + i * 0.5, 8) for t in (0, 100, 200) for i in range(10)]
    calibration = Calibration(cold_start_s=5, ttft_warm_s=0.2, per_token_s=0.05)
    zero = simulate(bursts, AutoscalingSettings.model_validate(FAST_ZERO), calibration, 300)
    warm = simulate(bursts, AutoscalingSettings.model_validate(ALWAYS_ON), calibration, 300)
    assert zero.replica_seconds < warm.replica_seconds / 2
    assert zero.cold_starts == 3 and warm.cold_starts == 0
    assert zero.slo_share(1.0) < warm.slo_share(1.0) == 1.0
