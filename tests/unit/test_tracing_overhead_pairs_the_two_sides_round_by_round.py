"""The tracing benchmark's arithmetic (benchmarks.tracing_overhead.overhead) on recorded blocks: p50 latency
and server CPU per request of each side, their on/off ratios, and the per-round ratios."""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks.tracing_overhead import overhead


def block(r: int, side: str, latencies: list[float], cpu_s: float | None, cold: int = 0) -> dict[str, Any]:
    return {"round": r, "side": side, "latencies_s": latencies, "cold": cold, "cpu": {"total_cpu_s": cpu_s}}


BLOCKS = [
    block(0, "off", [0.30, 0.32, 0.34], 0.30),
    block(0, "on", [0.33, 0.35, 0.37], 0.36),
    block(1, "on", [0.31, 0.33, 0.35], 0.33),
    block(1, "off", [0.30, 0.30, 0.30], 0.27, cold=1),
]


def test_the_headline_ratio_is_on_p50_over_off_p50_of_all_requests() -> None:
    figures = overhead(BLOCKS)
    assert figures["sides"]["off"]["latency_ms"]["p50"] == pytest.approx(300.0)
    assert figures["sides"]["on"]["latency_ms"]["p50"] == pytest.approx(340.0)
    assert figures["latency_p50_ratio"] == pytest.approx(340 / 300, abs=1e-3)


def test_cpu_per_request_counts_every_request_sent_cold_ones_included() -> None:
    sides = overhead(BLOCKS)["sides"]
    assert sides["off"]["requests"] == 7 and sides["off"]["left_out_cold"] == 1
    assert sides["off"]["cpu_ms_per_request"] == pytest.approx(1000 * 0.57 / 7, abs=0.01)
    assert sides["on"]["cpu_ms_per_request"] == pytest.approx(1000 * 0.69 / 6, abs=0.01)
    assert overhead(BLOCKS)["cpu_per_request_ratio"] == pytest.approx((0.69 / 6) / (0.57 / 7), abs=1e-3)


def test_each_round_pairs_its_own_two_blocks() -> None:
    per_round = overhead(BLOCKS)["latency_p50_ratio_per_round"]
    assert per_round["rounds"] == 2
    assert per_round["min"] == pytest.approx(0.35 / 0.32, abs=1e-3)  # round 0: on 0.35 / off 0.32
    assert per_round["max"] == pytest.approx(0.33 / 0.30, abs=1e-3)  # round 1: on 0.33 / off 0.30


def test_without_visible_server_processes_there_is_no_cpu_ratio() -> None:
    blind = [{**b, "cpu": {"total_cpu_s": None}} for b in BLOCKS]
    assert overhead(blind)["cpu_per_request_ratio"] is None
    assert overhead(blind)["latency_p50_ratio"] is not None
