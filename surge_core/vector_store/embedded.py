"""The embedded vector index: SQLite holds the chunks, FAISS searches them. No server needed.

Why these libraries: SQLite (stdlib) gives transactions, durability (WAL + synchronous=FULL) and safe
multi-process writers (file locks + busy_timeout) for free; FAISS (faiss-cpu, maintained by Meta) gives an
exact inner-product search in optimised BLAS with id selectors for metadata filters. hnswlib and usearch
are approximate and only persist by dumping the whole index (no transactions, one writer); LanceDB is a
heavier dependency (Arrow datasets, background compaction) than a laptop/CI default needs.

Metadata filters use a `chunk_meta(chunk_id, key, kind, value)` table indexed on (key, kind, value): one
indexed look-up per filter key gives the allowed ids, and FAISS searches only those (IDSelectorBatch).

How two processes share one directory (the Retriever searching while ingestion consumers write): every
chunk row gets a never-reused id (AUTOINCREMENT), and each write appends `(chunk_id, added)` entries to a
`changes` log in the same transaction. A reader keeps an in-memory FAISS IndexIDMap2(IndexFlatIP) and the
last change it applied; when `PRAGMA data_version` says another connection committed, it applies the log
entries after that point (or rebuilds from the table if the log was pruned past it).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import faiss
import numpy as np

from surge_core.records import MetadataValue
from surge_core.store_settings import EmbeddedStoreSettings
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

DB_FILE = "index.sqlite3"
# Change-log entries kept after each write; a reader further behind than this rebuilds from the table.
CHANGES_KEPT = 50_000
BUSY_TIMEOUT_MS = 30_000
SCHEMA_VERSION = 1
# SQLite's default limit on host parameters per statement is 32766; stay well below it.
IDS_PER_QUERY = 900

_SCHEMA = """
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    doc_id TEXT NOT NULL,
    chunk_index INTEGER NOT NULL,
    text TEXT NOT NULL,
    metadata TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    embedding BLOB NOT NULL,
    UNIQUE (doc_id, chunk_index)
);
CREATE TABLE IF NOT EXISTS changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    chunk_id INTEGER NOT NULL,
    added INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS store_settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS chunk_meta (
    chunk_id INTEGER NOT NULL,
    key TEXT NOT NULL,
    kind TEXT NOT NULL,
    value
);
CREATE INDEX IF NOT EXISTS chunk_meta_lookup ON chunk_meta (key, kind, value);
CREATE INDEX IF NOT EXISTS chunk_meta_chunk ON chunk_meta (chunk_id);
CREATE TABLE IF NOT EXISTS doc_versions (
    doc_id TEXT PRIMARY KEY,
    source_partition INTEGER NOT NULL,
    source_offset INTEGER NOT NULL
);
"""


@register_backend("embedded")
class EmbeddedVectorStore(VectorStore):
    """SQLite + FAISS in one directory; safe to share between processes (one connection per instance)."""

    backend = "embedded"

    def __init__(self, settings: EmbeddedStoreSettings, dimensions: int) -> None:
        if dimensions < 1:
            raise ValueError(f"dimensions must be >= 1, got {dimensions}")
        self.dimensions = dimensions
        self.path = Path(settings.path).expanduser()
        self.path.mkdir(parents=True, exist_ok=True)
        # One connection guarded by one lock: SQLite connections are not safe for concurrent use, and the
        # FAISS index must change together with the log position it reflects.
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(
            self.path / DB_FILE, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
        )
        self._conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA synchronous = FULL")  # a commit is on disk when replace_documents returns
        with self._write_txn():
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    self._conn.execute(statement)
            self._conn.execute(
                "INSERT OR IGNORE INTO store_settings (key, value) VALUES ('dimensions', ?)",
                (str(dimensions),),
            )
            stored = int(self._setting("dimensions") or dimensions)
            self._backfill_chunk_meta()
        if stored != dimensions:
            self._conn.close()
            raise ValueError(
                f"the index at {self.path} holds {stored}-dimensional embeddings, but {dimensions} were "
                "asked for: point store.path at a new directory to change the embedding model"
            )
        self._index = self._empty_index()
        self._last_seq = 0
        self._data_version = -1
        with self._lock, self._read_txn():
            self._rebuild()

    # ------------------------------------------------------------------------------------- transactions

    @contextmanager
    def _write_txn(self) -> Iterator[None]:
        # IMMEDIATE takes the write lock up front, so two writers queue on busy_timeout instead of one
        # failing with SQLITE_BUSY when it tries to upgrade a read lock.
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    @contextmanager
    def _read_txn(self) -> Iterator[None]:
        # One snapshot for the index refresh and the row look-ups that follow it.
        self._conn.execute("BEGIN")
        try:
            yield
        finally:
            self._conn.execute("COMMIT")

    def _backfill_chunk_meta(self) -> None:
        """Indexes written before `chunk_meta` existed get it filled from the JSON column, once."""
        if self._setting("schema_version") is not None:
            return
        rows = self._conn.execute(
            "SELECT id, metadata FROM chunks WHERE id NOT IN (SELECT chunk_id FROM chunk_meta)"
        ).fetchall()
        for chunk_id, metadata in rows:
            self._conn.executemany(
                "INSERT INTO chunk_meta (chunk_id, key, kind, value) VALUES (?, ?, ?, ?)",
                _meta_rows(int(chunk_id), json.loads(metadata)),
            )
        self._conn.execute(
            "INSERT OR REPLACE INTO store_settings (key, value) VALUES ('schema_version', ?)",
            (str(SCHEMA_VERSION),),
        )

    def _setting(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM store_settings WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    # ------------------------------------------------------------------------------------ index upkeep

    def _empty_index(self) -> faiss.IndexIDMap2:
        return faiss.IndexIDMap2(faiss.IndexFlatIP(self.dimensions))

    def _log_position(self) -> int:
        row = self._conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'changes'").fetchone()
        return 0 if row is None else int(row[0])

    def _add_rows(self, rows: Iterable[tuple[int, bytes]]) -> None:
        ids: list[int] = []
        vectors: list[np.ndarray] = []
        for chunk_id, blob in rows:
            ids.append(chunk_id)
            vectors.append(np.frombuffer(blob, dtype=np.float32))
        if ids:
            self._index.add_with_ids(np.vstack(vectors), np.asarray(ids, dtype=np.int64))

    def _rebuild(self) -> None:
        self._index = self._empty_index()
        self._last_seq = self._log_position()
        self._add_rows(self._conn.execute("SELECT id, embedding FROM chunks"))
        self._data_version = self._conn.execute("PRAGMA data_version").fetchone()[0]

    def _refresh(self) -> None:
        """Bring the FAISS index up to the database's state (call under the lock, inside a transaction)."""
        version = self._conn.execute("PRAGMA data_version").fetchone()[0]
        if version == self._data_version and self._log_position() == self._last_seq:
            return
        pruned_through = int(self._setting("pruned_through") or 0)
        if self._last_seq < pruned_through:
            self._rebuild()
            return
        removed: set[int] = set()
        added: set[int] = set()
        last = self._last_seq
        for seq, chunk_id, was_added in self._conn.execute(
            "SELECT seq, chunk_id, added FROM changes WHERE seq > ? ORDER BY seq", (self._last_seq,)
        ):
            (added if was_added else removed).add(chunk_id)
            last = seq
        if removed:
            self._index.remove_ids(faiss.IDSelectorBatch(np.fromiter(removed, dtype=np.int64)))
        for batch in _batches(sorted(added - removed)):
            marks = ",".join("?" * len(batch))
            self._add_rows(
                self._conn.execute(f"SELECT id, embedding FROM chunks WHERE id IN ({marks})", batch)
            )
        self._last_seq = last
        self._data_version = version

    # ------------------------------------------------------------------------------------------ writes

    def _insert(self, chunk: ChunkRecord, content_hash: str) -> None:
        vector = as_unit_vector(chunk.embedding, self.dimensions, f"document {chunk.doc_id!r}")
        cursor = self._conn.execute(
            "INSERT INTO chunks (doc_id, chunk_index, text, metadata, content_hash, embedding) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (
                chunk.doc_id,
                chunk.chunk_index,
                chunk.text,
                json.dumps(dict(chunk.metadata), sort_keys=True, ensure_ascii=False),
                content_hash,
                vector.tobytes(),
            ),
        )
        chunk_id = int(cursor.lastrowid or 0)
        self._conn.executemany(
            "INSERT INTO chunk_meta (chunk_id, key, kind, value) VALUES (?, ?, ?, ?)",
            _meta_rows(chunk_id, chunk.metadata),
        )
        self._conn.execute("INSERT INTO changes (chunk_id, added) VALUES (?, 1)", (chunk_id,))

    def _delete_rows(self, chunk_ids: Sequence[int]) -> None:
        for batch in _batches(chunk_ids):
            marks = ",".join("?" * len(batch))
            self._conn.execute(f"DELETE FROM chunks WHERE id IN ({marks})", batch)
            self._conn.execute(f"DELETE FROM chunk_meta WHERE chunk_id IN ({marks})", batch)
        self._conn.executemany(
            "INSERT INTO changes (chunk_id, added) VALUES (?, 0)", [(i,) for i in chunk_ids]
        )

    def _prune_log(self) -> None:
        cut = self._log_position() - CHANGES_KEPT
        if cut > int(self._setting("pruned_through") or 0):
            self._conn.execute("DELETE FROM changes WHERE seq <= ?", (cut,))
            self._conn.execute(
                "INSERT OR REPLACE INTO store_settings (key, value) VALUES ('pruned_through', ?)", (str(cut),)
            )

    def _fenced(self, doc_id: str, versions: Mapping[str, DocVersion] | None) -> bool:
        """True if the store holds a newer version of the document; else records the incoming one."""
        incoming = (versions or {}).get(doc_id)
        if incoming is None:
            return False
        row = self._conn.execute(
            "SELECT source_partition, source_offset FROM doc_versions WHERE doc_id = ?", (doc_id,)
        ).fetchone()
        if is_stale(None if row is None else (int(row[0]), int(row[1])), incoming):
            return True
        self._conn.execute(
            "INSERT OR REPLACE INTO doc_versions (doc_id, source_partition, source_offset) VALUES (?, ?, ?)",
            (doc_id, incoming[0], incoming[1]),
        )
        return False

    def replace_documents(
        self, documents: Mapping[str, Sequence[ChunkRecord]], versions: Mapping[str, DocVersion] | None = None
    ) -> WriteResult:
        validate_documents(documents, self.dimensions)
        written = unchanged = deleted = fenced = 0
        with self._lock:
            with self._write_txn():
                for doc_id, chunks in documents.items():
                    if self._fenced(doc_id, versions):
                        fenced += 1
                        continue
                    existing = {
                        index: (chunk_id, content_hash)
                        for chunk_id, index, content_hash in self._conn.execute(
                            "SELECT id, chunk_index, content_hash FROM chunks WHERE doc_id = ?", (doc_id,)
                        )
                    }
                    for chunk in chunks:
                        content_hash = chunk.content_hash
                        old = existing.pop(chunk.chunk_index, None)
                        if old is not None and old[1] == content_hash:
                            unchanged += 1
                            continue
                        if old is not None:
                            # A changed chunk gets a fresh row id, so readers see "old id gone, new id added".
                            self._delete_rows([old[0]])
                        self._insert(chunk, content_hash)
                        written += 1
                    stale = [chunk_id for chunk_id, _ in existing.values()]
                    self._delete_rows(stale)
                    deleted += len(stale)
                self._prune_log()
            with self._read_txn():
                self._refresh()
        return WriteResult(written=written, unchanged=unchanged, deleted=deleted, fenced=fenced)

    def delete_documents(
        self, doc_ids: Sequence[str], versions: Mapping[str, DocVersion] | None = None
    ) -> int:
        removed = 0
        with self._lock:
            with self._write_txn():
                for doc_id in doc_ids:
                    if self._fenced(doc_id, versions):
                        continue
                    ids = [
                        int(row[0])
                        for row in self._conn.execute("SELECT id FROM chunks WHERE doc_id = ?", (doc_id,))
                    ]
                    self._delete_rows(ids)
                    removed += len(ids)
                self._prune_log()
            with self._read_txn():
                self._refresh()
        return removed

    # ------------------------------------------------------------------------------------------- reads

    def search(
        self, embedding: Sequence[float], top_k: int, where: Where | None = None, tenant: str | None = None
    ) -> list[SearchHit]:
        validate_top_k(top_k)
        query = as_unit_vector(embedding, self.dimensions, "query")[None, :]
        filters = normalise_where(where)
        with self._lock, self._read_txn():
            self._refresh()
            params = None
            tenant_sql = self._tenant_sql(tenant)
            if filters or tenant_sql is not None:
                sql, args = _filter_sql(filters) if filters else ("", [])
                if tenant_sql is not None:
                    sql = f"{sql} INTERSECT {tenant_sql[0]}" if sql else tenant_sql[0]
                    args = [*args, *tenant_sql[1]]
                allowed = np.fromiter(
                    (row[0] for row in self._conn.execute(sql, args)),
                    dtype=np.int64,
                )
                if allowed.size == 0:
                    return []
                # Keep the selector in a local: SWIG's `params.sel` does not hold a Python reference to it.
                selector = faiss.IDSelectorBatch(allowed)
                params = faiss.SearchParameters()
                params.sel = selector
            k = min(top_k, self._index.ntotal)
            if k == 0:
                return []
            scores, ids = self._index.search(query, k, params=params)
            ranked = [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]
            rows = self._rows_by_id([i for i, _ in ranked])
        return [
            SearchHit(doc_id=row[0], chunk_index=row[1], text=row[2], metadata=row[3], score=score)
            for chunk_id, score in ranked
            if (row := rows.get(chunk_id)) is not None
        ]

    def _tenant_sql(self, tenant: str | None) -> tuple[str, list[object]] | None:
        """Chunk ids of `tenant` (None: no restriction needed). The default tenant's ids have no `#`;
        while no other tenant has written anything, the restriction is skipped (it would allow every id)."""
        if tenant is None:
            return None
        prefix = stored_prefix(tenant)
        if prefix is not None:
            return "SELECT id FROM chunks WHERE substr(doc_id, 1, ?) = ?", [len(prefix), prefix]
        others = self._conn.execute("SELECT 1 FROM chunks WHERE instr(doc_id, ?) > 0 LIMIT 1", (SEPARATOR,))
        if others.fetchone() is None:
            return None
        return "SELECT id FROM chunks WHERE instr(doc_id, ?) = 0", [SEPARATOR]

    def _rows_by_id(self, ids: Sequence[int]) -> dict[int, tuple[str, int, str, dict[str, MetadataValue]]]:
        rows: dict[int, tuple[str, int, str, dict[str, MetadataValue]]] = {}
        for batch in _batches(ids):
            marks = ",".join("?" * len(batch))
            for chunk_id, doc_id, index, text, metadata in self._conn.execute(
                f"SELECT id, doc_id, chunk_index, text, metadata FROM chunks WHERE id IN ({marks})", batch
            ):
                rows[int(chunk_id)] = (doc_id, int(index), text, json.loads(metadata))
        return rows

    def count_chunks(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT count(*) FROM chunks").fetchone()[0])

    def count_documents(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT count(DISTINCT doc_id) FROM chunks").fetchone()[0])

    def document_chunks(self, doc_id: str) -> list[SearchHit]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT doc_id, chunk_index, text, metadata FROM chunks WHERE doc_id = ?"
                " ORDER BY chunk_index",
                (doc_id,),
            ).fetchall()
        return [
            SearchHit(doc_id=d, chunk_index=int(i), text=t, metadata=json.loads(m), score=1.0)
            for d, i, t, m in rows
        ]

    def close(self) -> None:
        with self._lock:
            self._conn.close()
            self._index = self._empty_index()


def _batches(items: Sequence[int]) -> Iterator[list[int]]:
    for start in range(0, len(items), IDS_PER_QUERY):
        yield list(items[start : start + IDS_PER_QUERY])


def _meta_rows(chunk_id: int, metadata: Mapping[str, MetadataValue]) -> list[tuple[int, str, str, object]]:
    """`chunk_meta` rows: the kind keeps booleans apart from numbers (SQLite stores True as 1)."""
    return [(chunk_id, key, _kind(value), value) for key, value in metadata.items()]


def _kind(value: MetadataValue) -> str:
    if isinstance(value, bool):
        return "bool"
    return "num" if isinstance(value, int | float) else "text"


def _filter_sql(filters: Mapping[str, list[MetadataValue]]) -> tuple[str, list[object]]:
    """Chunk ids matching every key: one indexed `chunk_meta` look-up per key, intersected.

    Numbers compare numerically (SQLite: 2022 = 2022.0); a boolean only matches a boolean.
    """
    selects: list[str] = []
    args: list[object] = []
    for key, values in filters.items():
        alternatives = " OR ".join(["(kind = ? AND value = ?)"] * len(values))
        selects.append(f"SELECT chunk_id FROM chunk_meta WHERE key = ? AND ({alternatives})")
        args.append(key)
        for value in values:
            args.extend([_kind(value), value])
    return " INTERSECT ".join(selects), args
