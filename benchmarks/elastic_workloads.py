"""Workloads for the elasticity comparison, built from the real Azure arrivals and declared before tuning.

Every workload is a list of `(t_s, max_tokens)` arrivals (seconds from a Monday 00:00 UTC, so schedule
windows land on real weekdays) plus the facts a report must state. Token counts are scaled as in
`benchmarks.traces` (x 0.125, capped).

1. `natural`: the trace's own arrivals in their order and gaps, time-compressed by `compress` (replay time =
   trace time / compress) and thinned to every `keep_every`-th request, repeated `repeats` times. Dense:
   scale to zero should save little, and must not lose SLO against always-on.
2. `business_days`: `days` days from a Monday; on weekdays a traffic window [`open_h`, `close_h`) holds
   the trace's arrivals stretched to the window's length and thinned; outside windows (nights, weekends),
   `stray_share` of the volume (at least 0.5 %) arrives uniformly at random (seeded). The first `train_days`
   days train the learned warmer, the rest score it; the scheduled warmer is given the window times.
3. `code`: the code trace (`AzureLLMInferenceTrace_code.csv`) through `natural`, a second shape.

Worked example (2): the trace hour has 19,365 requests; a window of 8 h stretches it 8x (0.67 req/s), every
40th kept -> 484 requests per weekday; stray_share 0.01 over 7 days of 5 weekdays -> 24 strays in total.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Any

from benchmarks.traces import TraceRequest

DAY_S = 86_400.0
MONDAY_EPOCH_S = 1_764_547_200.0  # 2025-12-01 00:00 UTC, a Monday
MIN_STRAY_SHARE = 0.005


def tokens(request: TraceRequest, token_scale: float = 0.125, cap: int = 32) -> int:
    return max(1, min(cap, round(request.generated_tokens * token_scale)))


@dataclass(frozen=True)
class Workload:
    name: str
    arrivals: list[tuple[float, int]]
    end_s: float
    facts: dict[str, Any]
    train_end_s: float | None = None
    windows: tuple[tuple[float, float], ...] = ()
    # Arrivals before this bring every policy to the state it would be in mid-service; never scored.
    warmup_end_s: float | None = None

    @property
    def scored_from_s(self) -> float:
        """Where scoring starts: after the training days, or after the warm-up (0: the whole workload)."""
        return max(self.train_end_s or 0.0, self.warmup_end_s or 0.0)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "requests": len(self.arrivals),
            "duration_s": self.end_s,
            **self.facts,
            **({"train_end_s": self.train_end_s} if self.train_end_s is not None else {}),
            **({"warmup_end_s": self.warmup_end_s} if self.warmup_end_s is not None else {}),
        }


def natural(
    trace: list[TraceRequest],
    compress: float,
    keep_every: int,
    repeats: int = 1,
    name: str = "natural",
    warmup_share: float = 0.0,
) -> Workload:
    """`warmup_share` > 0 plays the trace's last `warmup_share` of its span first, as the traffic that came
    before (unscored): the trace starts with requests already flowing, so a policy deployed at zero would
    otherwise be scored on a cold start that a service in use never has, while always-on is deployed warm.
    E.g. a one-hour trace with 0.25: its last 15 minutes, then the whole hour, scored from minute 15."""
    if compress <= 0 or keep_every < 1 or repeats < 1 or not 0 <= warmup_share < 1:
        raise ValueError("compress must be > 0, keep_every and repeats >= 1, 0 <= warmup_share < 1")
    kept = [r for i, r in enumerate(trace) if i % keep_every == 0]
    span = trace[-1].t_s / compress + 1.0
    warmup = span * warmup_share
    before = [
        (round(r.t_s / compress - (span - warmup), 3), tokens(r))
        for r in kept
        if r.t_s / compress >= span - warmup
    ]
    arrivals = before + [
        (round(warmup + r.t_s / compress + k * span, 3), tokens(r)) for k in range(repeats) for r in kept
    ]
    facts = {"compress": compress, "keep_every": keep_every, "repeats": repeats, "warmup_share": warmup_share}
    return Workload(
        name, arrivals, warmup + span * repeats + 60.0, facts, warmup_end_s=warmup if warmup else None
    )


@dataclass(frozen=True)
class BusinessDays:
    days: int = 14
    train_days: int = 7
    open_h: float = 9.0
    close_h: float = 17.0
    keep_every: int = 40
    stray_share: float = 0.01
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.train_days < self.days:
            raise ValueError("need 0 < train_days < days")
        if not 0 <= self.open_h < self.close_h <= 24:
            raise ValueError("need 0 <= open_h < close_h <= 24")
        if self.stray_share < MIN_STRAY_SHARE:
            raise ValueError(f"stray_share must be >= {MIN_STRAY_SHARE} (strays are part of the workload)")


def business_days(trace: list[TraceRequest], plan: BusinessDays) -> Workload:
    window_s = (plan.close_h - plan.open_h) * 3600.0
    stretch = window_s / (trace[-1].t_s + 1.0)
    arrivals: list[tuple[float, int]] = []
    windows: list[tuple[float, float]] = []
    for day in range(plan.days):
        if day % 7 >= 5:
            continue
        opens = day * DAY_S + plan.open_h * 3600.0
        windows.append((opens, opens + window_s))
        arrivals += [
            (round(opens + r.t_s * stretch, 3), tokens(r))
            for i, r in enumerate(trace)
            if i % plan.keep_every == 0
        ]
    rng = random.Random(plan.seed)
    strays = max(1, round(len(arrivals) * plan.stray_share / (1 - plan.stray_share)))
    end_s = plan.days * DAY_S
    placed = 0
    while placed < strays:
        t = rng.uniform(0, end_s)
        if any(a <= t < b for a, b in windows):
            continue
        arrivals.append((round(t, 3), tokens(rng.choice(trace))))
        placed += 1
    arrivals.sort()
    facts = {**asdict(plan), "strays": strays, "stray_share_actual": round(strays / len(arrivals), 4)}
    return Workload("business_days", arrivals, end_s, facts, plan.train_days * DAY_S, tuple(windows))
