"""Tenant isolation in the embedded store, as the Retriever drives it: two tenants' documents with the same
id are two documents; a search returns only the caller's tenant's chunks, and a client filter narrows that
set but can never widen it; a delete removes only the caller's document."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np

from deployments.retriever import Retriever
from deployments.settings import RetrieverSettings

DIM = 8


def _retriever(path: Path) -> Any:
    settings = RetrieverSettings.model_validate(
        {"store": {"backend": "embedded", "path": str(path)}, "dimensions": DIM}
    )
    return Retriever.func_or_class(settings)


def _doc(doc_id: str, text: str, seed: int, **metadata: Any) -> dict[str, list[dict[str, Any]]]:
    vector = np.random.default_rng(seed).standard_normal(DIM).tolist()
    return {doc_id: [{"chunk_index": 0, "text": text, "embedding": vector, "metadata": metadata}]}


def test_same_doc_id_in_two_tenants_stays_two_documents_and_search_stays_in_the_tenant(
    tmp_path: Path,
) -> None:
    retriever = _retriever(tmp_path)

    async def run() -> None:
        await retriever.replace_documents(_doc("x", "acme secret", 1, team="red"), None, "acme")
        await retriever.replace_documents(_doc("x", "globex secret", 1, team="red"), None, "globex")
        await retriever.replace_documents(_doc("y", "default text", 1, team="red"), None, "default")
        query = np.random.default_rng(1).standard_normal(DIM).tolist()
        for tenant, expected in [
            ("acme", "acme secret"),
            ("globex", "globex secret"),
            ("default", "default text"),
        ]:
            hits = await retriever.search(query, 10, None, tenant)
            assert [(h["doc_id"], h["text"]) for h in hits] == [(hits[0]["doc_id"], expected)], tenant
        # A filter matching every tenant's chunk still returns only the caller's.
        hits = await retriever.search(query, 10, {"team": ["red", "blue"]}, "acme")
        assert [h["text"] for h in hits] == ["acme secret"]
        # Narrowing works inside the tenant.
        assert await retriever.search(query, 10, {"team": "blue"}, "acme") == []
        # A delete of `x` by globex leaves acme's `x`.
        assert await retriever.delete_documents(["x"], None, "globex") == 1
        assert [h["text"] for h in await retriever.search(query, 10, None, "acme")] == ["acme secret"]
        assert await retriever.search(query, 10, None, "globex") == []
        # A tenant that wrote nothing sees nothing.
        assert await retriever.search(query, 10, None, "initech") == []

    asyncio.run(run())


def test_the_default_tenant_sees_indexes_written_before_tenants_existed(tmp_path: Path) -> None:
    from surge_core.vector_store import ChunkRecord, open_vector_store

    retriever = _retriever(tmp_path)
    vector = np.random.default_rng(3).standard_normal(DIM).tolist()
    with open_vector_store(retriever.settings.store, DIM) as store:  # a writer unaware of tenants
        store.replace_documents({"old": [ChunkRecord("old", 0, "from before", vector)]})
    hits = asyncio.run(retriever.search(vector, 5, None, "default"))
    assert [h["doc_id"] for h in hits] == ["old"]
    assert asyncio.run(retriever.search(vector, 5, None, "acme")) == []
