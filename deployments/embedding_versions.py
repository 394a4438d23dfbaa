"""Serving across embedding versions (`surge_core.embedding_versions`): the stages' side of a re-embedding.

The rule that keeps queries and indexes in one embedding space: **the Embedder names the version of every
vector it returns, and the Retriever searches (and writes) exactly the version named.**

- `ActiveEmbeddingModel` (in the Embedder) follows the catalog's `active` pointer (no active version: the
  Embedder's own model and the base index), checked at most every `refresh_s`. When it moves, the new version's model loads in a worker thread while the old one keeps
  answering; the swap is one assignment of a `LoadedModel` (model + version name) after the load, so a
  batch never mixes them. Loading MiniLM here takes about 1-2 s.
- `VersionedIndexes` (in the Retriever) opens a version's index on first use (it must be registered in the
  catalog) and keeps it open: a search still carrying the old version while the Embedder swaps is answered
  from the old index, which is never removed by the switch. No version named: the base index, as before
  versions existed.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass

from surge_core.embedding import EmbeddingModelSettings, TextEmbedder
from surge_core.embedding_versions import (
    EmbeddingVersion,
    StoreSettings,
    VersionCatalog,
    open_version_catalog,
    open_version_store,
)
from surge_core.vector_store import VectorStore

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedModel:
    """A loaded embedding model and the version it embeds for (None: the base index, no versions)."""

    embedder: TextEmbedder
    version: str | None


class ActiveEmbeddingModel:
    """The model of the catalog's active version (or `base` while none is active), swapped in the background."""

    def __init__(
        self, base: EmbeddingModelSettings, store: StoreSettings | None, refresh_s: float = 1.0
    ) -> None:
        self._base = base
        self._catalog: VersionCatalog | None = open_version_catalog(store) if store is not None else None
        self._refresh_s = refresh_s
        self._checked_at = time.monotonic()
        self._loading: asyncio.Task[None] | None = None
        self.current = self._load(self._active())

    def _active(self) -> EmbeddingVersion | None:
        return None if self._catalog is None else self._catalog.active()

    def _load(self, version: EmbeddingVersion | None) -> LoadedModel:
        if version is None:
            return LoadedModel(TextEmbedder(self._base), None)
        # The version decides the embedding space; this deployment decides batch size and threads.
        settings = version.embedder.model_copy(
            update={"max_batch_size": self._base.max_batch_size, "torch_threads": self._base.torch_threads}
        )
        return LoadedModel(TextEmbedder(settings), version.name)

    async def get(self) -> LoadedModel:
        """The model to embed with now; starts a background switch when the active version moved."""
        now = time.monotonic()
        if self._catalog is not None and self._loading is None and now - self._checked_at >= self._refresh_s:
            self._checked_at = now
            active = await asyncio.to_thread(self._active)
            if (None if active is None else active.name) != self.current.version:
                self._loading = asyncio.create_task(self._switch(active))
        return self.current

    async def _switch(self, version: EmbeddingVersion | None) -> None:
        name = None if version is None else version.name
        try:
            self.current = await asyncio.to_thread(self._load, version)
            logger.info("embedding for version %s from now on", name or "(base index)")
        except Exception:  # a broken version must not take the stage down: keep the old, retry later
            logger.exception("cannot load embedding version %s; still embedding with the previous one", name)
        finally:
            self._loading = None

    def close(self) -> None:
        if self._catalog is not None:
            self._catalog.close()


class VersionedIndexes:
    """The base index plus each embedding version's index, opened on first use."""

    def __init__(self, base: VectorStore, store: StoreSettings) -> None:
        self.base = base
        self._settings = store
        self._open: dict[str, VectorStore] = {}
        self._lock = threading.Lock()
        self._catalog: VersionCatalog | None = None  # opened on first use, then kept (one connection)

    def _registered(self) -> dict[str, EmbeddingVersion]:
        with self._lock:
            if self._catalog is None:
                self._catalog = open_version_catalog(self._settings)
            return self._catalog.read().versions

    def get(self, version: str | None) -> VectorStore:
        """The index of `version` (None: the base one); ValueError naming it when it is not registered."""
        if version is None:
            return self.base
        found = self._open.get(version)
        if found is None:
            registered = self._registered().get(version)
            with self._lock:
                if registered is None:
                    raise ValueError(
                        f"embedding_version {version!r} is not registered in the index's catalog"
                    )
                found = self._open.get(version) or open_version_store(self._settings, registered)
                self._open[version] = found
        return found

    def everything(self) -> list[VectorStore]:
        """The base index and every registered version's (for deletes, which must reach them all)."""
        return [self.base, *(self.get(name) for name in sorted(self._registered()))]

    def close(self) -> None:
        with self._lock:
            for store in self._open.values():
                store.close()
            self._open.clear()
            if self._catalog is not None:
                self._catalog.close()
        self.base.close()
