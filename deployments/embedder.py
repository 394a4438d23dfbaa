"""The Embedder deployment: sentence-transformers behind Serve's dynamic batching.

Requests from many callers are merged by `@serve.batch` into one forward pass (up to `max_batch_size`
texts, waiting at most `batch_wait_timeout_s`), which is where a CPU replica gets its throughput.

With `versions_store` set, the model is the active embedding version's (`deployments.embedding_versions`)
and every answer names that version (`embedding_version`), so the Retriever searches the matching index.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
from ray import serve

from deployments.embedding_versions import ActiveEmbeddingModel, LoadedModel
from deployments.observability import record_replica_ready
from deployments.settings import EmbedderSettings


@serve.deployment
class Embedder:
    def __init__(self, settings: EmbedderSettings) -> None:
        self.started_at = time.time()
        self.settings = settings
        self.models = ActiveEmbeddingModel(settings, settings.versions_store)
        self._embed_batch.set_max_batch_size(settings.max_batch_size)
        self._embed_batch.set_batch_wait_timeout_s(settings.batch_wait_timeout_s)
        self.ready_at = time.time()
        record_replica_ready("embedder", self.started_at, self.ready_at)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.01)
    async def _embed_batch(self, items: list[tuple[str, LoadedModel]]) -> list[np.ndarray]:
        # Each text carries the model its request started with: across a version switch one batch may hold
        # both, and each text must be embedded by the model whose version its request reports.
        out: list[np.ndarray | None] = [None] * len(items)
        for model in {id(m): m for _, m in items}.values():
            rows = [i for i, (_, m) in enumerate(items) if m is model]
            # The forward pass runs in a thread so health checks and batching keep running meanwhile.
            vectors = await asyncio.to_thread(model.embedder.embed, [items[i][0] for i in rows])
            for i, vector in zip(rows, vectors, strict=True):
                out[i] = vector
        return [v for v in out if v is not None]

    async def embed(self, texts: list[str]) -> dict[str, Any]:
        """Embed `texts`; each text joins whatever batch is forming, across all callers."""
        model = await self.models.get()
        if not texts:
            empty = np.zeros((0, model.embedder.dimensions), np.float32)
            return {"embeddings": empty, "tokens": 0, "embedding_version": model.version}
        vectors = await asyncio.gather(*(self._embed_batch((text, model)) for text in texts))
        return {
            "embeddings": np.stack(vectors),
            "tokens": model.embedder.count_tokens(texts),
            "model": model.embedder.model_name,
            "embedding_version": model.version,
            "ready_at": self.ready_at,
        }

    async def wake(self) -> dict[str, Any]:
        """Cheap call that brings the stage up from zero and reports when this replica became ready."""
        return {
            "replica_started_at": self.started_at,
            "ready_at": self.ready_at,
            "model": self.models.current.embedder.model_name,
        }
