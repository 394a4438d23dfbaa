"""Where a RAG question's vector is searched: through the Retriever stage (default) or inside the gateway replica.

Issue 13's lever "take retrieval out of its hop", the twin of `gateway.embed_queries`. A search of a small
index takes well under a millisecond in process (0.4-0.6 ms for `rag_latency`'s index), while the hop
to the Retriever cost 4.9-6.2 ms of the request's latency in the quick runs of 2026-12-02 (a Serve round
trip, the handle's routing, a second process's event loop). With `gateway.retrieve_queries: gateway` the
gateway opens the same store (`TenantIndex`, the Retriever's own search code) and searches it in a worker
thread; the Retriever stays for document writes, deletes and its stats.

Sharing the store is safe for both backends: pgvector is a server, and the embedded store's readers follow
other processes' commits through its change log (`surge_core/vector_store/embedded.py`). The embedded
store's directory must then be reachable from the gateway's node as well (one node, or a shared volume).

Both implement `QueryRetriever.search(vector, top_k, where, tenant, timeline, embedding_version)` and answer
the Retriever's shape: hits as dicts (doc_id, chunk_index, text, metadata, score), best first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol

from deployments.request_timeline import Timeline
from deployments.retriever import TenantIndex, set_search_attributes
from deployments.settings import RetrieverSettings
from surge_core import tracing


class QueryRetriever(Protocol):
    async def search(
        self,
        vector: list[float],
        top_k: int,
        where: dict[str, Any] | None,
        tenant: str,
        timeline: Timeline,
        embedding_version: str | None = None,
    ) -> list[dict[str, Any]]: ...


class InProcessQueryRetriever:
    """Searches the Retriever's store from this process (opened once, at construction)."""

    def __init__(self, settings: RetrieverSettings) -> None:
        self.index = TenantIndex(settings)

    async def search(
        self,
        vector: list[float],
        top_k: int,
        where: dict[str, Any] | None,
        tenant: str,
        timeline: Timeline,
        embedding_version: str | None = None,
    ) -> list[dict[str, Any]]:
        with tracing.span("gateway.retrieve", attributes={tracing.STAGE: "gateway"}) as span:
            hits = await asyncio.to_thread(self.index.search, vector, top_k, where, tenant, embedding_version)
            set_search_attributes(span, tenant, top_k, hits, self.index.store.backend)
        timeline.mark("retrieved")
        return hits

    def close(self) -> None:
        self.index.close()


QUERY_RETRIEVERS: dict[str, Callable[[RetrieverSettings, QueryRetriever], QueryRetriever]] = {
    "retriever": lambda settings, stage: stage,
    "gateway": lambda settings, stage: InProcessQueryRetriever(settings),
}


def build_query_retriever(where: str, settings: RetrieverSettings, stage: QueryRetriever) -> QueryRetriever:
    """The query retriever `gateway.retrieve_queries` names: `stage` (the Retriever's client) or an in-process one."""
    return QUERY_RETRIEVERS[where](settings, stage)
