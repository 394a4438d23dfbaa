"""The Retriever replica's own logic (argument checks, dict conversion), on a real embedded store, without
Serve: the deployment's class is called directly. Over real Serve, see the integration contract test."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from deployments.retriever import Retriever
from deployments.settings import RetrieverSettings
from surge_core.store_settings import EmbeddedStoreSettings, PgVectorStoreSettings


def make_replica(tmp_path: Path, **overrides: Any) -> Any:
    settings = RetrieverSettings(store=EmbeddedStoreSettings(path=tmp_path), dimensions=3, **overrides)
    return Retriever.func_or_class(settings)


DOCS = {
    "a": [
        {
            "doc_id": "a",
            "chunk_index": 0,
            "text": "apples",
            "embedding": [1.0, 0.0, 0.0],
            "metadata": {"k": "x"},
        },
        {"chunk_index": 1, "text": "avocados", "embedding": [0.9, 0.1, 0.0]},  # doc_id taken from the key
    ],
    "b": [
        {
            "doc_id": "b",
            "chunk_index": 0,
            "text": "bananas",
            "embedding": [0.0, 1.0, 0.0],
            "metadata": {"k": "y"},
        }
    ],
}


def test_replace_documents_takes_chunk_dicts_and_reports_counts(tmp_path: Path) -> None:
    replica = make_replica(tmp_path)
    assert asyncio.run(replica.replace_documents(DOCS)) == {
        "written": 3,
        "unchanged": 0,
        "deleted": 0,
        "fenced": 0,
    }
    assert asyncio.run(replica.replace_documents(DOCS)) == {
        "written": 0,
        "unchanged": 3,
        "deleted": 0,
        "fenced": 0,
    }


def test_search_returns_hits_as_plain_dicts_best_first(tmp_path: Path) -> None:
    replica = make_replica(tmp_path)
    asyncio.run(replica.replace_documents(DOCS))
    hits = asyncio.run(replica.search([1.0, 0.0, 0.0], 2))
    assert [(h["doc_id"], h["chunk_index"], h["text"]) for h in hits] == [
        ("a", 0, "apples"),
        ("a", 1, "avocados"),
    ]
    assert hits[0] == {
        "doc_id": "a",
        "chunk_index": 0,
        "text": "apples",
        "metadata": {"k": "x"},
        "score": 1.0,
    }
    assert [h["doc_id"] for h in asyncio.run(replica.search([1.0, 0.0, 0.0], 5, {"k": "y"}))] == ["b"]


def test_top_k_above_the_limit_is_rejected_with_the_setting_named(tmp_path: Path) -> None:
    replica = make_replica(tmp_path, max_top_k=5)
    with pytest.raises(ValueError, match=r"top_k 6 exceeds retriever.max_top_k \(5\)"):
        asyncio.run(replica.search([1.0, 0.0, 0.0], 6))
    with pytest.raises(ValueError, match="positive integer"):
        asyncio.run(replica.search([1.0, 0.0, 0.0], 0))


def test_malformed_chunks_are_rejected_before_anything_is_written(tmp_path: Path) -> None:
    replica = make_replica(tmp_path)
    with pytest.raises(ValueError, match=r"unknown chunk fields \['vector'\]"):
        asyncio.run(replica.replace_documents({"a": [{"chunk_index": 0, "text": "t", "vector": [1, 0, 0]}]}))
    with pytest.raises(ValueError, match=r"missing \['embedding'\]"):
        asyncio.run(replica.replace_documents({"a": [{"chunk_index": 0, "text": "t"}]}))
    assert asyncio.run(replica.stats())["chunks"] == 0


def test_delete_and_stats(tmp_path: Path) -> None:
    replica = make_replica(tmp_path)
    asyncio.run(replica.replace_documents(DOCS))
    assert asyncio.run(replica.stats()) == {
        "chunks": 3,
        "documents": 2,
        "backend": "embedded",
        "dimensions": 3,
        "replica": None,  # not inside Serve
    }
    assert asyncio.run(replica.delete_documents(["a", "unknown"])) == 2
    assert asyncio.run(replica.stats())["documents"] == 1


def test_a_pgvector_retriever_without_its_dsn_fails_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SURGE_UNSET_DSN", raising=False)
    settings = RetrieverSettings(store=PgVectorStoreSettings(dsn_env="SURGE_UNSET_DSN"))
    with pytest.raises(ValueError, match="SURGE_UNSET_DSN"):
        Retriever.func_or_class(settings)


def test_the_embedded_index_cannot_be_scaled_out() -> None:
    from deployments.settings import AutoscalingSettings

    with pytest.raises(ValueError, match="max_replicas must be 1"):
        RetrieverSettings(autoscaling=AutoscalingSettings(max_replicas=2))
    scaled = RetrieverSettings(store=PgVectorStoreSettings(), autoscaling=AutoscalingSettings(max_replicas=4))
    assert scaled.serve_options("Retriever")["autoscaling_config"]["max_replicas"] == 4


def test_hnsw_beyond_its_dimension_limit_is_rejected_naming_the_setting() -> None:
    settings = RetrieverSettings(store=PgVectorStoreSettings(index="hnsw"), dimensions=3072)
    with pytest.raises(ValueError, match="store.index 'hnsw'.*at most 2000 dimensions.*'exact'"):
        Retriever.func_or_class(settings)
