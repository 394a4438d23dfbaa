"""PostgreSQL + pgvector: the vector index for clusters, where several Retriever replicas share one database.

Chunks live in one table keyed by `(doc_id, chunk_index)`, with the embedding in a `vector(dim)` column
(cosine distance, `<=>`; score = 1 - distance) and metadata as `jsonb` under a GIN index, filtered by containment (`metadata @> '{"lang": "en"}'`, which compares numbers numerically and
keeps booleans apart from numbers). Writers of the same document are serialised by a transaction-scoped
advisory lock per doc_id, taken in sorted order, so two ingestion consumers never deadlock and the
written/unchanged/deleted counts are exact.

`index: hnsw` (default) builds pgvector's HNSW index: fast approximate search on large tables, but every
insert updates the graph (measured here: 10k 384-d chunks took ~80 s to write through the index, against
~5 s without it plus ~8 s to build it afterwards). `index: exact` scans every row: exact results and fast
writes, fine up to tens of thousands of chunks.

Vectors are sent as pgvector's text form (`'[0.1,0.2]'::vector`), which needs no adapter package.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

import numpy as np
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from surge_core.records import MetadataValue
from surge_core.store_settings import PgVectorStoreSettings
from surge_core.tenancy import SEPARATOR, stored_prefix
from surge_core.vector_store.base import (
    ChunkRecord,
    DocVersion,
    SearchHit,
    VectorStore,
    Where,
    WriteResult,
    as_unit_vector,
    is_stale,
    normalise_where,
    register_backend,
    validate_documents,
    validate_top_k,
)

# pgvector's HNSW index covers `vector` columns up to 2,000 dimensions.
HNSW_MAX_DIMENSIONS = 2000
# HNSW's candidate list must be at least top_k long to return top_k rows (pgvector caps it at 1,000).
HNSW_MAX_EF_SEARCH = 1000
SCHEMA_LOCK_KEY = "surge.vector_store.schema"


def vector_literal(vector: np.ndarray) -> str:
    """pgvector's text input form: '[x1,x2,...]' (9 significant digits round-trip a float32)."""
    return "[" + ",".join(f"{float(x):.9g}" for x in vector) + "]"


class _Connections(Protocol):
    def transaction(self) -> Any: ...

    def close(self) -> None: ...


class _PooledConnections:
    """psycopg_pool: a replica's threads search in parallel on up to `pool_size` connections."""

    def __init__(self, dsn: str, pool_size: int, timeouts: dict[str, Any]) -> None:
        from psycopg_pool import ConnectionPool

        self._pool = ConnectionPool(
            dsn,
            kwargs=timeouts,
            min_size=1,
            max_size=pool_size,
            open=True,
            # Test each connection as it is handed out, so a PostgreSQL restart costs no failed request.
            check=ConnectionPool.check_connection,
            name="surge-vector-store",
        )
        self._pool.wait(timeout=30)

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Connection[Any]]:
        with self._pool.connection() as conn, conn.transaction():
            yield conn

    def close(self) -> None:
        self._pool.close()


class _SingleConnection:
    """Fallback without psycopg_pool: one connection, one caller at a time, reopened if it broke."""

    def __init__(self, dsn: str, timeouts: dict[str, Any]) -> None:
        self._dsn = dsn
        self._timeouts = timeouts
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] = psycopg.connect(dsn, **timeouts)

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Connection[Any]]:
        with self._lock:
            if self._conn.closed or self._conn.broken:
                self._conn = psycopg.connect(self._dsn, **self._timeouts)
            with self._conn.transaction():
                yield self._conn

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def connection_timeouts(settings: PgVectorStoreSettings) -> dict[str, Any]:
    """libpq's connect timeout and the server's statement timeout, set on every connection: an unreachable
    database fails a call after `connect_timeout_s`, a stuck query after `statement_timeout_s`, instead of
    holding a Retriever thread (and the request above it) forever. E.g. 5 s and 30 s ->
    `{"connect_timeout": 5, "options": "-c statement_timeout=30000"}`."""
    return {
        "connect_timeout": max(1, round(settings.connect_timeout_s)),
        "options": f"-c statement_timeout={round(settings.statement_timeout_s * 1000)}",
    }


def _open_connections(dsn: str, settings: PgVectorStoreSettings) -> _Connections:
    timeouts = connection_timeouts(settings)
    try:
        import psycopg_pool  # noqa: F401
    except ImportError:
        return _SingleConnection(dsn, timeouts)
    return _PooledConnections(dsn, settings.pool_size, timeouts)


@register_backend("pgvector")
class PgVectorStore(VectorStore):
    """Chunks in one PostgreSQL table; any number of replicas and writers may share it."""

    backend = "pgvector"

    def __init__(self, settings: PgVectorStoreSettings, dimensions: int) -> None:
        if dimensions < 1:
            raise ValueError(f"dimensions must be >= 1, got {dimensions}")
        if settings.index == "hnsw" and dimensions > HNSW_MAX_DIMENSIONS:
            raise ValueError(
                f"store.index 'hnsw': pgvector's HNSW index holds at most {HNSW_MAX_DIMENSIONS} dimensions, "
                f"got {dimensions}; use store.index 'exact'"
            )
        dsn = os.environ.get(settings.dsn_env, "")
        if not dsn:
            raise ValueError(
                f"store.dsn_env: environment variable {settings.dsn_env} is empty or unset; it must hold the "
                "PostgreSQL connection string (scripts/postgres.py start prints one)"
            )
        self.dimensions = dimensions
        self.table = settings.table
        self.exact = settings.index == "exact"
        self.ef_search = settings.ef_search
        self._t = sql.Identifier(settings.table)
        self._versions = sql.Identifier(f"{settings.table}_versions")
        self._connections = _open_connections(dsn, settings)
        try:
            self._iterative_scan = self._create_schema()
        except BaseException:
            self._connections.close()
            raise

    def _create_schema(self) -> bool:
        """Create extension, table and indexes once; returns whether HNSW iterative scans exist (>= 0.8)."""
        with self._connections.transaction() as conn:
            # Replicas starting together would race on CREATE ... IF NOT EXISTS (it is not atomic).
            conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (SCHEMA_LOCK_KEY,))
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            conn.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {t} ("
                    " doc_id text NOT NULL,"
                    " chunk_index integer NOT NULL,"
                    " text text NOT NULL,"
                    " metadata jsonb NOT NULL,"
                    " content_hash text NOT NULL,"
                    " embedding vector({dim}) NOT NULL,"
                    " PRIMARY KEY (doc_id, chunk_index))"
                ).format(t=self._t, dim=sql.Literal(self.dimensions))
            )
            row = conn.execute(
                "SELECT atttypmod FROM pg_attribute"
                " WHERE attrelid = to_regclass(%s) AND attname = 'embedding'",
                (self.table,),
            ).fetchone()
            stored = None if row is None else int(row[0])
            if stored != self.dimensions:
                raise ValueError(
                    f"table {self.table!r} holds {stored}-dimensional embeddings, but {self.dimensions} were "
                    "asked for: use another store.table to change the embedding model"
                )
            conn.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {v} (doc_id text PRIMARY KEY,"
                    " source_partition integer NOT NULL, source_offset bigint NOT NULL)"
                ).format(v=self._versions)
            )
            if not self.exact:
                conn.execute(
                    sql.SQL(
                        "CREATE INDEX IF NOT EXISTS {name} ON {t} USING hnsw (embedding vector_cosine_ops)"
                    ).format(name=sql.Identifier(f"{self.table}_embedding_hnsw"), t=self._t)
                )
            conn.execute(
                sql.SQL(
                    "CREATE INDEX IF NOT EXISTS {name} ON {t} USING gin (metadata jsonb_path_ops)"
                ).format(name=sql.Identifier(f"{self.table}_metadata_gin"), t=self._t)
            )
            version_row = conn.execute(
                "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
            ).fetchone()
        version = tuple(int(part) for part in str(version_row[0] if version_row else "0").split(".")[:2])
        return version >= (0, 8)

    # ------------------------------------------------------------------------------------------ writes

    def _lock_documents(self, conn: psycopg.Connection[Any], doc_ids: Sequence[str]) -> None:
        """Transaction-scoped advisory lock per document, in sorted order (writers never deadlock)."""
        for doc_id in sorted(set(doc_ids)):
            conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"{self.table}:{doc_id}",))

    def _unfenced(
        self, conn: psycopg.Connection[Any], doc_ids: Sequence[str], versions: Mapping[str, DocVersion] | None
    ) -> list[str]:
        """The doc_ids whose incoming version is not older than the stored one (under the document locks),
        recording the incoming versions of those."""
        if not versions:
            return list(doc_ids)
        stored = {
            doc_id: (int(partition), int(offset))
            for doc_id, partition, offset in conn.execute(
                sql.SQL(
                    "SELECT doc_id, source_partition, source_offset FROM {v} WHERE doc_id = ANY(%s)"
                ).format(v=self._versions),
                (list(doc_ids),),
            )
        }
        keep = [d for d in doc_ids if not is_stale(stored.get(d), versions.get(d))]
        rows = [(d, *versions[d]) for d in keep if d in versions]
        if rows:
            with conn.cursor() as cursor:
                cursor.executemany(
                    sql.SQL(
                        "INSERT INTO {v} (doc_id, source_partition, source_offset) VALUES (%s, %s, %s)"
                        " ON CONFLICT (doc_id) DO UPDATE SET source_partition = EXCLUDED.source_partition,"
                        " source_offset = EXCLUDED.source_offset"
                    ).format(v=self._versions),
                    rows,
                )
        return keep

    def replace_documents(
        self, documents: Mapping[str, Sequence[ChunkRecord]], versions: Mapping[str, DocVersion] | None = None
    ) -> WriteResult:
        validate_documents(documents, self.dimensions)
        if not documents:
            return WriteResult(written=0, unchanged=0, deleted=0)
        written_rows: list[tuple[str, int, str, Jsonb, str, str]] = []
        stale: dict[str, list[int]] = {}
        unchanged = 0
        with self._connections.transaction() as conn:
            self._lock_documents(conn, list(documents))
            keep = set(self._unfenced(conn, list(documents), versions))
            fenced = len(documents) - len(keep)
            documents = {d: chunks for d, chunks in documents.items() if d in keep}
            existing: dict[tuple[str, int], str] = {
                (doc_id, int(index)): content_hash
                for doc_id, index, content_hash in conn.execute(
                    sql.SQL(
                        "SELECT doc_id, chunk_index, content_hash FROM {t} WHERE doc_id = ANY(%s)"
                    ).format(t=self._t),
                    (list(documents),),
                )
            }
            for doc_id, chunks in documents.items():
                kept = set()
                for chunk in chunks:
                    kept.add(chunk.chunk_index)
                    content_hash = chunk.content_hash
                    if existing.get((doc_id, chunk.chunk_index)) == content_hash:
                        unchanged += 1
                        continue
                    vector = as_unit_vector(chunk.embedding, self.dimensions, f"document {doc_id!r}")
                    written_rows.append(
                        (
                            doc_id,
                            chunk.chunk_index,
                            chunk.text,
                            Jsonb(dict(chunk.metadata)),
                            content_hash,
                            vector_literal(vector),
                        )
                    )
                old_indexes = [index for (d, index) in existing if d == doc_id and index not in kept]
                if old_indexes:
                    stale[doc_id] = old_indexes
            if written_rows:
                with conn.cursor() as cursor:
                    cursor.executemany(
                        sql.SQL(
                            "INSERT INTO {t} (doc_id, chunk_index, text, metadata, content_hash, embedding)"
                            " VALUES (%s, %s, %s, %s, %s, %s::vector)"
                            " ON CONFLICT (doc_id, chunk_index) DO UPDATE SET text = EXCLUDED.text,"
                            " metadata = EXCLUDED.metadata, content_hash = EXCLUDED.content_hash,"
                            " embedding = EXCLUDED.embedding"
                        ).format(t=self._t),
                        written_rows,
                    )
            deleted = 0
            for doc_id, indexes in stale.items():
                cursor = conn.execute(
                    sql.SQL("DELETE FROM {t} WHERE doc_id = %s AND chunk_index = ANY(%s)").format(t=self._t),
                    (doc_id, indexes),
                )
                deleted += cursor.rowcount
        return WriteResult(written=len(written_rows), unchanged=unchanged, deleted=deleted, fenced=fenced)

    def delete_documents(
        self, doc_ids: Sequence[str], versions: Mapping[str, DocVersion] | None = None
    ) -> int:
        if not doc_ids:
            return 0
        with self._connections.transaction() as conn:
            # The same per-document locks as replace_documents: a delete and an upsert of one document
            # are serialised, and the written/deleted counts stay exact.
            self._lock_documents(conn, doc_ids)
            keep = self._unfenced(conn, list(doc_ids), versions)
            if not keep:
                return 0
            cursor = conn.execute(
                sql.SQL("DELETE FROM {t} WHERE doc_id = ANY(%s)").format(t=self._t), (keep,)
            )
            return int(cursor.rowcount)

    # ------------------------------------------------------------------------------------------- reads

    def search(
        self, embedding: Sequence[float], top_k: int, where: Where | None = None, tenant: str | None = None
    ) -> list[SearchHit]:
        validate_top_k(top_k)
        query = vector_literal(as_unit_vector(embedding, self.dimensions, "query"))
        filters = normalise_where(where)
        conditions: list[sql.Composable] = []
        args: list[Any] = [query]
        if tenant is not None:
            # The tenant's stored ids (see surge_core.tenancy): a prefix, or no `#` for the default tenant.
            prefix = stored_prefix(tenant)
            if prefix is None:
                conditions.append(sql.SQL("strpos(doc_id, %s) = 0"))
                args.append(SEPARATOR)
            else:
                conditions.append(sql.SQL("left(doc_id, %s) = %s"))
                args.extend([len(prefix), prefix])
        for key, values in filters.items():
            alternatives = sql.SQL(" OR ").join([sql.SQL("metadata @> %s")] * len(values))
            conditions.append(sql.SQL("({})").format(alternatives))
            args.extend(Jsonb({key: value}) for value in values)
        where_sql = sql.SQL(" WHERE ") + sql.SQL(" AND ").join(conditions) if conditions else sql.SQL("")
        statement = sql.SQL(
            "SELECT doc_id, chunk_index, text, metadata, 1 - (embedding <=> %s::vector) AS score"
            " FROM {t}{where} ORDER BY embedding <=> %s::vector LIMIT %s"
        ).format(t=self._t, where=where_sql)
        args.extend([query, top_k])
        with self._connections.transaction() as conn:
            if self.exact:
                # An HNSW index left by an earlier `index: hnsw` setting must not make results approximate;
                # bitmap scans (the metadata GIN index) stay allowed.
                conn.execute("SELECT set_config('enable_indexscan', 'off', true)")
            ef_search = min(HNSW_MAX_EF_SEARCH, max(self.ef_search, top_k))
            conn.execute("SELECT set_config('hnsw.ef_search', %s, true)", (str(ef_search),))
            if conditions and self._iterative_scan and not self.exact:
                # Without it, HNSW filters *after* its candidate list and can return fewer than top_k rows.
                conn.execute("SELECT set_config('hnsw.iterative_scan', 'strict_order', true)")
            rows = conn.execute(statement, args).fetchall()
        return [
            SearchHit(doc_id=d, chunk_index=int(i), text=t, metadata=_metadata(m), score=float(s))
            for d, i, t, m, s in rows
        ]

    def count_chunks(self) -> int:
        with self._connections.transaction() as conn:
            row = conn.execute(sql.SQL("SELECT count(*) FROM {t}").format(t=self._t)).fetchone()
        return int(row[0]) if row else 0

    def count_documents(self) -> int:
        with self._connections.transaction() as conn:
            row = conn.execute(sql.SQL("SELECT count(DISTINCT doc_id) FROM {t}").format(t=self._t)).fetchone()
        return int(row[0]) if row else 0

    def document_chunks(self, doc_id: str) -> list[SearchHit]:
        with self._connections.transaction() as conn:
            rows = conn.execute(
                sql.SQL(
                    "SELECT doc_id, chunk_index, text, metadata FROM {t} WHERE doc_id = %s"
                    " ORDER BY chunk_index"
                ).format(t=self._t),
                (doc_id,),
            ).fetchall()
        return [
            SearchHit(doc_id=d, chunk_index=int(i), text=t, metadata=_metadata(m), score=1.0)
            for d, i, t, m in rows
        ]

    def close(self) -> None:
        self._connections.close()


def _metadata(value: Any) -> dict[str, MetadataValue]:
    return dict(value) if isinstance(value, Mapping) else {}
