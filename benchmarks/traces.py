"""Public Azure LLM inference traces: load them (arrival times relative to the first request, token counts).

The traces (benchmarks/data/, CC-BY 4.0, Patel et al., "Splitwise", ISCA 2024) are an hour of real
arrivals each, too dense for scale-to-zero to matter and with token counts far beyond a CPU:
`benchmarks.elastic_workloads` builds the declared workloads from them (and scales the token counts).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

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
