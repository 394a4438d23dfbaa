"""The Embedder's dynamic batching: one queue item per request, counted by its texts (`batch_size_fn`)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from deployments.cost_metrics import ReplicaMeter
from deployments.embedder import Embedder, slices, texts_in
from deployments.embedding_versions import LoadedModel
from deployments.settings import EmbedderSettings
from surge_core.embedding import Embedded


class FakeModel:
    """Row i of a call is [len(text), call number]: rows say which text and which forward pass they were."""

    dimensions = 2
    model_name = "fake"

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def embed_counted(self, texts: list[str]) -> Embedded:
        """Each text counts len(text) tokens."""
        self.calls.append(list(texts))
        vectors = np.array([[len(t), len(self.calls)] for t in texts], dtype=np.float32)
        return Embedded(vectors, np.array([len(t) for t in texts], dtype=np.int64))


@pytest.fixture(autouse=True)
def fresh_batch_queue() -> Iterator[None]:
    """Serve keeps one batch queue per decorated method (one replica per process), bound to the event loop
    it was created in: each test runs its own loop, so each gets a fresh queue, and none is left behind (a
    live queue holds weakrefs, and the Embedder class could no longer be pickled by `serve.run`)."""
    lazy = Embedder.func_or_class._embed_batch.set_max_batch_size.__self__
    lazy._queue = None
    yield
    lazy._queue = None


@pytest.fixture(autouse=True)
def replica_context(monkeypatch: pytest.MonkeyPatch) -> None:
    """Serve's batcher reads max_ongoing_requests from the replica context: give it one outside Serve."""
    from types import SimpleNamespace

    from ray.serve import batching

    context = SimpleNamespace(_deployment_config=SimpleNamespace(max_ongoing_requests=64))
    monkeypatch.setattr(batching.serve, "get_replica_context", lambda: context)


# Serve keeps one batch queue per decorated method (one replica per process in Serve), bound to the event
# loop it first ran on: every test here runs on this one loop.
LOOP = asyncio.new_event_loop()


def run(coroutine: Any) -> Any:
    return LOOP.run_until_complete(coroutine)


def replica(max_batch_size: int, wait_s: float = 0.05) -> Any:
    cls = Embedder.func_or_class  # the class under @serve.deployment, run without Serve
    embedder = cls.__new__(cls)
    embedder.settings = EmbedderSettings(max_batch_size=max_batch_size)
    embedder.model = FakeModel()
    loaded = LoadedModel(embedder=embedder.model, version=None)  # type: ignore[arg-type]

    class OneVersion:
        current = loaded

        async def get(self) -> LoadedModel:
            return loaded

    embedder.models = OneVersion()
    embedder.meter = ReplicaMeter("embedder", "fake", gpus=0, started_at=0.0)  # never started: no metrics
    embedder.ready_at = 0.0
    embedder._embed_batch.set_max_batch_size(max_batch_size)
    embedder._embed_batch.set_batch_wait_timeout_s(wait_s)
    return embedder


def test_batch_size_counts_texts_not_requests() -> None:
    assert texts_in([(["a", "b"], None), (["c"], None)]) == 3 and texts_in([]) == 0
    assert slices(list("abcde"), 2) == [["a", "b"], ["c", "d"], ["e"]]


def test_concurrent_requests_share_one_forward_pass_and_get_their_own_rows_in_order() -> None:
    embedder = replica(max_batch_size=8)

    async def both() -> list[dict[str, Any]]:
        return list(await asyncio.gather(embedder.embed(["a", "bb", "ccc"]), embedder.embed(["dddd", "e"])))

    first, second = run(both())
    assert embedder.model.calls == [["a", "bb", "ccc", "dddd", "e"]]
    assert first["embeddings"][:, 0].tolist() == [1, 2, 3] and second["embeddings"][:, 0].tolist() == [4, 1]
    assert first["tokens"] == 6 and second["tokens"] == 5


def test_a_request_bigger_than_a_batch_is_split_and_never_exceeds_max_batch_size() -> None:
    embedder = replica(max_batch_size=4)
    texts = [f"t{i}" * (i + 1) for i in range(10)]
    result = run(embedder.embed(texts))
    assert all(len(call) <= 4 for call in embedder.model.calls)
    assert result["embeddings"][:, 0].tolist() == [len(t) for t in texts]  # every row, in order


def test_requests_that_do_not_fit_together_wait_for_the_next_batch() -> None:
    embedder = replica(max_batch_size=4)

    async def both() -> list[dict[str, Any]]:
        return list(await asyncio.gather(embedder.embed(["a", "b", "c"]), embedder.embed(["d", "e"])))

    first, second = run(both())
    assert sorted(len(call) for call in embedder.model.calls) == [2, 3]  # 3 + 2 > 4: two passes
    assert first["embeddings"].shape == (3, 2) and second["embeddings"].shape == (2, 2)
