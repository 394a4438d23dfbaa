"""The Embedder deployment: sentence-transformers behind Serve's dynamic batching.

Requests from many callers are merged by `@serve.batch` into one forward pass (up to `max_batch_size`
texts, waiting at most `batch_wait_timeout_s`), which is where a CPU replica gets its throughput.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
from ray import serve

from deployments.cost_metrics import ReplicaMeter
from deployments.observability import record_replica_ready
from deployments.settings import EmbedderSettings
from deployments.stage_tracing import stage_span
from surge_core import tracing
from surge_core.embedding import TextEmbedder

STAGE = "embedder"


@serve.deployment
class Embedder:
    def __init__(self, settings: EmbedderSettings) -> None:
        self.started_at = time.time()
        tracing.configure_tracing("surge")
        self.settings = settings
        self.model = TextEmbedder(settings)
        self._embed_batch.set_max_batch_size(settings.max_batch_size)
        self._embed_batch.set_batch_wait_timeout_s(settings.batch_wait_timeout_s)
        self.ready_at = time.time()
        record_replica_ready(STAGE, self.started_at, self.ready_at)
        self.meter = ReplicaMeter(
            STAGE, self.model.model_name, gpus=settings.num_gpus, started_at=self.started_at
        )
        self.meter.ready(self.ready_at)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.01)
    async def _embed_batch(self, texts: list[str]) -> list[np.ndarray]:
        # The forward pass runs in a thread so health checks and batching keep running meanwhile.
        vectors = await asyncio.to_thread(self.model.embed, texts)
        return list(vectors)

    async def embed(self, texts: list[str], trace_context: dict[str, str] | None = None) -> dict[str, Any]:
        """Embed `texts`; each text joins whatever batch is forming, across all callers. `trace_context`
        (the caller's `surge_core.tracing.carrier()`) makes this call's span a child of the caller's."""
        if not texts:
            return {"embeddings": np.zeros((0, self.model.dimensions), np.float32), "tokens": 0}
        with (
            self.meter.busy(),
            stage_span(STAGE, "embedder.embed", trace_context, self.model.model_name) as span,
        ):
            vectors = await asyncio.gather(*(self._embed_batch(text) for text in texts))
            tokens = self.model.count_tokens(texts)
            tracing.set_attributes(span, **{tracing.TOKENS_IN: tokens, "surge.texts": len(texts)})
        return {
            "embeddings": np.stack(vectors),
            "tokens": tokens,
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
