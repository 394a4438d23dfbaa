"""Metering gaps closed: the gateway replica accrues replica- and idle-warm seconds like every stage (busy
while an HTTP request is in flight, probes excepted), and `/v1/documents` writes one usage record."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
import pytest

from deployments.cost_metrics import ReplicaMeter
from deployments.flows import DocumentFlow
from deployments.gateway_metering import BusyWhileServing
from deployments.openai_api import ApiError, DocumentsRequest
from deployments.principal import Caller, Principal
from deployments.request_timeline import Timeline
from deployments.settings import AppSettings
from deployments.usage_recording import UsageRecorder
from surge_core.records import UsageRecord

SETTINGS = AppSettings()
ACME = Caller(Principal(name="acme-writer", tenant="acme", scopes=frozenset({"admin"})))


def meter_with_clock() -> tuple[ReplicaMeter, list[float]]:
    now = [100.0]
    return ReplicaMeter("gateway", "tiny-llama", gpus=0, started_at=time.time(), clock=lambda: now[0]), now


def serve(middleware: BusyWhileServing, path: str) -> None:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        return None

    asyncio.run(middleware({"type": "http", "path": path}, receive, send))


def test_the_gateway_replica_is_not_idle_while_a_request_is_in_flight() -> None:
    meter, now = meter_with_clock()

    async def slow_app(scope: Any, receive: Any, send: Any) -> None:
        now[0] += 3  # the request takes 3 s (a stream included: the app returns once it is sent)

    now[0] += 2  # idle before it
    serve(BusyWhileServing(slow_app, meter), "/v1/chat/completions")
    now[0] += 1  # idle after it
    assert meter.tick() == (6.0, 3.0)


def test_probes_do_not_end_the_gateways_idle_warm_time() -> None:
    meter, now = meter_with_clock()

    async def probe_app(scope: Any, receive: Any, send: Any) -> None:
        now[0] += 1

    middleware = BusyWhileServing(probe_app, meter)
    serve(middleware, "/healthz")
    serve(middleware, "/surge-bench/readyz")
    assert meter.tick() == (2.0, 2.0)


def test_a_request_that_fails_still_leaves_the_gateway_idle_afterwards() -> None:
    meter, now = meter_with_clock()

    async def failing_app(scope: Any, receive: Any, send: Any) -> None:
        now[0] += 1
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        serve(BusyWhileServing(failing_app, meter), "/v1/documents")
    now[0] += 4
    assert meter.tick() == (5.0, 4.0)


class Capturing(UsageRecorder):
    def __init__(self) -> None:
        super().__init__(SETTINGS, "tiny-llama")
        self.records: list[UsageRecord] = []

    def record(self, **fields: Any) -> UsageRecord | None:
        record = super().record(**fields)
        assert record is not None
        self.records.append(record)
        return record


class Embedder:
    async def embed(self, texts: list[str], timeline: Timeline) -> dict[str, Any]:
        timeline.add_stage_seconds("embedder", 0.25)
        return {
            "embeddings": np.ones((len(texts), 4), np.float32),
            "tokens": 5 * len(texts),
            "model": "all-MiniLM-L6-v2",
            "embedding_version": "v1",
        }


class Retriever:
    async def replace_documents(self, grouped: Any, versions: Any, tenant: str, version: Any = None) -> Any:
        await asyncio.sleep(0.01)
        return {"written": sum(len(v) for v in grouped.values()), "unchanged": 0, "deleted": 0}

    async def delete_documents(self, ids: list[str], versions: Any, tenant: str) -> int:
        return len(ids)


def flow(usage: UsageRecorder) -> DocumentFlow:
    return DocumentFlow(SETTINGS.gateway, Embedder(), Retriever(), usage, "all-MiniLM-L6-v2")  # type: ignore[arg-type]


def test_a_document_upsert_is_charged_to_its_tenant_under_the_embedding_model() -> None:
    usage = Capturing()
    body = DocumentsRequest.model_validate({"documents": [{"id": "a", "text": "Etna is in Sicily."}]})
    asyncio.run(flow(usage).run(body, ACME))
    (record,) = usage.records
    assert (record.model, record.version, record.tenant, record.principal) == (
        "all-MiniLM-L6-v2",
        "1",
        "acme",
        "acme-writer",
    )
    assert (record.route, record.status_code, record.tokens_in, record.tokens_out) == (
        "/v1/documents",
        200,
        5,
        0,
    )
    assert record.stage_seconds["embedder"] == 0.25
    assert record.stage_seconds["retriever"] >= 0.01
    assert record.cost_usd > 0


def test_a_delete_only_request_is_charged_with_no_tokens() -> None:
    usage = Capturing()
    asyncio.run(flow(usage).run(DocumentsRequest.model_validate({"delete": ["a", "b"]}), ACME))
    (record,) = usage.records
    assert (record.model, record.tokens_in, record.tokens_out) == ("all-MiniLM-L6-v2", 0, 0)
    assert "retriever" in record.stage_seconds and "embedder" not in record.stage_seconds


def test_a_refused_documents_request_writes_no_usage_record() -> None:
    usage = Capturing()
    other = DocumentsRequest.model_validate({"tenant": "globex", "delete": ["a"]})
    with pytest.raises(ApiError) as refused:
        asyncio.run(flow(usage).run(other, ACME))
    assert refused.value.status_code == 403
    assert usage.records == []
