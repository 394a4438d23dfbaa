"""RAG: documents upserted through /v1/documents are retrieved and returned as sources."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.fixtures_serve import SurgeApp

pytestmark = pytest.mark.integration

DOCS = [
    {
        "id": "kb/volcano",
        "text": "Mount Etna is an active volcano on the east coast of Sicily.",
        "metadata": {"topic": "geology", "lang": "en"},
    },
    {
        "id": "kb/bread",
        "text": "Sourdough bread rises thanks to wild yeast and lactic acid bacteria.",
        "metadata": {"topic": "cooking", "lang": "en"},
    },
    {
        "id": "kb/rust",
        "text": "The Rust borrow checker enforces ownership rules at compile time.",
        "metadata": {"topic": "programming", "lang": "en"},
    },
]


@pytest.fixture(scope="module")
def indexed(surge_app: SurgeApp) -> SurgeApp:
    response = httpx.post(
        f"{surge_app.base_url}/v1/documents",
        json={"documents": DOCS},
        headers=surge_app.headers(),
        timeout=300,
    )
    assert response.status_code == 200, response.text
    assert response.json()["upserted_documents"] == 3
    return surge_app


def test_upserting_the_same_documents_again_writes_nothing(indexed: SurgeApp) -> None:
    response = httpx.post(
        f"{indexed.base_url}/v1/documents", json={"documents": DOCS}, headers=indexed.headers(), timeout=120
    )
    body = response.json()
    assert body["chunks_written"] == 0
    assert body["chunks_unchanged"] >= 3


def test_rag_chat_returns_the_relevant_document_first(indexed: SurgeApp) -> None:
    client = openai.OpenAI(base_url=f"{indexed.base_url}/v1", api_key=indexed.api_key, timeout=300)
    response = client.chat.completions.create(
        model="rag/tiny-llama",
        messages=[{"role": "user", "content": "Which volcano is in Sicily?"}],
        max_tokens=8,
        temperature=0,
    )
    sources = response.model_extra["sources"]
    assert sources[0]["doc_id"] == "kb/volcano"
    assert sources[0]["score"] > sources[-1]["score"]
    assert response.choices[0].message.content is not None


def test_retrieval_filter_restricts_sources(indexed: SurgeApp) -> None:
    client = openai.OpenAI(base_url=f"{indexed.base_url}/v1", api_key=indexed.api_key, timeout=300)
    response = client.chat.completions.create(
        model="tiny-llama",
        messages=[{"role": "user", "content": "Which volcano is in Sicily?"}],
        max_tokens=4,
        extra_body={"retrieval": {"top_k": 3, "filter": {"topic": ["cooking", "programming"]}}},
    )
    doc_ids = {s["doc_id"] for s in response.model_extra["sources"]}
    assert doc_ids == {"kb/bread", "kb/rust"}


def test_streaming_rag_sends_sources_in_the_first_chunk(indexed: SurgeApp) -> None:
    client = openai.OpenAI(base_url=f"{indexed.base_url}/v1", api_key=indexed.api_key, timeout=300)
    stream = client.chat.completions.create(
        model="rag/tiny-llama",
        messages=[{"role": "user", "content": "How does sourdough rise?"}],
        max_tokens=6,
        stream=True,
    )
    first = next(iter(stream))
    assert first.model_extra["sources"][0]["doc_id"] == "kb/bread"
    for _ in stream:
        pass


def test_deleted_documents_are_no_longer_retrieved(indexed: SurgeApp) -> None:
    extra = {"id": "kb/temp", "text": "Temporary note about zebras in the savanna."}
    httpx.post(
        f"{indexed.base_url}/v1/documents",
        json={"documents": [extra]},
        headers=indexed.headers(),
        timeout=120,
    )
    deleted = httpx.post(
        f"{indexed.base_url}/v1/documents",
        json={"delete": ["kb/temp"]},
        headers=indexed.headers(),
        timeout=120,
    )
    assert deleted.json()["chunks_deleted"] >= 1
    client = openai.OpenAI(base_url=f"{indexed.base_url}/v1", api_key=indexed.api_key, timeout=300)
    response = client.chat.completions.create(
        model="rag/tiny-llama", messages=[{"role": "user", "content": "zebras savanna"}], max_tokens=2
    )
    assert "kb/temp" not in {s["doc_id"] for s in response.model_extra["sources"]}
