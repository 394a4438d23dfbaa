"""The Retriever deployment over real Ray Serve (DeploymentHandles to real replicas), on each backend.

pgvector runs two replicas on one table, the way a cluster scales the retriever out: a write through
either replica is seen by searches through both.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

from deployments.retriever import Retriever
from deployments.settings import AutoscalingSettings, RetrieverSettings
from surge_core.store_settings import EmbeddedStoreSettings, PgVectorStoreSettings

pytestmark = pytest.mark.integration

DSN_ENV = "SURGE_TEST_PG_DSN"
DOCS = {
    "cats": [
        {
            "chunk_index": 0,
            "text": "cats purr",
            "embedding": [1.0, 0.0, 0.0, 0.0],
            "metadata": {"kind": "pet"},
        },
        {
            "chunk_index": 1,
            "text": "cats nap",
            "embedding": [0.9, 0.3, 0.0, 0.0],
            "metadata": {"kind": "pet"},
        },
    ],
    "owls": [
        {
            "chunk_index": 0,
            "text": "owls hoot",
            "embedding": [0.0, 0.0, 1.0, 0.0],
            "metadata": {"kind": "bird"},
        }
    ],
}


def settings_for(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> RetrieverSettings:
    common: dict[str, Any] = {"dimensions": 4, "max_top_k": 10, "num_cpus": 0.1}
    if backend == "embedded":
        return RetrieverSettings(
            store=EmbeddedStoreSettings(path=tmp_path / "index"),
            autoscaling=AutoscalingSettings(min_replicas=1, max_replicas=1),
            **common,
        )
    dsn = request.getfixturevalue("pg_dsn")
    return RetrieverSettings(
        store=PgVectorStoreSettings(dsn_env=DSN_ENV, table=f"serve_{uuid.uuid4().hex[:10]}"),
        autoscaling=AutoscalingSettings(min_replicas=2, max_replicas=2),
        env={DSN_ENV: dsn},  # reaches the replicas through the runtime_env, as in a cluster
        **common,
    )


@pytest.mark.parametrize("backend", ["embedded", "pgvector"])
def test_retriever_serves_writes_searches_and_clear_errors(
    backend: str, serve_http_port: int, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    from ray import serve

    settings = settings_for(backend, tmp_path, request)
    app = f"retriever-contract-{backend}"
    started = time.monotonic()
    handle = serve.run(
        Retriever.options(**settings.serve_options("Retriever")).bind(settings), name=app, route_prefix=None
    )
    sys_started = time.monotonic() - started
    try:
        replicas = serve.status().applications[app].deployments["Retriever"].replica_states.get("RUNNING", 0)
        assert replicas == settings.autoscaling.min_replicas

        written = handle.replace_documents.remote(DOCS).result(timeout_s=60)
        assert written == {"written": 3, "unchanged": 0, "deleted": 0, "fenced": 0}
        assert handle.replace_documents.remote(DOCS).result(timeout_s=60)["unchanged"] == 3

        # Calls in concurrent rounds until every replica has answered (the router picks at random): each
        # replica must see the write made through one of them.
        answered_by: set[str] = set()
        for _ in range(20):
            searches = [handle.search.remote([1.0, 0.1, 0.0, 0.0], 2) for _ in range(16)]
            stats_calls = [handle.stats.remote() for _ in range(16)]
            for response in searches:
                hits = response.result(timeout_s=60)
                assert [(h["doc_id"], h["chunk_index"]) for h in hits] == [("cats", 0), ("cats", 1)]
            for response in stats_calls:
                stats = response.result(timeout_s=60)
                assert (stats["chunks"], stats["documents"]) == (3, 2)
                answered_by.add(stats["replica"])
            if len(answered_by) == settings.autoscaling.min_replicas:
                break
        assert len(answered_by) == settings.autoscaling.min_replicas
        birds = handle.search.remote([1.0, 0.1, 0.0, 0.0], 5, {"kind": ["bird"]}).result(timeout_s=60)
        assert [h["text"] for h in birds] == ["owls hoot"]

        with pytest.raises(Exception, match=r"top_k 11 exceeds retriever.max_top_k \(10\)"):
            handle.search.remote([1.0, 0.0, 0.0, 0.0], 11).result(timeout_s=60)
        with pytest.raises(Exception, match="embedding has 3 dimensions"):
            handle.search.remote([1.0, 0.0, 0.0], 1).result(timeout_s=60)

        assert handle.delete_documents.remote(["cats"]).result(timeout_s=60) == 2
        stats = handle.stats.remote().result(timeout_s=60)
        assert (stats["chunks"], stats["documents"], stats["backend"], stats["dimensions"]) == (
            1,
            1,
            backend,
            4,
        )
    finally:
        serve.delete(app)
        if isinstance(settings.store, PgVectorStoreSettings):
            with psycopg.connect(request.getfixturevalue("pg_dsn"), autocommit=True) as conn:
                conn.execute(f"DROP TABLE IF EXISTS {settings.store.table}")
    print(f"\n[{backend}] serve.run to ready: {sys_started:.1f}s")
