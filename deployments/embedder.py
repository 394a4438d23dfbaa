"""The Embedder deployment: sentence-transformers behind Serve's dynamic batching.

Requests from many callers are merged by `@serve.batch` into one forward pass (up to `max_batch_size`
texts, waiting at most `batch_wait_timeout_s`), which is where a CPU replica gets its throughput.

One request is one queue item, whatever its number of inputs: `batch_size_fn` counts each item by its
texts, so a request of 16 inputs fills 16 of the batch's `max_batch_size` slots but costs the batcher one
future, one queue entry and one split, where it used to cost 16 (one per text). A request longer than
`max_batch_size` is cut into items of at most `max_batch_size` texts (Serve refuses an item bigger than a
batch). Measured with `benchmarks.embedding_throughput` (figures in benchmarks/README.md, "Levers").

With `versions_store` set, the model is the active embedding version's (`deployments.embedding_versions`)
and every answer names that version (`embedding_version`), so the Retriever searches the matching index.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
from ray import serve

from deployments.cost_metrics import ReplicaMeter
from deployments.embedding_versions import ActiveEmbeddingModel, LoadedModel
from deployments.observability import record_replica_ready
from deployments.settings import EmbedderSettings
from deployments.stage_tracing import stage_span
from surge_core import tracing


def texts_in(items: list[tuple[list[str], Any]]) -> int:
    """Batch size as Serve should count it: texts, not requests (e.g. [([a, b], m), ([c], m)] -> 3)."""
    return sum(len(texts) for texts, _ in items)


def slices(texts: list[str], size: int) -> list[list[str]]:
    """`texts` cut into consecutive pieces of at most `size` (e.g. 5 texts, size 2 -> 2, 2, 1)."""
    return [texts[start : start + size] for start in range(0, len(texts), size)]


STAGE = "embedder"


@serve.deployment
class Embedder:
    def __init__(self, settings: EmbedderSettings) -> None:
        self.started_at = time.time()
        tracing.configure_tracing("surge")
        self.settings = settings
        self.models = ActiveEmbeddingModel(settings, settings.versions_store)
        self._embed_batch.set_max_batch_size(settings.max_batch_size)
        self._embed_batch.set_batch_wait_timeout_s(settings.batch_wait_timeout_s)
        self.ready_at = time.time()
        record_replica_ready(STAGE, self.started_at, self.ready_at)
        self.meter = ReplicaMeter(
            STAGE, self.models.current.embedder.model_name, gpus=settings.num_gpus, started_at=self.started_at
        )
        self.meter.ready(self.ready_at)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.01, batch_size_fn=texts_in)
    async def _embed_batch(self, items: list[tuple[list[str], LoadedModel]]) -> list[tuple[np.ndarray, int]]:
        # One forward pass per model over every caller's texts; it runs in a thread so health checks and
        # batching keep running meanwhile. Each item carries the model its request started with: across a
        # version switch one batch may hold both, and each text must be embedded by the model whose version
        # its request reports. Each caller gets back its own rows, in order, and the tokens of its texts
        # (from the same tokenisation as the forward pass: nothing is tokenised twice).
        out: list[tuple[np.ndarray, int] | None] = [None] * len(items)
        for model in {id(m): m for _, m in items}.values():
            mine = [i for i, (_, m) in enumerate(items) if m is model]
            texts = [text for i in mine for text in items[i][0]]
            embedded = await asyncio.to_thread(model.embedder.embed_counted, texts)
            bounds = np.cumsum([len(items[i][0]) for i in mine])[:-1]
            parts = zip(np.split(embedded.vectors, bounds), np.split(embedded.tokens, bounds), strict=True)
            for i, (rows, tokens) in zip(mine, parts, strict=True):
                out[i] = (rows, int(tokens.sum()))
        return [part for part in out if part is not None]

    async def embed(self, texts: list[str], trace_context: dict[str, str] | None = None) -> dict[str, Any]:
        """Embed `texts`; they join whatever batch is forming, across all callers. `trace_context` (the
        caller's `surge_core.tracing.carrier()`) makes this call's span a child of the caller's."""
        model = await self.models.get()
        if not texts:
            empty = np.zeros((0, model.embedder.dimensions), np.float32)
            return {"embeddings": empty, "tokens": 0, "embedding_version": model.version}
        with (
            self.meter.busy(),
            stage_span(STAGE, "embedder.embed", trace_context, model.embedder.model_name) as span,
        ):
            parts = await asyncio.gather(
                *(self._embed_batch((part, model)) for part in slices(texts, self.settings.max_batch_size))
            )
            tokens = sum(part_tokens for _, part_tokens in parts)
            tracing.set_attributes(span, **{tracing.TOKENS_IN: tokens, "surge.texts": len(texts)})
        vectors = [rows for rows, _ in parts]
        return {
            "embeddings": vectors[0] if len(vectors) == 1 else np.concatenate(vectors),
            "tokens": tokens,
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
