"""Where a RAG question is embedded: through the Embedder stage (default) or inside the gateway replica.

Issue 13's lever "query embedding without a hop". A question is one short text: the Embedder's batching
buys little for it, while the hop costs a Serve round trip, the batcher's wait and a second process's CPU
(measured in `benchmarks/hop_overhead.py` before this lever: 57 server CPU-ms per one-sentence embed
request through surge, 23 ms of them the model, at load 29-35). With `gateway.embed_queries: gateway` the
gateway loads the same model (`surge_core.embedding`, the active embedding version's when versions are on,
so the query and the index share one vector space) and embeds the question in a worker thread; the
Embedder stays for `/v1/embeddings` and document writes, where batching pays.

Both implement `QueryEmbedder.embed(texts, timeline)` and answer the Embedder's shape:
`{"embeddings": ndarray, "tokens": int, "embedding_version": str | None, "ready_at": float}`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Protocol

from deployments.embedding_versions import ActiveEmbeddingModel
from deployments.request_timeline import Timeline
from deployments.settings import EmbedderSettings
from surge_core import tracing


class QueryEmbedder(Protocol):
    async def embed(self, texts: list[str], timeline: Timeline) -> dict[str, Any]: ...


class InProcessQueryEmbedder:
    """Embeds questions in this process with the Embedder's model (loaded once, at construction)."""

    def __init__(self, settings: EmbedderSettings) -> None:
        self.models = ActiveEmbeddingModel(settings, settings.versions_store)
        self.ready_at = time.time()

    async def embed(self, texts: list[str], timeline: Timeline) -> dict[str, Any]:
        model = await self.models.get()
        with tracing.span("gateway.embed", attributes={tracing.STAGE: "gateway"}) as span:
            # One tokenisation serves the forward pass and the usage count (`embed_counted`).
            embedded = await asyncio.to_thread(model.embedder.embed_counted, texts)
            tokens = int(embedded.tokens.sum())
            tracing.set_attributes(span, **{tracing.TOKENS_IN: tokens, "surge.texts": len(texts)})
        timeline.mark("embedded")
        return {
            "embeddings": embedded.vectors,
            "tokens": tokens,
            "model": model.embedder.model_name,
            "embedding_version": model.version,
            "ready_at": self.ready_at,
        }


QUERY_EMBEDDERS: dict[str, Callable[[EmbedderSettings, QueryEmbedder], QueryEmbedder]] = {
    "embedder": lambda settings, stage: stage,
    "gateway": lambda settings, stage: InProcessQueryEmbedder(settings),
}


def build_query_embedder(where: str, settings: EmbedderSettings, stage: QueryEmbedder) -> QueryEmbedder:
    """The query embedder `gateway.embed_queries` names: `stage` (the Embedder's client) or an in-process one."""
    return QUERY_EMBEDDERS[where](settings, stage)
