"""A time-compressed slice of an Azure trace as a replay schedule with on/off windows (the cost replay's).

The measured elasticity replay takes its declared workloads from `benchmarks.elastic_workloads`; the cost
replay (`benchmarks/cost_replay.py`) needs only a short slice with idle gaps in which stages may scale to
zero. A `ReplayPlan` says exactly how the slice was derived, so every result can state its scaling:

    replay time = (trace time - start_s) * time_scale, kept only inside "on" windows of `on_s` seconds
    followed by `off_s` seconds of silence, then every `keep_every`-th request.

Worked example: start_s=0, time_scale=0.5, on_s=30, off_s=30, keep_every=2 turns the first 120 s of the
trace into 60 s of replay in which requests arrive during 0-30 s (every second one kept) and none during
30-60 s, the idle gap in which stages may scale to zero.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from benchmarks.traces import TraceRequest

WORDS = ["river", "model", "engine", "batch", "token", "vector", "signal", "window", "replica", "answer"]


@dataclass(frozen=True)
class ReplayPlan:
    """How a trace becomes a replay schedule (see the module docstring for the formula)."""

    start_s: float = 0.0
    duration_s: float = 120.0  # of replay time
    time_scale: float = 1.0
    on_s: float = 30.0
    off_s: float = 30.0
    keep_every: int = 1
    token_scale: float = 0.125
    max_tokens_cap: int = 32
    prompt_words_cap: int = 48

    def __post_init__(self) -> None:
        if self.time_scale <= 0:
            raise ValueError(f"time_scale must be > 0, got {self.time_scale}")
        if self.duration_s <= 0 or self.on_s <= 0 or self.off_s < 0:
            raise ValueError("duration_s and on_s must be > 0 and off_s >= 0")
        if self.keep_every < 1:
            raise ValueError(f"keep_every must be >= 1, got {self.keep_every}")
        if not 0 < self.token_scale <= 1:
            raise ValueError(f"token_scale must lie in (0, 1], got {self.token_scale}")

    def describe(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ReplayRequest:
    """One request to send: at `t_s` into the replay, with scaled-down token counts."""

    t_s: float
    prompt_words: int
    max_tokens: int
    trace_context_tokens: int
    trace_generated_tokens: int


def carve(trace: list[TraceRequest], plan: ReplayPlan) -> list[ReplayRequest]:
    """The replay schedule `plan` derives from `trace` (see the module docstring)."""
    period = plan.on_s + plan.off_s
    out: list[ReplayRequest] = []
    kept = 0
    for request in trace:
        if request.t_s < plan.start_s:
            continue
        t = (request.t_s - plan.start_s) * plan.time_scale
        if t >= plan.duration_s:
            break
        if t % period >= plan.on_s:
            continue
        kept += 1
        if (kept - 1) % plan.keep_every:
            continue
        out.append(
            ReplayRequest(
                t_s=round(t, 4),
                prompt_words=max(
                    1, min(plan.prompt_words_cap, round(request.context_tokens * plan.token_scale))
                ),
                max_tokens=max(
                    1, min(plan.max_tokens_cap, round(request.generated_tokens * plan.token_scale))
                ),
                trace_context_tokens=request.context_tokens,
                trace_generated_tokens=request.generated_tokens,
            )
        )
    return out


def prompt(request: ReplayRequest) -> str:
    """A question of the request's (scaled) length: `prompt_words` words after 'Tell me about'."""
    return "Tell me about " + " ".join(WORDS[i % len(WORDS)] for i in range(request.prompt_words))


def replica_seconds(polls: list[tuple[float, dict[str, int]]], end_s: float) -> dict[str, float]:
    """Integral of replica counts over time (a step function between polls), per deployment: e.g. polls
    [(0, {"A": 1}), (2, {"A": 3})] up to 5 s -> A: 1 x 2 + 3 x 3 = 11 replica-seconds."""
    totals: dict[str, float] = {}
    for (t, counts), nxt in zip(polls, [*polls[1:], (end_s, {})], strict=True):
        for stage, n in counts.items():
            totals[stage] = totals.get(stage, 0.0) + n * max(0.0, nxt[0] - t)
    return {k: round(v, 1) for k, v in totals.items()}
