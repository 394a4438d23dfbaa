"""What `benchmarks.trace_replay` computes from one measured replay: pure functions of recorded inputs.

Inputs per policy (one Serve application each): `polls`, `[(t_s, total_replicas, running_replicas)]` taken
every 0.5 s from `serve.status()` (every replica Serve holds, starting or stopping included, is paid for;
`running` is what can serve), and `outcomes`, one dict per request: `t_s` (when it was sent, from the
replay's start), `ttft_s` (None if it failed), `total_s`, `error`. Everything is computed over a span
`[start_s, end_s)` (the held-out days, or the whole replay).

- replica-seconds: the step integral of `total` over the span;
- SLO attainment: requests in the span whose TTFT <= the SLO, over all requests in the span (a failed
  request is a miss);
- cold starts: 0 -> >= 1 transitions of `running` inside the span (not of `total`: a replica stopping while its
  successor starts keeps `total` above zero, yet nothing can serve in between; Serve's default restarted
  this way 8 times in a natural-trace round whose `total` left zero once);
- idle warm seconds: `running` x time while no request of that policy was in flight;
- warm hits: of the requests that start a busy period (none of that policy's requests in flight when it was
  sent), the share that found a running replica (the last poll at or before it said running >= 1).
Worked example: polls (0, 0, 0), (1, 1, 0), (2, 1, 1), (4, 0, 0) to end 5 -> 3.0 replica-seconds, 1 cold start.
"""

from __future__ import annotations

import bisect
import itertools
import statistics
from collections.abc import Sequence
from typing import Any

Poll = tuple[float, int, int]


def _clipped_steps(polls: Sequence[Poll], start_s: float, end_s: float) -> list[tuple[float, float, Poll]]:
    """(from, to, poll) for each poll's step, clipped to the span."""
    steps = []
    for poll, nxt in zip(polls, [*polls[1:], (end_s, 0, 0)], strict=True):
        lo, hi = max(poll[0], start_s), min(nxt[0], end_s)
        if hi > lo:
            steps.append((lo, hi, poll))
    return steps


def replica_seconds(polls: Sequence[Poll], start_s: float, end_s: float) -> float:
    return sum((hi - lo) * poll[1] for lo, hi, poll in _clipped_steps(polls, start_s, end_s))


def cold_starts(polls: Sequence[Poll], start_s: float, end_s: float) -> int:
    starts = 0
    for before, after in itertools.pairwise(polls):
        if start_s <= after[0] < end_s and before[2] == 0 and after[2] > 0:
            starts += 1
    return starts


def _in_flight(outcomes: Sequence[dict[str, Any]]) -> list[tuple[float, float]]:
    return sorted((o["t_s"], o["t_s"] + (o.get("total_s") or 0.0)) for o in outcomes)


def _busy_at(intervals: Sequence[tuple[float, float]], t: float) -> bool:
    return any(a <= t < b for a, b in intervals)


def idle_warm_seconds(
    polls: Sequence[Poll], outcomes: Sequence[dict[str, Any]], start_s: float, end_s: float
) -> float:
    intervals = _in_flight(outcomes)
    return sum(
        (hi - lo) * poll[2]
        for lo, hi, poll in _clipped_steps(polls, start_s, end_s)
        if poll[2] and not _busy_at(intervals, lo)
    )


def warm_hits(
    polls: Sequence[Poll], outcomes: Sequence[dict[str, Any]], start_s: float, end_s: float
) -> tuple[int, int]:
    """(hits, busy-period starts) in the span."""
    intervals = _in_flight(outcomes)
    times = [p[0] for p in polls]
    hits = starts = 0
    for o in outcomes:
        t = o["t_s"]
        if not start_s <= t < end_s or any(a < t < b for a, b in intervals if a != t):
            continue
        starts += 1
        index = bisect.bisect_right(times, t) - 1
        hits += index >= 0 and polls[index][2] >= 1
    return hits, starts


def summarize(
    polls: Sequence[Poll], outcomes: Sequence[dict[str, Any]], start_s: float, end_s: float, slo_s: float
) -> dict[str, Any]:
    mine = [o for o in outcomes if start_s <= o["t_s"] < end_s]
    ttfts = [o["ttft_s"] for o in mine if o.get("ttft_s") is not None]
    hits, starts = warm_hits(polls, outcomes, start_s, end_s)
    return {
        "requests": len(mine),
        "errors": len(mine) - len(ttfts),
        "error_samples": sorted({str(o["error"]) for o in mine if o.get("error")})[:3],
        "replica_seconds": round(replica_seconds(polls, start_s, end_s), 1),
        "slo_attainment": round(sum(t <= slo_s for t in ttfts) / len(mine), 4) if mine else None,
        "ttft_p50_s": round(statistics.median(ttfts), 3) if ttfts else None,
        "ttft_max_s": round(max(ttfts), 3) if ttfts else None,
        "cold_starts": cold_starts(polls, start_s, end_s),
        "idle_warm_s": round(idle_warm_seconds(polls, outcomes, start_s, end_s), 1),
        "warm_hit_rate": round(hits / starts, 4) if starts else None,
        "busy_periods": starts,
    }


def with_ratios(
    summaries: dict[str, dict[str, Any]], baseline: str = "always-on"
) -> dict[str, dict[str, Any]]:
    """Each policy's summary plus `replica_seconds_vs_always_on` (its replica-seconds / the baseline's)."""
    base = summaries[baseline]["replica_seconds"]
    return {
        name: {**s, "replica_seconds_vs_always_on": round(s["replica_seconds"] / base, 4) if base else None}
        for name, s in summaries.items()
    }


def across_rounds(rounds: Sequence[dict[str, Any]], key: str) -> dict[str, float] | None:
    """median / min / max of one figure over rounds (None where a round has no value)."""
    values = [r[key] for r in rounds if r.get(key) is not None]
    if not values:
        return None
    return {
        "median": round(statistics.median(values), 4),
        "min": round(min(values), 4),
        "max": round(max(values), 4),
        "rounds": len(values),
    }


def simulator_error(
    measured: dict[str, dict[str, Any]], simulated: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """Mean absolute error, over the policies both have, of replica-seconds / always-on and SLO attainment."""
    names = [n for n in measured if n in simulated]
    ratio_errors = [
        abs(simulated[n]["replica_seconds_vs_always_on"] - measured[n]["replica_seconds_vs_always_on"])
        for n in names
    ]
    slo_errors = [
        abs(simulated[n]["slo_attainment"] - measured[n]["slo_attainment"])
        for n in names
        if measured[n]["slo_attainment"] is not None
    ]
    return {
        "policies": names,
        "replica_seconds_ratio_mae": round(statistics.fmean(ratio_errors), 4) if ratio_errors else None,
        "slo_attainment_mae": round(statistics.fmean(slo_errors), 4) if slo_errors else None,
        "per_policy": {
            n: {
                "replica_seconds_ratio": [
                    measured[n]["replica_seconds_vs_always_on"],
                    simulated[n]["replica_seconds_vs_always_on"],
                ],
                "slo_attainment": [measured[n]["slo_attainment"], simulated[n]["slo_attainment"]],
            }
            for n in names
        },
    }


def cold_start_s(
    outcomes: Sequence[dict[str, Any]], polls: Sequence[Poll], warm_ttft_s: float
) -> float | None:
    """Median extra TTFT of requests sent while no replica was held (the replica had to start for them)."""
    times = [p[0] for p in polls]
    extra = []
    for o in outcomes:
        index = bisect.bisect_right(times, o["t_s"]) - 1
        if index >= 0 and polls[index][1] == 0 and o.get("ttft_s") is not None:
            extra.append(o["ttft_s"] - warm_ttft_s)
    return round(statistics.median(extra), 3) if extra else None


def warm_ttft_s(outcomes: Sequence[dict[str, Any]], polls: Sequence[Poll]) -> float | None:
    """Median TTFT of requests sent while a replica was running."""
    times = [p[0] for p in polls]
    warm = []
    for o in outcomes:
        index = bisect.bisect_right(times, o["t_s"]) - 1
        if index >= 0 and polls[index][2] >= 1 and o.get("ttft_s") is not None:
            warm.append(o["ttft_s"])
    return round(statistics.median(warm), 4) if warm else None
