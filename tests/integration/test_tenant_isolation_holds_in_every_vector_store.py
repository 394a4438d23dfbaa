"""Tenant isolation against every backend (embedded; pgvector with HNSW and with exact scans on a real
PostgreSQL): stored ids are namespaced per tenant, a search with a tenant returns only that tenant's chunks
whatever the filter says, and pgvector connections carry a statement timeout."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from surge_core.store_settings import EmbeddedStoreSettings, PgVectorStoreSettings
from surge_core.tenancy import stored_doc_id
from surge_core.vector_store import ChunkRecord, VectorStore, open_vector_store

DSN_ENV = "SURGE_TEST_PG_DSN"
DIMS = 4


@pytest.fixture(
    params=[
        "embedded",
        pytest.param("pgvector-hnsw", marks=pytest.mark.integration),
        pytest.param("pgvector-exact", marks=pytest.mark.integration),
    ]
)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VectorStore]:
    if request.param == "embedded":
        settings: EmbeddedStoreSettings | PgVectorStoreSettings = EmbeddedStoreSettings(path=tmp_path / "i")
    else:
        request.getfixturevalue("monkeypatch").setenv(DSN_ENV, request.getfixturevalue("pg_dsn"))
        settings = PgVectorStoreSettings(
            dsn_env=DSN_ENV,
            table=f"t_{uuid.uuid4().hex[:12]}",
            pool_size=2,
            index="exact" if request.param == "pgvector-exact" else "hnsw",
            statement_timeout_s=2,
        )
    opened = open_vector_store(settings, DIMS)
    yield opened
    opened.close()


def _chunk(tenant: str, doc_id: str, text: str, **metadata: str) -> dict[str, list[ChunkRecord]]:
    stored = stored_doc_id(tenant, doc_id)
    return {stored: [ChunkRecord(stored, 0, text, [1.0, 0.2, 0.0, 0.0], metadata)]}


def test_each_tenant_searches_only_its_own_chunks_whatever_the_filter(store: VectorStore) -> None:
    for tenant in ("default", "acme", "globex"):
        store.replace_documents(_chunk(tenant, "x", f"{tenant} text", team="red"))
    query = [1.0, 0.0, 0.0, 0.0]
    for tenant in ("default", "acme", "globex"):
        for where in (None, {"team": "red"}, {"team": ["red", "blue"]}):
            hits = store.search(query, 10, where, tenant)
            assert [h.text for h in hits] == [f"{tenant} text"], (tenant, where)
        assert store.search(query, 10, {"team": "blue"}, tenant) == []
    assert store.search(query, 10, None, "initech") == []
    assert len(store.search(query, 10)) == 3  # no tenant: the operator's view of every tenant
    store.delete_documents([stored_doc_id("acme", "x")])
    assert store.search(query, 10, None, "acme") == []
    assert [h.text for h in store.search(query, 10, None, "globex")] == ["globex text"]


@pytest.mark.integration
def test_pgvector_connections_carry_the_statement_timeout(
    pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psycopg

    from surge_core.vector_store.pgvector import connection_timeouts

    settings = PgVectorStoreSettings(dsn_env=DSN_ENV, connect_timeout_s=3, statement_timeout_s=1)
    with psycopg.connect(pg_dsn, **connection_timeouts(settings)) as conn:
        assert conn.execute("SHOW statement_timeout").fetchone() == ("1s",)
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("SELECT pg_sleep(3)")
    assert np.isfinite(settings.connect_timeout_s)
