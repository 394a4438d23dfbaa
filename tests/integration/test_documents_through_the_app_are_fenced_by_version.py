"""`/v1/documents` with versions (what the ingestion consumer's HTTP sink sends): an older version of a
document never overwrites a newer one, and a newer one still does."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.fixtures_serve import SurgeApp

pytestmark = pytest.mark.integration


def _post(app: SurgeApp, body: dict[str, object]) -> dict[str, object]:
    response = httpx.post(f"{app.base_url}/v1/documents", json=body, headers=app.headers(), timeout=300)
    assert response.status_code == 200, response.text
    return dict(response.json())


def _upsert(app: SurgeApp, doc_id: str, text: str, offset: int) -> dict[str, object]:
    return _post(
        app,
        {
            "documents": [{"id": doc_id, "text": text}],
            "versions": {doc_id: {"partition": 0, "offset": offset}},
        },
    )


def _indexed_text(app: SurgeApp, doc_id: str, question: str) -> list[str]:
    response = httpx.post(
        f"{app.base_url}/v1/chat/completions",
        headers=app.headers(),
        timeout=300,
        json={
            "model": "rag/tiny-llama",
            "messages": [{"role": "user", "content": question}],
            "max_tokens": 1,
            "retrieval": {"top_k": 5},
        },
    )
    assert response.status_code == 200, response.text
    return [s["text"] for s in response.json()["sources"] if s["doc_id"] == doc_id]


def test_an_older_version_is_fenced_and_a_newer_one_replaces(surge_app: SurgeApp) -> None:
    doc_id = f"fence/{uuid.uuid4().hex[:8]}"
    assert (
        _upsert(surge_app, doc_id, "The heron lighthouse is painted teal.", offset=10)["documents_fenced"]
        == 0
    )
    stale = _upsert(surge_app, doc_id, "The heron lighthouse is painted crimson.", offset=5)
    assert stale["documents_fenced"] == 1 and stale["chunks_written"] == 0
    assert _indexed_text(surge_app, doc_id, "heron lighthouse colour") == [
        "The heron lighthouse is painted teal."
    ]
    newer = _upsert(surge_app, doc_id, "The heron lighthouse is painted amber.", offset=11)
    assert newer["documents_fenced"] == 0
    assert _indexed_text(surge_app, doc_id, "heron lighthouse colour") == [
        "The heron lighthouse is painted amber."
    ]
    # A delete with an older version than the document's is fenced too: the document stays.
    deleted = _post(surge_app, {"delete": [doc_id], "versions": {doc_id: {"partition": 0, "offset": 3}}})
    assert deleted["chunks_deleted"] == 0
