"""Public Azure LLM inference traces: load them, carve a replayable schedule, scale the token counts.

The traces (benchmarks/data/, CC-BY 4.0, Patel et al., "Splitwise", ISCA 2024) are an hour of real
arrivals each, too dense for scale-to-zero to matter and with token counts far beyond a CPU. A
`ReplayPlan` says exactly how a schedule was derived, so every result can state its file and scaling:

    replay time = (trace time - start_s) * time_scale, kept only inside "on" windows of `on_s` seconds
    followed by `off_s` seconds of silence, then every `keep_every`-th request.

Worked example: start_s=0, time_scale=0.5, on_s=30, off_s=30, keep_every=2 turns the first 120 s of the
trace into 60 s of replay in which requests arrive during 0-30 s (every second one kept) and none during
30-60 s, the idle gap in which stages may scale to zero.
"""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks._harness import REPO_ROOT

TRACES_DIR = REPO_ROOT / "benchmarks" / "data"  # shipped with the repository (see its README: CC-BY 4.0)
DEFAULT_TRACE = TRACES_DIR / "AzureLLMInferenceTrace_conv.csv"


@dataclass(frozen=True)
class TraceRequest:
    """One request: arrival (s since the first request), prompt and output tokens."""

    t_s: float
    context_tokens: int
    generated_tokens: int


def load_trace(path: Path) -> list[TraceRequest]:
    """Read a trace CSV (TIMESTAMP, ContextTokens, GeneratedTokens), times relative to the first row."""
    rows: list[tuple[datetime, int, int]] = []
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            stamp = row["TIMESTAMP"].strip()
            # Seven fractional digits (100 ns) in the file; Python parses at most six.
            head, _, frac = stamp.partition(".")
            rows.append(
                (
                    datetime.fromisoformat(f"{head}.{(frac + '000000')[:6]}"),
                    int(row["ContextTokens"]),
                    int(row["GeneratedTokens"]),
                )
            )
    if not rows:
        raise ValueError(f"{path} holds no requests")
    rows.sort(key=lambda r: r[0])
    first = rows[0][0]
    return [TraceRequest((t - first).total_seconds(), c, g) for t, c, g in rows]


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


def arrival_rate(
    schedule: list[ReplayRequest], bucket_s: float, duration_s: float
) -> tuple[list[float], list[float]]:
    """Requests per second in buckets of `bucket_s` (x = bucket start), for plots."""
    buckets = [0] * (int(duration_s // bucket_s) + 1)
    for request in schedule:
        buckets[min(len(buckets) - 1, int(request.t_s // bucket_s))] += 1
    return [i * bucket_s for i in range(len(buckets))], [n / bucket_s for n in buckets]
