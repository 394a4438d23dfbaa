"""`gateway.retrieve_queries: gateway` searches a RAG question in the gateway replica with the Retriever's own
search code over the same store: it sees what the Retriever wrote after it opened, keeps tenants apart, and
answers exactly what the Retriever answers. The default keeps the Retriever stage."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from deployments.query_retrieval import InProcessQueryRetriever, build_query_retriever
from deployments.request_timeline import Timeline
from deployments.retriever import TenantIndex
from deployments.settings import AppSettings, RetrieverSettings
from surge_core.tenancy import stored_doc_id
from surge_core.vector_store import ChunkRecord

DIMENSIONS = 8


def unit(seed: int) -> list[float]:
    vector = np.random.default_rng(seed).normal(size=DIMENSIONS)
    return (vector / np.linalg.norm(vector)).tolist()


def write(index: TenantIndex, tenant: str, doc_id: str, seed: int) -> None:
    stored = stored_doc_id(tenant, doc_id)
    chunk = ChunkRecord(doc_id=stored, chunk_index=0, text=f"{doc_id} text", embedding=unit(seed))
    index.store.replace_documents({stored: [chunk]})


@pytest.fixture
def settings(tmp_path: Path) -> RetrieverSettings:
    return RetrieverSettings.model_validate(
        {"store": {"backend": "embedded", "path": str(tmp_path)}, "dimensions": DIMENSIONS}
    )


def test_the_gateway_sees_what_the_retriever_wrote_after_it_opened_and_answers_as_the_retriever_does(
    settings: RetrieverSettings,
) -> None:
    gateway = build_query_retriever("gateway", settings, stage=None)  # type: ignore[arg-type]
    assert isinstance(gateway, InProcessQueryRetriever)
    retriever = TenantIndex(settings)  # the Retriever replica: another connection to the same store
    try:
        for n in range(6):
            write(retriever, "acme", f"doc-{n}", seed=n)
        timeline = Timeline()
        hits = asyncio.run(gateway.search(unit(3), 3, None, "acme", timeline))
        assert hits[0]["doc_id"] == "doc-3"  # the tenant prefix is stripped, as the stage does
        assert hits == retriever.search(unit(3), 3, None, "acme", None)
        assert "retrieved" in timeline.marks
    finally:
        gateway.close()
        retriever.close()


def test_a_search_in_the_gateway_never_reaches_another_tenants_chunks(settings: RetrieverSettings) -> None:
    gateway = InProcessQueryRetriever(settings)
    retriever = TenantIndex(settings)
    try:
        write(retriever, "acme", "ours", seed=1)
        write(retriever, "globex", "theirs", seed=2)
        hits = asyncio.run(gateway.search(unit(2), 5, None, "acme", Timeline()))
        assert [hit["doc_id"] for hit in hits] == ["ours"]
    finally:
        gateway.close()
        retriever.close()


def test_a_top_k_above_the_retrievers_limit_is_refused_in_the_gateway_too(
    settings: RetrieverSettings,
) -> None:
    gateway = InProcessQueryRetriever(settings)
    try:
        with pytest.raises(ValueError, match="max_top_k"):
            asyncio.run(gateway.search(unit(1), settings.max_top_k + 1, None, "acme", Timeline()))
    finally:
        gateway.close()


def test_by_default_questions_go_through_the_retriever_stage() -> None:
    stage = object()
    assert AppSettings().gateway.retrieve_queries == "retriever"
    assert build_query_retriever("retriever", RetrieverSettings(), stage) is stage  # type: ignore[arg-type]


def test_an_unknown_place_fails_at_load_naming_the_field() -> None:
    with pytest.raises(ValidationError, match="retrieve_queries"):
        AppSettings.model_validate({"gateway": {"retrieve_queries": "embedder"}})
