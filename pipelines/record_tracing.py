"""Traces through the consumers: a record produced with a `traceparent` header continues that trace.

The loop hands the sink whole batches, and one batch may hold records of many traces (or none). A batch
that holds traced records is written under one consumer span whose parent is the first traced record's
context and which links to the others' (OpenTelemetry's messaging conventions for batch processing); the
sink's own spans (chunk + embed, index write, or the HTTP call to the app, which continues the trace in
the gateway) are its children. Untraced batches, and every batch when tracing is off, cost one dict
lookup per record.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from kafka.consumer.fetcher import ConsumerRecord
from opentelemetry.trace import Span, SpanKind

from surge_core import tracing

# Carriers of records decoded but not yet written (a batch retried record by record needs them again);
# beyond this many the oldest are forgotten: a revoked partition's records are never written here.
MAX_REMEMBERED = 10_000


class RecordTraces:
    """Remembers each decoded record's trace context by (partition, offset); opens the batch's span."""

    def __init__(self, stage: str, topic: str) -> None:
        self.stage = stage
        self.topic = topic
        self._carriers: dict[tuple[int, int], tracing.Carrier] = {}

    def remember(self, message: ConsumerRecord) -> None:
        if not tracing.enabled():
            return
        found = tracing.carrier_from_kafka_headers(message.headers)
        if found:
            self._carriers[(message.partition, message.offset)] = found
            while len(self._carriers) > MAX_REMEMBERED:
                del self._carriers[next(iter(self._carriers))]

    def batch_span(
        self, positions: Sequence[tuple[int, int]], **attributes: Any
    ) -> AbstractContextManager[Span | None]:
        """The span to write a batch under; a no-op block when none of its records is traced."""
        carriers = [c for c in (self._carriers.get(p) for p in positions) if c]
        if not carriers:
            return nullcontext()
        links = [link for c in carriers[1:] if (link := tracing.link_to(c)) is not None]
        return tracing.span(
            f"{self.stage}.process",
            parent=carriers[0],
            kind=SpanKind.CONSUMER,
            links=links,
            attributes={
                tracing.STAGE: self.stage,
                "messaging.system": "kafka",
                "messaging.destination.name": self.topic,
                "messaging.batch.message_count": len(positions),
                "surge.traced_records": len(carriers),
                **attributes,
            },
        )

    def forget(self, positions: Sequence[tuple[int, int]]) -> None:
        for position in positions:
            self._carriers.pop(position, None)
