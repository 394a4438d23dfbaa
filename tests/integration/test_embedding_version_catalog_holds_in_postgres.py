"""The embedding-version catalog kept in PostgreSQL (pgvector deployments, real server): a version activates
only when complete, a write that dies half-way leaves the catalog as it was, and a second process sees the
pointer move; a version's index is its own table and stamps its chunks."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from surge_core.embedding import EmbeddingModelSettings
from surge_core.embedding_versions import (
    VERSION_KEY,
    EmbeddingVersion,
    open_version_catalog,
    open_version_store,
)
from surge_core.store_settings import PgVectorStoreSettings
from surge_core.vector_store import ChunkRecord

pytestmark = pytest.mark.integration

DSN_ENV = "SURGE_TEST_PG_DSN"


def test_the_postgres_catalog_activates_complete_versions_atomically(
    pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DSN_ENV, pg_dsn)
    store = PgVectorStoreSettings(dsn_env=DSN_ENV, table=f"t{uuid.uuid4().hex[:10]}", index="exact")
    writer, reader = open_version_catalog(store), open_version_catalog(store)
    try:
        assert reader.active() is None
        writer.register(EmbeddingVersion(name="v1", embedder=EmbeddingModelSettings(), dimensions=384))
        writer.complete("v1")
        writer.activate("v1")
        v2 = EmbeddingVersion(name="v2", embedder=EmbeddingModelSettings(truncate_dim=8), dimensions=8)
        writer.register(v2)
        writer.checkpoint("v2", {0: 12})
        with pytest.raises(ValueError, match="'v2' is building"):
            writer.activate("v2")
        with pytest.raises(RuntimeError), writer._update() as raw:  # dies mid-write
            raw["active"] = "v2"
            raise RuntimeError("killed")
        assert reader.read().active == "v1"
        assert reader.read().versions["v2"].checkpoint == {0: 12}
        writer.complete("v2")
        writer.activate("v2")
        active = reader.active()
        assert active is not None and active.name == "v2" and active.dimensions == 8
    finally:
        writer.close()
        reader.close()
    chunk = ChunkRecord("d1", 0, "text", np.ones(8, np.float32), {})
    with open_version_store(store, v2) as index:
        index.replace_documents({"d1": [chunk]})
        assert index.document_chunks("d1")[0].metadata == {VERSION_KEY: "v2"}
