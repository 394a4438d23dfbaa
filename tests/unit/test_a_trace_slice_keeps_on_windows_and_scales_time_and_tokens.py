"""The cost replay's trace slice: on/off windows, time and token scaling, and replica-seconds from polls.

Every benchmark module is imported here too, so a merge that removes a name one of them imports (as the
measured trace replay's rewrite did to the cost replay's carving) fails in the unit tests, not only when
someone runs the benchmark."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from benchmarks.trace_slices import ReplayPlan, carve, prompt, replica_seconds
from benchmarks.traces import TraceRequest

BENCHMARKS = sorted(
    p.stem for p in (Path(__file__).resolve().parents[2] / "benchmarks").glob("*.py") if p.stem != "__init__"
)


def test_carving_keeps_only_on_windows_and_scales_time_and_tokens() -> None:
    trace = [TraceRequest(t, 1000, 400) for t in range(0, 100)]
    plan = ReplayPlan(duration_s=40, time_scale=0.5, on_s=10, off_s=10, keep_every=2, max_tokens_cap=32)
    schedule = carve(trace, plan)
    assert all(r.t_s < 40 and r.t_s % 20 < 10 for r in schedule)
    assert [r.t_s for r in schedule][:3] == [0.0, 1.0, 2.0]  # every 2nd of requests 0.5 s apart
    assert all(r.max_tokens == 32 and r.prompt_words == 48 for r in schedule)
    assert len(prompt(schedule[0]).split()) == 3 + 48  # "Tell me about" + 48 words


def test_replica_seconds_integrate_the_polled_counts() -> None:
    assert replica_seconds([(0.0, {"A": 1}), (2.0, {"A": 3})], 5.0) == {"A": 11.0}


@pytest.mark.parametrize("module", BENCHMARKS)
def test_every_benchmark_module_imports(module: str) -> None:
    importlib.import_module(f"benchmarks.{module}")
