"""The Embedder deployment: sentence-transformers behind Serve's dynamic batching.

Requests from many callers are merged by `@serve.batch` into one forward pass (up to `max_batch_size`
texts, waiting at most `batch_wait_timeout_s`), which is where a CPU replica gets its throughput.

One request is one queue item, whatever its number of inputs: `batch_size_fn` counts each item by its
texts, so a request of 16 inputs fills 16 of the batch's `max_batch_size` slots but costs the batcher one
future, one queue entry and one split, where it used to cost 16 (one per text). A request longer than
`max_batch_size` is cut into items of at most `max_batch_size` texts (Serve refuses an item bigger than a
batch). Measured with `benchmarks.embedding_throughput` (figures in benchmarks/README.md, "Levers").
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
from ray import serve

from deployments.observability import record_replica_ready
from deployments.settings import EmbedderSettings
from surge_core.embedding import TextEmbedder


def texts_in(items: list[list[str]]) -> int:
    """Batch size as Serve should count it: texts, not requests (e.g. [[a, b], [c]] -> 3)."""
    return sum(len(item) for item in items)


def slices(texts: list[str], size: int) -> list[list[str]]:
    """`texts` cut into consecutive pieces of at most `size` (e.g. 5 texts, size 2 -> 2, 2, 1)."""
    return [texts[start : start + size] for start in range(0, len(texts), size)]


@serve.deployment
class Embedder:
    def __init__(self, settings: EmbedderSettings) -> None:
        self.started_at = time.time()
        self.settings = settings
        self.model = TextEmbedder(settings)
        self._embed_batch.set_max_batch_size(settings.max_batch_size)
        self._embed_batch.set_batch_wait_timeout_s(settings.batch_wait_timeout_s)
        self.ready_at = time.time()
        record_replica_ready("embedder", self.started_at, self.ready_at)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.01, batch_size_fn=texts_in)
    async def _embed_batch(self, items: list[list[str]]) -> list[np.ndarray]:
        # One forward pass over every caller's texts; it runs in a thread so health checks and batching
        # keep running meanwhile. Each caller gets back its own rows, in order.
        vectors = await asyncio.to_thread(self.model.embed, [text for item in items for text in item])
        bounds = np.cumsum([len(item) for item in items])[:-1]
        return list(np.split(vectors, bounds))

    async def embed(self, texts: list[str]) -> dict[str, Any]:
        """Embed `texts`; they join whatever batch is forming, across all callers."""
        if not texts:
            return {"embeddings": np.zeros((0, self.model.dimensions), np.float32), "tokens": 0}
        parts = await asyncio.gather(
            *(self._embed_batch(part) for part in slices(texts, self.settings.max_batch_size))
        )
        return {
            "embeddings": parts[0] if len(parts) == 1 else np.concatenate(parts),
            "tokens": self.model.count_tokens(texts),
            "model": self.model.model_name,
            "ready_at": self.ready_at,
        }

    async def wake(self) -> dict[str, Any]:
        """Cheap call that brings the stage up from zero and reports when this replica became ready."""
        return {
            "replica_started_at": self.started_at,
            "ready_at": self.ready_at,
            "model": self.model.model_name,
        }
