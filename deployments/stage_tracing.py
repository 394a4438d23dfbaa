"""Spans of the Serve replicas: each stage's span continues the carrier its caller passed explicitly.

A stage method takes `trace_context: dict[str, str] | None` (W3C `traceparent` + baggage from
`surge_core.tracing.carrier()` on the gateway side) and runs inside `stage_span(...)`, which names the
stage, the replica and the model. Serve's own request context does not carry a trace, and an explicit
argument works the same for a streamed call, a batched call and a call from a test.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import cache
from typing import Any

from opentelemetry.trace import INVALID_SPAN, Span, SpanKind

from surge_core import tracing
from surge_core.model_version import model_and_version


@cache
def replica_name() -> str | None:
    """This process's Serve replica id (None outside a replica): which replica served a span."""
    try:
        from ray import serve

        return str(serve.get_replica_context().replica_id.unique_id)
    except Exception:
        return None


def stage_attributes(stage: str, served_model: str | None = None, **extra: Any) -> dict[str, Any]:
    model, version = model_and_version(served_model) if served_model else (None, None)
    return {
        tracing.STAGE: stage,
        tracing.REPLICA: replica_name(),
        tracing.MODEL: model,
        tracing.VERSION: version,
        **extra,
    }


def start_stage_span(
    stage: str, name: str, trace_context: Mapping[str, str] | None, served_model: str | None = None
) -> Span:
    """A replica's span the caller ends (a streamed generation outlives any one block)."""
    if not tracing.enabled():
        return INVALID_SPAN
    return tracing.start_span(
        name, parent=trace_context, kind=SpanKind.SERVER, attributes=stage_attributes(stage, served_model)
    )


@contextmanager
def stage_span(
    stage: str, name: str, trace_context: Mapping[str, str] | None, served_model: str | None = None
) -> Iterator[Span]:
    """The replica's span around one call, current inside the block."""
    if not tracing.enabled():
        yield INVALID_SPAN
        return
    with tracing.span(
        name, parent=trace_context, kind=SpanKind.SERVER, attributes=stage_attributes(stage, served_model)
    ) as span:
        yield span
