"""Tracing (surge_core.tracing): off unless the OTEL_* environment asks; when on, one trace follows a request
through the gateway's span, the stage clients, the carriers they pass and the replicas' spans, and across
Kafka headers. Spans are collected with the SDK's in-memory exporter."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import INVALID_SPAN

from deployments.request_timeline import Timeline
from deployments.request_tracing import RequestSpan
from deployments.retriever import Retriever
from deployments.settings import RetrieverSettings
from deployments.stage_client import EmbedderClient, RetrieverClient, StageStatusBoard, StageWaits
from deployments.stage_tracing import stage_span
from surge_core import tracing

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_PARENT = "00f067aa0ba902b7"
TRACEPARENT = f"00-{CLIENT_TRACE}-{CLIENT_PARENT}-01"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracing.configure_tracing("surge-test", exporter=exporter)
    yield exporter
    tracing.shutdown_tracing()


def by_name(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    return {span.name: span for span in exporter.get_finished_spans()}


def parent_of(span: ReadableSpan) -> str | None:
    return format(span.parent.span_id, "016x") if span.parent else None


def span_id(span: ReadableSpan) -> str:
    return format(span.context.span_id, "016x")


# ------------------------------------------------------------------------------------------ configuration


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, []),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, ["otlp"]),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, ["otlp"]),
        ({"OTEL_TRACES_EXPORTER": "console"}, ["console"]),
        ({"OTEL_TRACES_EXPORTER": "otlp,console"}, ["otlp", "console"]),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, []),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, []),
    ],
)
def test_tracing_is_on_only_when_the_standard_otel_variables_ask(
    environ: dict[str, str], expected: list[str]
) -> None:
    assert tracing.exporter_names(environ) == expected


def test_an_unknown_exporter_name_fails_naming_the_variable() -> None:
    with pytest.raises(ValueError, match="OTEL_TRACES_EXPORTER"):
        tracing.exporter_names({"OTEL_TRACES_EXPORTER": "jaeger-thrift"})


def test_an_unknown_otlp_protocol_fails_naming_the_variable() -> None:
    with pytest.raises(ValueError, match="OTEL_EXPORTER_OTLP_PROTOCOL"):
        tracing.configure_tracing(
            "x",
            environ={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "thrift"},
        )


def test_only_otel_variables_are_passed_on_to_replicas_and_consumers() -> None:
    environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SERVICE_NAME": "s", "HOME": "/root"}
    assert tracing.otel_env(environ) == {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318",
        "OTEL_SERVICE_NAME": "s",
    }


def test_build_app_passes_otel_variables_to_every_replica_and_a_stage_env_wins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from deployments.app import with_tracing_env

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "surge")
    options = {
        "ray_actor_options": {"num_cpus": 1, "runtime_env": {"env_vars": {"OTEL_SERVICE_NAME": "mine"}}}
    }
    env = with_tracing_env(options)["ray_actor_options"]["runtime_env"]["env_vars"]
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://c:4318"
    assert env["OTEL_SERVICE_NAME"] == "mine"


def test_off_tracing_is_a_no_op_that_touches_no_context() -> None:
    tracing.shutdown_tracing()
    assert tracing.configure_tracing("x", environ={}) is False
    with tracing.span("anything", parent={"traceparent": TRACEPARENT}) as span:
        assert span is INVALID_SPAN
        assert tracing.carrier() == {}
    assert tracing.kafka_headers() == []
    assert RequestSpan("POST", "/v1/embeddings", {"traceparent": TRACEPARENT}).span is INVALID_SPAN


def test_off_tracing_costs_microseconds_per_span() -> None:
    tracing.shutdown_tracing()
    rounds = 20_000
    started = time.perf_counter()
    for _ in range(rounds):
        with tracing.span("x"):
            pass
        tracing.carrier()
    per_call_us = (time.perf_counter() - started) / rounds * 1e6
    # Generous bound for a loaded 2-core machine; a quiet one measures about 1 us for both calls.
    assert per_call_us < 20, per_call_us


# ------------------------------------------------------------------------------------------ one trace


def test_a_carrier_continues_the_callers_trace_in_another_process(spans: InMemorySpanExporter) -> None:
    with tracing.span("caller") as caller:
        carrier = tracing.carrier()
    assert set(carrier) >= {"traceparent"}
    with tracing.span("callee", parent=carrier):
        pass
    found = by_name(spans)
    assert found["callee"].context.trace_id == found["caller"].context.trace_id
    assert parent_of(found["callee"]) == span_id(found["caller"])
    assert caller is not INVALID_SPAN


def test_kafka_headers_carry_the_trace_and_bad_headers_are_ignored(spans: InMemorySpanExporter) -> None:
    with tracing.span("producer") as producer:
        headers = tracing.kafka_headers(tenant="acme")
    received = [*headers, ("traceparent-ish", b"x"), ("tracestate", b"\xff\xfe")]
    carrier = tracing.carrier_from_kafka_headers(received)
    assert carrier["traceparent"].split("-")[1] == format(producer.get_span_context().trace_id, "032x")
    assert "tracestate" not in carrier
    with tracing.span("consumer", parent=carrier):
        pass
    consumer = by_name(spans)["consumer"]
    assert parent_of(consumer) == span_id(by_name(spans)["producer"])
    assert consumer.attributes is not None and consumer.attributes[tracing.TENANT] == "acme"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    headers=st.lists(
        st.tuples(st.sampled_from(["traceparent", "tracestate", "baggage", "other"]), st.binary(max_size=80)),
        max_size=5,
    )
)
def test_untrusted_kafka_headers_never_break_a_record_they_only_lose_the_parent(
    spans: InMemorySpanExporter, headers: list[tuple[str, bytes]]
) -> None:
    with tracing.span("consumer", parent=tracing.carrier_from_kafka_headers(headers)) as span:
        assert span.get_span_context().is_valid


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(traceparent=st.text(max_size=80), baggage=st.text(max_size=80))
def test_untrusted_http_trace_headers_never_fail_a_request(
    spans: InMemorySpanExporter, traceparent: str, baggage: str
) -> None:
    request = RequestSpan("POST", "/v1/chat/completions", {"traceparent": traceparent, "baggage": baggage})
    request.admitted("acme", "alice")
    assert tracing.current_span() is request.span
    request.finish(200)
    assert tracing.current_span() is not request.span


def test_a_clients_traceparent_is_continued_but_its_baggage_is_not_believed(
    spans: InMemorySpanExporter,
) -> None:
    request = RequestSpan(
        "POST", "/v1/embeddings", {"traceparent": TRACEPARENT, "baggage": "surge.tenant=globex"}
    )
    with tracing.span("stage", parent=tracing.carrier()):
        pass
    request.finish(200)
    found = by_name(spans)
    gateway = found["POST /v1/embeddings"]
    assert format(gateway.context.trace_id, "032x") == CLIENT_TRACE
    assert parent_of(gateway) == CLIENT_PARENT
    assert tracing.TENANT not in (found["stage"].attributes or {})


class _Remote:
    def __init__(self, method: Any) -> None:
        self.remote = method


class FakeEmbedderHandle:
    """A handle whose replica side opens the real replica span from the carrier it was passed."""

    def __init__(self) -> None:
        self.embed = _Remote(self._embed)

    async def _embed(self, texts: list[str], trace_context: dict[str, str]) -> dict[str, Any]:
        with stage_span("embedder", "embedder.embed", trace_context, "all-MiniLM-L6-v2"):
            import numpy as np

            return {"embeddings": np.ones((len(texts), 4), np.float32), "tokens": 3, "ready_at": time.time()}


class RetrieverHandle:
    """The real Retriever class (an embedded index in tmp_path) behind a handle-like object."""

    def __init__(self, path: Path) -> None:
        settings = RetrieverSettings.model_validate(
            {"store": {"backend": "embedded", "path": str(path)}, "dimensions": 4}
        )
        self.replica = Retriever.func_or_class(settings)
        self.search = _Remote(self.replica.search)
        self.replace_documents = _Remote(self.replica.replace_documents)


def test_one_request_is_one_trace_gateway_client_and_replica_spans_with_their_attributes(
    spans: InMemorySpanExporter, tmp_path: Path
) -> None:
    board = StageStatusBoard(lambda: {"status": "RUNNING", "deployments": {}})
    waits = StageWaits(warm_s=5, cold_s=5)
    embedder = EmbedderClient("embedder", "Embedder", FakeEmbedderHandle(), board, waits)  # type: ignore[arg-type]
    retriever_handle = RetrieverHandle(tmp_path / "index")
    retriever = RetrieverClient("retriever", "Retriever", retriever_handle, board, waits)  # type: ignore[arg-type]

    async def request() -> None:
        span = RequestSpan("POST", "/v1/chat/completions", {"traceparent": TRACEPARENT})
        span.admitted("acme", "alice")
        timeline = Timeline()
        await retriever.replace_documents(
            {"kb/etna": [{"chunk_index": 0, "text": "Etna", "embedding": [1.0, 0, 0, 0]}]}, {}, "acme"
        )
        await embedder.embed(["where is Etna?"], timeline)
        await retriever.search([1.0, 0, 0, 0], 2, None, "acme", timeline)
        span.finish(200)

    asyncio.run(request())
    found = by_name(spans)
    gateway = found["POST /v1/chat/completions"]
    assert {s.context.trace_id for s in found.values()} == {gateway.context.trace_id}
    assert parent_of(gateway) == CLIENT_PARENT
    for stage, method in [("embedder", "embed"), ("retriever", "search"), ("retriever", "replace_documents")]:
        call, replica = found[f"{stage}.call {method}"], found[f"{stage}.{method}"]
        assert parent_of(call) == span_id(gateway), call.name
        assert parent_of(replica) == span_id(call), replica.name
        assert (replica.attributes or {})[tracing.STAGE] == stage
        assert (replica.attributes or {})[tracing.TENANT] == "acme"
    embed_call = found["embedder.call embed"].attributes or {}
    assert embed_call[tracing.COLD_START] is True  # the fake replica became ready after the request arrived
    assert embed_call[tracing.COLD_START_S] >= 0
    embed = found["embedder.embed"].attributes or {}
    assert (embed[tracing.MODEL], embed[tracing.VERSION]) == ("all-MiniLM-L6-v2", "1")
    search = found["retriever.search"].attributes or {}
    assert search[tracing.TOP_K] == 2
    assert len(search[tracing.SCORES]) == 1 and search[tracing.SCORES][0] == pytest.approx(1.0, abs=1e-3)
    assert (gateway.attributes or {})[tracing.TENANT] == "acme"


def test_the_otlp_endpoint_variable_sends_spans_over_otlp_http_to_a_collector() -> None:
    from tests.otlp_receiver import OtlpReceiver

    receiver = OtlpReceiver()
    try:
        assert tracing.configure_tracing(
            "surge-unit", environ={"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint}
        )
        with tracing.span("exported", attributes={tracing.STAGE: "gateway"}) as span:
            trace_id = format(span.get_span_context().trace_id, "032x")
        tracing.shutdown_tracing()  # flushes the batch
        (received,) = receiver.trace(trace_id)
        assert (received.name, received.service, received.attributes[tracing.STAGE]) == (
            "exported",
            "surge-unit",
            "gateway",
        )
    finally:
        tracing.shutdown_tracing()
        receiver.close()
