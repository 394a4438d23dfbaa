"""Issue 13's lever "tokenise once": one tokenisation per batch serves the forward pass and the usage count.

Against the real all-MiniLM-L6-v2: `TextEmbedder.embed_counted` gives `encode`'s vectors (normalisation,
pooling and `truncate_dim` as configured) and `count_tokens`' counts (truncation included), while the
tokenizer's backend runs once per batch; the gateway's in-process query embedder meters a question from the
same single pass. (The Embedder deployment's use of it, per request of a shared batch, is in
test_embedder_batches_requests_by_their_texts.py.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from deployments.query_embedding import InProcessQueryEmbedder
from deployments.request_timeline import Timeline
from deployments.settings import EmbedderSettings
from surge_core.embedding import EmbeddingModelSettings, TextEmbedder

# Seven texts, batches of three: three batches of mixed lengths, one text past MiniLM's 256-token limit
# (truncated) and an empty one (special tokens only).
TEXTS = [
    "Where is Etna?",
    "volcano " * 400,
    "",
    "The lighthouse is painted red and white, and its lamp turns every ten seconds.",
    "a",
    "Kafka consumer groups commit offsets per partition.",
    "Serve batches requests from many callers into one forward pass.",
]
BATCH = 3


class CountingBackend:
    """Stands in for a fast tokenizer's Rust backend and counts every encode call (any entry point that
    tokenises: `__call__`, `encode`, `encode_plus` all end here)."""

    def __init__(self, inner: Any) -> None:
        self.__dict__["inner"] = inner
        self.__dict__["calls"] = 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not (name.startswith("encode") and callable(attr)):
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.__dict__["calls"] += 1
            return attr(*args, **kwargs)

        return counted

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self.inner, name, value)


def count_tokenizer_calls(embedder: TextEmbedder) -> CountingBackend:
    tokenizer = embedder.model.tokenizer
    backend = CountingBackend(tokenizer._tokenizer)
    tokenizer._tokenizer = backend
    return backend


@pytest.fixture(scope="module")
def minilm() -> Iterator[TextEmbedder]:
    yield TextEmbedder(EmbeddingModelSettings(max_batch_size=BATCH))


def encoded(embedder: TextEmbedder, texts: list[str]) -> np.ndarray:
    """What `encode` gives with the embedder's settings (the path before this lever)."""
    return np.asarray(
        embedder.model.encode(
            texts,
            batch_size=embedder.settings.max_batch_size,
            normalize_embeddings=embedder.settings.normalize,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
    )


@pytest.mark.parametrize(
    "settings",
    [{}, {"normalize": False}, {"truncate_dim": 64}],
    ids=["normalised", "not-normalised", "truncate-dim-64"],
)
def test_the_single_pass_gives_encodes_vectors_as_configured(
    minilm: TextEmbedder, settings: dict[str, Any]
) -> None:
    embedder = (
        minilm if not settings else TextEmbedder(EmbeddingModelSettings(max_batch_size=BATCH, **settings))
    )
    got = embedder.embed_counted(TEXTS)
    expected = encoded(embedder, TEXTS)
    assert got.vectors.dtype == np.float32 and got.vectors.shape == expected.shape
    assert got.vectors.shape[1] == settings.get("truncate_dim", 384)
    np.testing.assert_allclose(got.vectors, expected, atol=1e-5, rtol=0)
    np.testing.assert_array_equal(embedder.embed(TEXTS), got.vectors)


def test_token_counts_equal_a_separate_tokenisation_truncation_included(minilm: TextEmbedder) -> None:
    tokens = minilm.embed_counted(TEXTS).tokens
    assert tokens.tolist() == [minilm.count_tokens([text]) for text in TEXTS]
    assert tokens[1] == minilm.model.max_seq_length == 256  # the long text, as truncated for the model
    assert tokens[2] == 2  # the empty text: [CLS] [SEP]


def test_the_tokenizer_runs_once_per_batch(minilm: TextEmbedder) -> None:
    backend = count_tokenizer_calls(minilm)
    try:
        minilm.embed_counted(TEXTS)
        assert backend.calls == 3  # ceil(7 / 3) batches, vectors and counts from the same tokenisation
        backend.__dict__["calls"] = 0
        minilm.count_tokens(TEXTS)
        assert backend.calls == len(TEXTS), "the counter must see the separate tokenisation it replaces"
    finally:
        minilm.model.tokenizer._tokenizer = backend.inner


def test_the_gateway_meters_a_question_from_the_pass_that_embeds_it() -> None:
    local = InProcessQueryEmbedder(EmbedderSettings())
    model = local.models.current.embedder
    backend = count_tokenizer_calls(model)
    answer = asyncio.run(local.embed(["Where is Etna?"], Timeline()))
    assert backend.calls == 1
    assert answer["tokens"] == model.count_tokens(["Where is Etna?"])
    np.testing.assert_allclose(answer["embeddings"], encoded(model, ["Where is Etna?"]), atol=1e-5, rtol=0)
