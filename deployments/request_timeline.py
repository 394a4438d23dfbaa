"""The wall-clock marks of one request, returned to clients as `surge.timings` (seconds since arrival)."""

from __future__ import annotations

import time

from opentelemetry.trace import Span

from surge_core import tracing


class Timeline:
    """Marks such as `embedded`, `retrieved`, `first_token`, `generated` and `<stage>_cold_start_s`."""

    def __init__(self) -> None:
        self.arrived = time.time()
        self.marks: dict[str, float] = {}
        self.query_embedding: list[float] | None = None
        # The request's span (the gateway's), for what is learnt after the handler returned (tokens).
        self.span: Span = tracing.current_span()
        # Seconds spent waiting on each stage (embedder, retriever, llm): what the request is charged for.
        self.stage_seconds: dict[str, float] = {}

    def mark(self, name: str) -> None:
        self.marks[name] = round(time.time() - self.arrived, 4)

    def add_stage_seconds(self, stage: str, seconds: float) -> None:
        self.stage_seconds[stage] = self.stage_seconds.get(stage, 0.0) + max(0.0, seconds)

    def since_arrival(self, name: str, at: float) -> None:
        """Record an absolute time (e.g. when a replica became ready) relative to the arrival."""
        self.marks[name] = round(at - self.arrived, 4)
