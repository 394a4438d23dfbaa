"""`gateway.embed_queries: gateway` embeds a RAG question in the gateway replica with the Embedder's own
model (same vectors, so the index still matches), and the default keeps the Embedder stage."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from pydantic import ValidationError

from deployments.query_embedding import InProcessQueryEmbedder, build_query_embedder
from deployments.request_timeline import Timeline
from deployments.settings import AppSettings, EmbedderSettings
from surge_core.embedding import TextEmbedder


def test_the_gateway_embeds_a_question_as_the_embedder_would_and_marks_the_timeline() -> None:
    settings = EmbedderSettings()
    local = build_query_embedder("gateway", settings, stage=None)  # type: ignore[arg-type]
    assert isinstance(local, InProcessQueryEmbedder)
    timeline = Timeline()
    answer = asyncio.run(local.embed(["What colour is the lighthouse?"], timeline))
    expected = TextEmbedder(settings).embed(["What colour is the lighthouse?"])
    assert np.allclose(answer["embeddings"], expected, atol=1e-5)
    assert answer["tokens"] > 0 and answer["embedding_version"] is None
    assert "embedded" in timeline.marks


def test_by_default_questions_go_through_the_embedder_stage() -> None:
    stage = object()
    assert AppSettings().gateway.embed_queries == "embedder"
    assert build_query_embedder("embedder", EmbedderSettings(), stage) is stage  # type: ignore[arg-type]


def test_an_unknown_place_fails_at_load_naming_the_field() -> None:
    with pytest.raises(ValidationError, match="embed_queries"):
        AppSettings.model_validate({"gateway": {"embed_queries": "retriever"}})
