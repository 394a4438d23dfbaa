"""`surge produce` and tracing: with the OTEL_* environment on, every record is sent under its own producer
span and carries that span's `traceparent` header (the consumers continue it); off, no span and no header.
Spans are collected with the SDK's in-memory exporter."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from pipelines.producer import produce_records
from surge_core import tracing
from surge_core.records import DocumentUpsert
from surge_core.topics import DOCUMENTS


class CapturingSender:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, tracing.KafkaHeaders | None]] = []

    def send(self, topic: str, key: bytes, value: bytes, headers: tracing.KafkaHeaders | None = None) -> None:
        self.sent.append((topic, key, headers))

    def flush(self, timeout_s: float) -> list[str]:
        return []

    def close(self) -> None:
        return None


DOCS = [DocumentUpsert(doc_id=f"kb/{i}", tenant="acme", text=f"document {i}") for i in range(2)]


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracing.configure_tracing("surge-producer", exporter=exporter)
    yield exporter
    tracing.shutdown_tracing()


def test_each_produced_record_carries_the_traceparent_of_its_own_producer_span(
    spans: InMemorySpanExporter,
) -> None:
    sender = CapturingSender()
    produce_records(sender, DOCUMENTS, DOCS)
    finished = spans.get_finished_spans()
    assert [s.name for s in finished] == ["documents publish", "documents publish"]
    assert all(s.kind == SpanKind.PRODUCER for s in finished)
    assert len({s.context.trace_id for s in finished}) == 2  # one trace per record
    for (topic, key, headers), span in zip(sender.sent, finished, strict=True):
        carrier = tracing.carrier_from_kafka_headers(headers)
        trace_id, span_id = carrier["traceparent"].split("-")[1:3]
        assert (trace_id, span_id) == (
            format(span.context.trace_id, "032x"),
            format(span.context.span_id, "016x"),
        )
        assert (span.attributes or {})["messaging.destination.name"] == topic == "documents"
        assert (span.attributes or {})["messaging.kafka.message.key"] == key.decode()


def test_with_tracing_off_records_are_sent_without_headers() -> None:
    tracing.shutdown_tracing()
    sender = CapturingSender()
    produce_records(sender, DOCUMENTS, DOCS)
    assert [headers for _, _, headers in sender.sent] == [None, None]
