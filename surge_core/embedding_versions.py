"""Embedding versions: which embedding model built which index, and which index serving searches.

Changing the embedding model changes the vector space, so an index built with one model cannot be searched
with vectors of another (different dimensions at worst, meaningless neighbours at best). Each *embedding
version* is a named model setting (`EmbeddingVersion`) with an index of its own:

- embedded store: the directory `<store.path>/versions/<name>`; pgvector: the table `<store.table>_v_<name>`;
- every chunk written into a version carries `metadata["embedding_version"] = <name>` (`VersionStampedStore`),
  so a chunk found anywhere says which model embedded it;
- a *catalog* next to the store (`<store.path>/versions.json`, or the row of `<store.table>_embedding_versions`)
  records each version's model, dimensions, state (`building` -> `complete`), its rebuild checkpoint (the
  next `documents` offset per partition) and the `active` pointer.

The lifecycle: `register` a version (state building) -> the re-embedding job (`pipelines.reembed`) replays
the compacted `documents` topic into it, `checkpoint`ing after each batch -> `complete` -> `activate`.
Activation is one atomic write of the catalog (file: write + fsync + rename; PostgreSQL: one transaction),
and it refuses a version that is not complete, so serving never sees a half-built index. Until then the
previous active version (or, with none, the store's base index) keeps answering. A crash mid-rebuild leaves
the catalog as it was at the last checkpoint: the old version active, the new one `building` with the
offsets to resume from.

No active version means the store's base location and the embedder's own settings: the behaviour of an
index built before versions existed.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from surge_core.embedding import EmbeddingModelSettings
from surge_core.store_settings import EmbeddedStoreSettings, PgVectorStoreSettings, StrictModel
from surge_core.vector_store import (
    ChunkRecord,
    SearchHit,
    VectorStore,
    Where,
    WriteResult,
    open_vector_store,
)
from surge_core.vector_store.base import DocVersion

VERSION_KEY = "embedding_version"
CATALOG_FILE = "versions.json"
VERSION_NAME = r"^[a-z0-9][a-z0-9_]{0,23}$"
StoreSettings = EmbeddedStoreSettings | PgVectorStoreSettings


class EmbeddingVersion(StrictModel):
    """One embedding version: a name and the model settings every vector of its index was made with."""

    name: str = Field(pattern=VERSION_NAME, description="Version name (lower case, digits, '_'; <= 24).")
    embedder: EmbeddingModelSettings = Field(description="The embedding model of this version.")
    dimensions: int = Field(ge=1, le=16000, description="Dimensions of this version's vectors.")
    state: Literal["building", "complete"] = Field("building", description="Only complete ones activate.")
    checkpoint: dict[int, int] = Field(
        default_factory=dict, description="Next `documents` offset per partition to re-embed from."
    )

    def same_model(self, other: EmbeddingVersion) -> bool:
        """Same embedding space: the model and what changes its vectors (batch size and threads do not)."""
        fields = ("model", "normalize", "truncate_dim")
        return self.dimensions == other.dimensions and all(
            getattr(self.embedder, f) == getattr(other.embedder, f) for f in fields
        )


class CatalogState(StrictModel):
    """The whole catalog, read and written as one document."""

    active: str | None = Field(None, description="The version serving searches (None: the base index).")
    versions: dict[str, EmbeddingVersion] = Field(default_factory=dict, description="Versions by name.")


def version_store_settings(store: StoreSettings, name: str) -> StoreSettings:
    """Where version `name`'s index lives: a sub-directory (embedded) or a sibling table (pgvector)."""
    if re.fullmatch(VERSION_NAME, name) is None:
        raise ValueError(f"embedding version {name!r} must match {VERSION_NAME}")
    if isinstance(store, EmbeddedStoreSettings):
        return store.model_copy(update={"path": Path(store.path) / "versions" / name})
    return store.model_copy(update={"table": f"{store.table}_v_{name}"[:63]})


class VersionCatalog(ABC):
    """The version bookkeeping; backends only supply one atomic read-modify-write of `CatalogState`."""

    @abstractmethod
    @contextmanager
    def _update(self) -> Iterator[dict[str, Any]]:
        """Yield the catalog as a dict under an exclusive lock; what it holds on exit is stored atomically
        (an exception leaves the stored catalog unchanged)."""

    @abstractmethod
    def read(self) -> CatalogState:
        """The catalog as last committed."""

    def close(self) -> None:  # noqa: B027  (a backend without resources needs nothing)
        """Release connections."""

    def _change(self, apply: Callable[[CatalogState], CatalogState]) -> CatalogState:
        with self._update() as raw:
            new = apply(CatalogState.model_validate(raw))
            raw.clear()
            raw.update(new.model_dump(mode="json"))
        return new

    def active(self) -> EmbeddingVersion | None:
        state = self.read()
        return None if state.active is None else state.versions[state.active]

    def register(self, version: EmbeddingVersion) -> EmbeddingVersion:
        """Add `version` as building, or return the stored one of that name (a rebuild resumes). The same
        name with another model is refused: a name means one embedding space, for good."""

        def apply(state: CatalogState) -> CatalogState:
            stored = state.versions.get(version.name)
            if stored is not None:
                if not stored.same_model(version):
                    raise ValueError(
                        f"embedding version {version.name!r} exists with another model "
                        f"({stored.embedder.model}, {stored.dimensions} dimensions): choose a new name"
                    )
                return state
            fresh = version.model_copy(update={"state": "building", "checkpoint": {}})
            return state.model_copy(update={"versions": {**state.versions, version.name: fresh}})

        return self._change(apply).versions[version.name]

    def checkpoint(self, name: str, next_offsets: Mapping[int, int]) -> None:
        """Record that `documents` is re-embedded into `name` up to (not including) these offsets."""
        self._set(name, lambda v: v.model_copy(update={"checkpoint": {**v.checkpoint, **next_offsets}}))

    def complete(self, name: str) -> None:
        self._set(name, lambda v: v.model_copy(update={"state": "complete"}))

    def activate(self, name: str) -> None:
        """Point serving at `name`: one atomic catalog write, refused unless the version is complete."""

        def apply(state: CatalogState) -> CatalogState:
            version = _known(state, name)
            if version.state != "complete":
                raise ValueError(
                    f"embedding version {name!r} is {version.state}: only a complete one activates"
                )
            return state.model_copy(update={"active": name})

        self._change(apply)

    def _set(self, name: str, change: Callable[[EmbeddingVersion], EmbeddingVersion]) -> None:
        def apply(state: CatalogState) -> CatalogState:
            return state.model_copy(
                update={"versions": {**state.versions, name: change(_known(state, name))}}
            )

        self._change(apply)


def _known(state: CatalogState, name: str) -> EmbeddingVersion:
    try:
        return state.versions[name]
    except KeyError:
        raise ValueError(
            f"embedding version {name!r} is not registered; known: {sorted(state.versions)}"
        ) from None


class FileVersionCatalog(VersionCatalog):
    """`<store.path>/versions.json`, changed under an flock and replaced by rename (atomic on POSIX)."""

    def __init__(self, store: EmbeddedStoreSettings) -> None:
        self.path = Path(store.path).expanduser() / CATALOG_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_path = self.path.with_suffix(".lock")

    def read(self) -> CatalogState:
        try:
            return CatalogState.model_validate_json(self.path.read_bytes())
        except FileNotFoundError:
            return CatalogState()

    def stamp(self) -> tuple[int, int] | None:
        """(mtime_ns, inode) of the catalog: changes whenever it is replaced (cheap to poll)."""
        try:
            info = self.path.stat()
        except FileNotFoundError:
            return None
        return (info.st_mtime_ns, info.st_ino)

    @contextmanager
    def _update(self) -> Iterator[dict[str, Any]]:
        with open(self._lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            raw = self.read().model_dump(mode="json")
            yield raw
            tmp = self.path.with_suffix(f".tmp{os.getpid()}")
            with open(tmp, "w") as out:
                json.dump(raw, out, indent=1, sort_keys=True)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)


class PgVersionCatalog(VersionCatalog):
    """One jsonb row in `<store.table>_embedding_versions`, changed in a transaction holding its row lock."""

    def __init__(self, store: PgVectorStoreSettings) -> None:
        import psycopg

        dsn = os.environ.get(store.dsn_env)
        if not dsn:
            raise ValueError(f"store.dsn_env: environment variable {store.dsn_env} is not set")
        self._conn = psycopg.connect(dsn, autocommit=False, connect_timeout=int(store.connect_timeout_s))
        # Not `<table>_versions`: the pgvector store keeps its documents' Kafka versions there.
        self._table = f"{store.table}_embedding_versions"[:63]
        with self._conn.transaction():
            self._conn.execute(
                f"CREATE TABLE IF NOT EXISTS {self._table} (id int PRIMARY KEY, doc jsonb NOT NULL)"
            )
            self._conn.execute(f"INSERT INTO {self._table} VALUES (1, '{{}}') ON CONFLICT DO NOTHING")
        self._conn.commit()

    def read(self) -> CatalogState:
        with self._conn.transaction():
            row = self._conn.execute(f"SELECT doc FROM {self._table} WHERE id = 1").fetchone()
        return CatalogState.model_validate(row[0] if row else {})

    @contextmanager
    def _update(self) -> Iterator[dict[str, Any]]:
        from psycopg.types.json import Jsonb

        with self._conn.transaction():
            row = self._conn.execute(f"SELECT doc FROM {self._table} WHERE id = 1 FOR UPDATE").fetchone()
            raw = dict(row[0]) if row else {}
            yield raw
            self._conn.execute(f"UPDATE {self._table} SET doc = %s WHERE id = 1", (Jsonb(raw),))

    def close(self) -> None:
        self._conn.close()


class EmbeddingVersionFollower:
    """A store's active version for a writer that asks per batch: `due()` at most every `refresh_s`."""

    def __init__(self, store: StoreSettings, refresh_s: float = 1.0) -> None:
        self._catalog = open_version_catalog(store)
        self._refresh_s = refresh_s
        self._checked_at = time.monotonic()

    def due(self) -> bool:
        now = time.monotonic()
        if now - self._checked_at < self._refresh_s:
            return False
        self._checked_at = now
        return True

    def active(self) -> EmbeddingVersion | None:
        return self._catalog.active()

    def close(self) -> None:
        self._catalog.close()


_CATALOGS: dict[str, Callable[[Any], VersionCatalog]] = {
    "embedded": FileVersionCatalog,
    "pgvector": PgVersionCatalog,
}


def open_version_catalog(store: StoreSettings) -> VersionCatalog:
    """The catalog kept next to `store` (the backend's own kind)."""
    return _CATALOGS[store.backend](store)


class VersionStampedStore(VectorStore):
    """A version's index: every chunk written gets `metadata["embedding_version"] = name`; the rest is the
    wrapped store's."""

    def __init__(self, inner: VectorStore, name: str) -> None:
        self.inner = inner
        self.name = name
        self.dimensions = inner.dimensions
        self.backend = inner.backend

    def replace_documents(
        self, documents: Mapping[str, Sequence[ChunkRecord]], versions: Mapping[str, DocVersion] | None = None
    ) -> WriteResult:
        stamped = {
            doc_id: [replace(c, metadata={**c.metadata, VERSION_KEY: self.name}) for c in chunks]
            for doc_id, chunks in documents.items()
        }
        return self.inner.replace_documents(stamped, versions)

    def delete_documents(
        self, doc_ids: Sequence[str], versions: Mapping[str, DocVersion] | None = None
    ) -> int:
        return self.inner.delete_documents(doc_ids, versions)

    def search(
        self, embedding: Sequence[float], top_k: int, where: Where | None = None, tenant: str | None = None
    ) -> list[SearchHit]:
        return self.inner.search(embedding, top_k, where, tenant)

    def count_chunks(self) -> int:
        return self.inner.count_chunks()

    def count_documents(self) -> int:
        return self.inner.count_documents()

    def document_chunks(self, doc_id: str) -> list[SearchHit]:
        return self.inner.document_chunks(doc_id)

    def close(self) -> None:
        self.inner.close()


def open_version_store(store: StoreSettings, version: EmbeddingVersion) -> VersionStampedStore:
    """Version `version`'s index (created empty if new), stamping what is written into it."""
    return VersionStampedStore(
        open_vector_store(version_store_settings(store, version.name), version.dimensions), version.name
    )
