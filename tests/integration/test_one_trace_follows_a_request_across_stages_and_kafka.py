"""One OpenTelemetry trace per request, collected from the real replicas and consumers by an in-process OTLP/HTTP
receiver: a RAG chat continues the client's `traceparent` through the gateway, the Embedder, the Retriever and the
LLM, and its inference-log record carries the trace; a document produced with a `traceparent` header is traced
through the ingestion consumer, the embedding and the index write.

The session's shared app is not traced: a second application (`surge-traced`, route prefix `/traced`) runs in the
same Ray and Serve, built with `OTEL_EXPORTER_OTLP_ENDPOINT` pointing at the receiver, which `build_app` passes to
its replicas; its spans are exported every 0.2 s (`OTEL_BSP_SCHEDULE_DELAY`).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import httpx
import pytest

from surge_core import tracing
from surge_core.kafka_settings import KafkaSettings
from surge_core.records import DocumentUpsert
from surge_core.topics import DOCUMENTS, TopicSpec
from tests.fixtures_serve import SurgeApp, app_settings_for_tests
from tests.kafka_helpers import IngestionProcess, ingestion_args, read_topic, wait_for
from tests.otlp_receiver import OtlpReceiver, ReceivedSpan

pytestmark = pytest.mark.integration

TRACED_APP = "surge-traced"
SHOWN = (
    tracing.STAGE,
    tracing.TENANT,
    tracing.MODEL,
    tracing.VERSION,
    tracing.COLD_START,
    tracing.COLD_START_S,
    tracing.TOKENS_IN,
    tracing.TOKENS_OUT,
    tracing.TOP_K,
    tracing.SCORES,
    "http.response.status_code",
)


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    server = OtlpReceiver()
    yield server
    server.close()


def otel_env(receiver: OtlpReceiver) -> dict[str, str]:
    return {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "200"}


@pytest.fixture(scope="module")
def traced_app(
    serve_http_port: int,
    tiny_llm_dir: Path,
    app_broker: Any,
    tmp_path_factory: pytest.TempPathFactory,
    receiver: OtlpReceiver,
) -> Iterator[SurgeApp]:
    from ray import serve

    from deployments.app import build_app

    settings = app_settings_for_tests(
        tmp_path_factory.mktemp("traced-data"), tiny_llm_dir, bootstrap_servers=app_broker.bootstrap_servers
    )
    log = settings.gateway.inference_log.model_copy(update={"topic_prefix": "traced."})
    # Kept warm: this module's tests assert spans, not cold starts (a loaded 2-core machine took 385 s to load
    # the LLM once, past the cold-start timeout); `serve.run` returns once every stage is up.
    warm = {"autoscaling": settings.llm.autoscaling.model_copy(update={"min_replicas": 1})}
    settings = settings.model_copy(
        update={
            "gateway": settings.gateway.model_copy(update={"inference_log": log}),
            "llm": settings.llm.model_copy(update=warm),
            "embedder": settings.embedder.model_copy(update=warm),
        }
    )
    # Only while building: build_app hands the OTEL_* variables of this process to every replica.
    with mock.patch.dict(os.environ, otel_env(receiver)):
        app = build_app(settings)
    serve.run(app, name=TRACED_APP, route_prefix="/traced")
    base_url = f"http://127.0.0.1:{serve_http_port}/traced"
    wait_for(lambda: _answers(f"{base_url}/healthz"), 300, "the traced app answering /healthz")
    yield SurgeApp(base_url=base_url, api_key="sk-acme-all", settings=settings)
    serve.delete(TRACED_APP)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def answered(call: Callable[[], httpx.Response], timeout_s: float = 900) -> httpx.Response:
    """`call()` until it is not a 503: a stage at zero on a loaded machine may outlast the cold-start timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        response = call()
        if response.status_code != 503 or time.monotonic() > deadline:
            response.raise_for_status()
            return response


def new_traceparent() -> tuple[str, str, str]:
    trace_id, parent = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    return trace_id, parent, f"00-{trace_id}-{parent}-01"


def attrs(span: ReceivedSpan) -> dict[str, Any]:
    return span.attributes


def rag_chat(app: SurgeApp, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(
        f"{app.base_url}/v1/chat/completions",
        json={
            "model": "rag/tiny-llama",
            "messages": [{"role": "user", "content": "Where is Mount Etna?"}],
            "max_tokens": 4,
            "temperature": 0,
        },
        headers={**app.headers(), **(headers or {})},
        timeout=300,
    )


@pytest.mark.timeout(1200)
def test_a_rag_request_is_one_trace_through_gateway_embedder_retriever_and_llm(
    traced_app: SurgeApp, receiver: OtlpReceiver, app_broker: Any
) -> None:
    indexed = httpx.post(
        f"{traced_app.base_url}/v1/documents",
        json={"documents": [{"id": "kb/etna", "text": "Mount Etna is an active volcano in Sicily."}]},
        headers=traced_app.headers(),
        timeout=300,
    )
    assert indexed.status_code == 200, indexed.text
    trace_id, client_parent, traceparent = new_traceparent()

    answer = rag_chat(traced_app, {"traceparent": traceparent})

    assert answer.status_code == 200, answer.text
    spans = receiver.wait_for_trace(
        trace_id,
        [
            "POST /v1/chat/completions",
            "embedder.call embed",
            "embedder.embed",
            "retriever.call search",
            "retriever.search",
            "llm.call generate",
            "llm.generate",
        ],
    )
    print(f"\nRAG request, trace {trace_id}:\n" + receiver.tree(trace_id, SHOWN))
    gateway = spans["POST /v1/chat/completions"]
    assert gateway.parent_id == client_parent  # the client's trace is continued, not replaced
    for call, replica in [
        ("embedder.call embed", "embedder.embed"),
        ("retriever.call search", "retriever.search"),
        ("llm.call generate", "llm.generate"),
    ]:
        assert spans[call].parent_id == gateway.span_id, call
        assert spans[replica].parent_id == spans[call].span_id, replica
        assert attrs(spans[replica])[tracing.TENANT] == "acme", replica  # baggage from the gateway
        assert attrs(spans[replica])[tracing.REPLICA], replica
    assert isinstance(attrs(spans["embedder.call embed"])[tracing.COLD_START], bool)
    usage = answer.json()["usage"]
    assert attrs(spans["llm.generate"])[tracing.TOKENS_IN] == usage["prompt_tokens"]
    assert attrs(spans["llm.generate"])[tracing.TOKENS_OUT] == usage["completion_tokens"]
    assert (attrs(spans["llm.generate"])[tracing.MODEL], attrs(spans["llm.generate"])[tracing.VERSION]) == (
        "tiny-llama",
        "1",
    )
    assert attrs(spans["retriever.search"])[tracing.TOP_K] == traced_app.settings.gateway.rag_top_k
    assert len(attrs(spans["retriever.search"])[tracing.SCORES]) >= 1
    assert attrs(gateway)[tracing.TENANT] == "acme"
    assert attrs(gateway)[tracing.TOKENS_OUT] == usage["completion_tokens"]
    assert attrs(gateway)["http.response.status_code"] == 200

    # The inference-log record of this request carries its trace context as a Kafka header.
    kafka = KafkaSettings(bootstrap_servers=app_broker.bootstrap_servers)

    def logged_with_trace() -> bool:
        for message in read_topic(kafka, "traced.inference-log"):
            carrier = tracing.carrier_from_kafka_headers(message.headers)
            if trace_id in carrier.get("traceparent", ""):
                assert carrier["traceparent"].split("-")[2] == gateway.span_id
                return True
        return False

    wait_for(logged_with_trace, 30, "an inference-log record with the request's traceparent header")


@pytest.mark.timeout(300)
def test_a_document_produced_with_a_traceparent_is_traced_through_ingestion_embedding_and_the_index_write(
    kafka_settings: KafkaSettings,
    kafka_topic: Callable[[TopicSpec], TopicSpec],
    kafka_producer: Any,
    spawn_ingestion: Callable[..., IngestionProcess],
    topic_prefix: str,
    tmp_path: Path,
    receiver: OtlpReceiver,
) -> None:
    topic = kafka_topic(DOCUMENTS)
    args = ingestion_args(
        kafka_settings, topic_prefix, f"{topic_prefix}ingestion", index_path=tmp_path / "index"
    )
    consumer = spawn_ingestion("traced", *args, env=otel_env(receiver))
    trace_id, producer_span, traceparent = new_traceparent()
    doc = DocumentUpsert(doc_id="kb/traced", tenant="acme", text="A traced document about Stromboli.")
    kafka_producer.send(
        topic.name,
        key=doc.storage_id.encode(),
        value=doc.model_dump_json().encode(),
        headers=[("traceparent", traceparent.encode())],
    ).get(timeout=30)

    names = ["ingestion.process", "ingestion.embed", "ingestion.index_write"]
    wait_for(
        lambda: consumer.assert_running() and {s.name for s in receiver.trace(trace_id)} >= set(names),
        180,
        "the ingestion spans of the traced document",
    )
    spans = receiver.wait_for_trace(trace_id, names, timeout_s=1)
    print(
        f"\nKafka-ingested document, trace {trace_id}:\n"
        + receiver.tree(trace_id, (*SHOWN, "surge.documents"))
    )
    process = spans["ingestion.process"]
    assert process.parent_id == producer_span  # the producer's span is the consumer span's parent
    assert process.service == "surge-ingestion"
    assert attrs(process)["messaging.destination.name"] == topic.name
    assert spans["ingestion.embed"].parent_id == process.span_id
    assert spans["ingestion.index_write"].parent_id == process.span_id
    assert attrs(spans["ingestion.index_write"])["surge.documents"] == 1
