"""The Retriever deployment: a vector index (`surge_core.vector_store`) behind a DeploymentHandle.

Store calls block (SQLite, FAISS, PostgreSQL), so each runs in a worker thread (`asyncio.to_thread`): the
replica's event loop keeps answering health checks and other requests meanwhile. The embedded store
serialises its own calls with a lock; the pgvector store runs them in parallel on its connection pool.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, replace
from typing import Any

from ray import serve
from ray.serve.exceptions import RayServeException

from deployments.cost_metrics import ReplicaMeter
from deployments.embedding_versions import VersionedIndexes
from deployments.observability import record_replica_ready
from deployments.settings import RetrieverSettings
from deployments.stage_tracing import stage_span
from surge_core import tracing
from surge_core.tenancy import DEFAULT_TENANT, split_stored_id, stored_doc_id
from surge_core.vector_store import ChunkRecord, VectorStore, WriteResult, open_vector_store
from surge_core.vector_store.base import DocVersion

STAGE = "retriever"
CHUNK_FIELDS = frozenset({"doc_id", "chunk_index", "text", "embedding", "metadata"})


def chunk_from_dict(doc_id: str, chunk: Mapping[str, Any]) -> ChunkRecord:
    """A `ChunkRecord` from its dict form (as sent over a handle); doc_id defaults to the document's key."""
    unknown = set(chunk) - CHUNK_FIELDS
    if unknown:
        raise ValueError(
            f"document {doc_id!r}: unknown chunk fields {sorted(unknown)}; known: {sorted(CHUNK_FIELDS)}"
        )
    missing = {"chunk_index", "text", "embedding"} - set(chunk)
    if missing:
        raise ValueError(f"document {doc_id!r}: chunk is missing {sorted(missing)}")
    return ChunkRecord(
        doc_id=str(chunk.get("doc_id", doc_id)),
        chunk_index=int(chunk["chunk_index"]),
        text=str(chunk["text"]),
        embedding=chunk["embedding"],
        metadata=dict(chunk.get("metadata") or {}),
    )


def _stored_chunk(tenant: str, doc_id: str, chunk: Mapping[str, Any]) -> ChunkRecord:
    record = chunk_from_dict(doc_id, chunk)
    return replace(record, doc_id=stored_doc_id(tenant, record.doc_id))


def _versions(versions: dict[str, Any] | None, tenant: str) -> dict[str, DocVersion] | None:
    """Versions as the stores take them, keyed by stored id (a handle call may deliver tuples as lists)."""
    if not versions:
        return None
    return {stored_doc_id(tenant, doc_id): (int(v[0]), int(v[1])) for doc_id, v in versions.items()}


def set_search_attributes(
    span: Any, tenant: str, top_k: int, hits: list[dict[str, Any]], backend: str
) -> None:
    """A search span's attributes, the same wherever the search ran (Retriever replica or gateway)."""
    tracing.set_attributes(
        span,
        **{
            tracing.TENANT: tenant,
            tracing.TOP_K: top_k,
            tracing.SCORES: [round(float(hit["score"]), 4) for hit in hits],
            "surge.store": backend,
        },
    )


def replica_id() -> str | None:
    """This replica's Serve id (None outside Serve): tells callers which replica answered."""
    try:
        return str(serve.get_replica_context().replica_id.unique_id)
    except RayServeException:
        return None


class TenantIndex:
    """A tenant's search over the vector store and its embedding versions' indexes.

    The one search path: the Retriever runs it behind its handle, and a gateway with
    `gateway.retrieve_queries: gateway` runs it in its own replica (`deployments/query_retrieval.py`).
    Blocking (SQLite, FAISS, PostgreSQL): callers run `search` in a worker thread, as one call, so a
    search costs one thread hand-off, not one for the index look-up and another for the search.
    """

    def __init__(self, settings: RetrieverSettings) -> None:
        self.settings = settings
        self.store: VectorStore = open_vector_store(settings.store, settings.dimensions)
        # Embedding versions' indexes (`deployments.embedding_versions`): a call naming a version uses its index.
        self.indexes = VersionedIndexes(self.store, settings.store)

    def check_top_k(self, top_k: int) -> None:
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
        if top_k > self.settings.max_top_k:
            raise ValueError(f"top_k {top_k} exceeds retriever.max_top_k ({self.settings.max_top_k})")

    def search(
        self,
        embedding: Sequence[float],
        top_k: int,
        where: dict[str, Any] | None,
        tenant: str,
        embedding_version: str | None,
    ) -> list[dict[str, Any]]:
        """The `top_k` closest chunks of `tenant`'s documents as dicts (doc_id, chunk_index, text, metadata,
        score), best first, searched in `embedding_version`'s index (None: the base)."""
        self.check_top_k(top_k)
        hits = self.indexes.get(embedding_version).search(embedding, top_k, where, tenant)
        return [{**asdict(hit), "doc_id": split_stored_id(hit.doc_id)[1]} for hit in hits]

    def close(self) -> None:
        self.indexes.close()


@serve.deployment
class Retriever:
    """Search, replace and delete document chunks in the configured vector store."""

    def __init__(self, settings: RetrieverSettings) -> None:
        self.started_at = time.time()
        tracing.configure_tracing("surge")
        self.settings = settings
        self.index = TenantIndex(settings)
        self.store = self.index.store
        self.indexes = self.index.indexes
        self.ready_at = time.time()
        record_replica_ready(STAGE, self.started_at, self.ready_at)
        # The Retriever serves no model: its "model" label is the index it holds.
        self.meter = ReplicaMeter(
            STAGE, f"{self.store.backend}-index", gpus=settings.num_gpus, started_at=self.started_at
        )
        self.meter.ready(self.ready_at)

    async def search(
        self,
        embedding: Sequence[float],
        top_k: int,
        where: dict[str, Any] | None = None,
        tenant: str = DEFAULT_TENANT,
        embedding_version: str | None = None,
        trace_context: dict[str, str] | None = None,
    ) -> list[dict[str, Any]]:
        """The `top_k` closest chunks of `tenant`'s documents as dicts (doc_id, chunk_index, text, metadata,
        score), best first. `where` narrows within the tenant; it cannot reach another tenant's chunks.
        `embedding_version`: the version `embedding` was made for; its index is searched (None: the base)."""
        with self.meter.busy(), stage_span(STAGE, "retriever.search", trace_context) as span:
            hits = await asyncio.to_thread(
                self.index.search, embedding, top_k, where, tenant, embedding_version
            )
            set_search_attributes(span, tenant, top_k, hits, self.store.backend)
        return hits

    async def replace_documents(
        self,
        documents: dict[str, list[dict[str, Any]]],
        versions: dict[str, tuple[int, int]] | None = None,
        tenant: str = DEFAULT_TENANT,
        embedding_version: str | None = None,
        trace_context: dict[str, str] | None = None,
    ) -> dict[str, int]:
        """Make each of `tenant`'s documents' chunks exactly the given ones; returns written/unchanged/
        deleted/fenced counts. `versions` fences older writes (see `surge_core.vector_store.base.is_stale`).
        Documents are stored under `tenant#doc_id` (`surge_core.tenancy`), so tenants never collide."""
        records = {
            stored_doc_id(tenant, doc_id): [_stored_chunk(tenant, doc_id, chunk) for chunk in chunks]
            for doc_id, chunks in documents.items()
        }
        with self.meter.busy(), stage_span(STAGE, "retriever.replace_documents", trace_context) as span:
            store = await asyncio.to_thread(self.indexes.get, embedding_version)
            result: WriteResult = await asyncio.to_thread(
                store.replace_documents, records, _versions(versions, tenant)
            )
            tracing.set_attributes(span, **{tracing.TENANT: tenant, "surge.documents": len(records)})
        return asdict(result)

    async def delete_documents(
        self,
        doc_ids: list[str],
        versions: dict[str, tuple[int, int]] | None = None,
        tenant: str = DEFAULT_TENANT,
        trace_context: dict[str, str] | None = None,
    ) -> int:
        """Remove these documents of `tenant` from every embedding version's index (a version being built
        must not bring them back); returns the most chunks removed from any one index."""
        stored = [stored_doc_id(tenant, doc_id) for doc_id in doc_ids]
        removed = 0
        with self.meter.busy(), stage_span(STAGE, "retriever.delete_documents", trace_context):
            for store in await asyncio.to_thread(self.indexes.everything):
                count = await asyncio.to_thread(store.delete_documents, stored, _versions(versions, tenant))
                removed = max(removed, count)
        return removed

    async def stats(self) -> dict[str, Any]:
        chunks = await asyncio.to_thread(self.store.count_chunks)
        documents = await asyncio.to_thread(self.store.count_documents)
        return {
            "chunks": chunks,
            "documents": documents,
            "backend": self.store.backend,
            "dimensions": self.store.dimensions,
            "replica": replica_id(),
        }

    async def wake(self) -> dict[str, Any]:
        """Cheap call that brings the stage up from zero and reports when this replica became ready."""
        return {
            "replica_started_at": self.started_at,
            "ready_at": self.ready_at,
            "backend": self.store.backend,
        }

    def __del__(self) -> None:
        # Serve calls this when it stops the replica: close connections (the data stays where it persists).
        index = getattr(self, "index", None)
        if index is not None:
            index.close()
