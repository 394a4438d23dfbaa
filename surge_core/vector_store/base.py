"""The one interface every vector index implements, its value types, and the backend registry.

A store holds *chunks*: pieces of a document, each with an embedding and flat metadata, keyed by
`(doc_id, chunk_index)`. Writers replace a document's chunks as a whole (`replace_documents`), which is
what makes replaying a Kafka record harmless: chunks whose content hash is unchanged are not rewritten.

Backends register themselves with :func:`register_backend` under the `backend` name their settings model
carries; :func:`open_vector_store` picks one from the settings, so callers never branch on the backend.
"""

from __future__ import annotations

import hashlib
import json
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from surge_core.records import MetadataValue
from surge_core.store_settings import EmbeddedStoreSettings, PgVectorStoreSettings

Where = Mapping[str, MetadataValue | Sequence[MetadataValue]]
# A document's version: the (partition, offset) of the Kafka record that wrote it.
DocVersion = tuple[int, int]


def is_stale(stored: DocVersion | None, incoming: DocVersion | None) -> bool:
    """True when `incoming` is older than the version the store holds, so the write must be refused.

    Offsets only order records of one partition (a doc_id always maps to one partition while the
    partition count stays); a write from another partition, or without a version, is never refused.
    E.g. stored (2, 40): incoming (2, 39) is stale, (2, 40) (a replay) and (2, 41) are not, (3, 5) is not.
    """
    return (
        stored is not None and incoming is not None and stored[0] == incoming[0] and stored[1] > incoming[1]
    )


@dataclass(frozen=True)
class ChunkRecord:
    """One chunk to store. `embedding` may be any float sequence (a numpy array is fine)."""

    doc_id: str
    chunk_index: int
    text: str
    embedding: Sequence[float]
    metadata: Mapping[str, MetadataValue] = field(default_factory=dict)

    @property
    def content_hash(self) -> str:
        """sha256 of text + metadata. The embedding is left out on purpose: the same text embedded in a
        different batch can differ in the last float bits, and that must not count as a change."""
        payload = json.dumps(
            {"text": self.text, "metadata": dict(self.metadata)}, sort_keys=True, ensure_ascii=False
        )
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class SearchHit:
    """One search result; `score` is cosine similarity (1.0 identical direction, higher is closer)."""

    doc_id: str
    chunk_index: int
    text: str
    metadata: dict[str, MetadataValue]
    score: float


@dataclass(frozen=True)
class WriteResult:
    """What a `replace_documents` call did, counted in chunks."""

    written: int
    unchanged: int
    deleted: int
    fenced: int = 0  # documents refused because the store holds a newer version


class VectorStore(ABC):
    """A persistent vector index of document chunks. Implementations are safe to call from threads."""

    dimensions: int
    backend: str

    @abstractmethod
    def replace_documents(
        self, documents: Mapping[str, Sequence[ChunkRecord]], versions: Mapping[str, DocVersion] | None = None
    ) -> WriteResult:
        """Make each doc_id's chunks exactly the given ones, in one transaction, durable on return.

        `versions` (optional, per doc_id): a document whose stored version is newer (`is_stale`) is left
        as it is and counted in `fenced`; otherwise the version is stored with it.

        Same `(doc_id, chunk_index)` with the same content hash -> unchanged (not written); new or changed
        -> written; the document's old chunks whose index is not among the new ones -> deleted. Replaying
        the same call writes nothing. An empty chunk list removes the document.
        """

    @abstractmethod
    def delete_documents(
        self, doc_ids: Sequence[str], versions: Mapping[str, DocVersion] | None = None
    ) -> int:
        """Remove these documents; returns the number of chunks removed (unknown ids count 0). Fenced by
        `versions` like `replace_documents`; the delete's version is kept, so an older upsert replayed
        later cannot bring the document back."""

    @abstractmethod
    def search(
        self, embedding: Sequence[float], top_k: int, where: Where | None = None, tenant: str | None = None
    ) -> list[SearchHit]:
        """The `top_k` chunks closest to `embedding` by cosine similarity, best first.

        `where`: every key must match the chunk's metadata; a list value means "any of these". Numbers
        compare numerically (1 == 1.0); booleans only match booleans; strings only strings.
        `tenant`: only that tenant's documents (stored ids, see `surge_core.tenancy`) are searched, whatever
        `where` says; None searches every tenant (operators and pipelines only, never a request).
        """

    @abstractmethod
    def count_chunks(self) -> int:
        """Chunks stored."""

    @abstractmethod
    def count_documents(self) -> int:
        """Distinct documents stored."""

    @abstractmethod
    def document_chunks(self, doc_id: str) -> list[SearchHit]:
        """A document's chunks ordered by chunk_index, score 1.0 (for inspection and tests)."""

    @abstractmethod
    def close(self) -> None:
        """Release connections and files; the data stays where it persists."""

    def __enter__(self) -> VectorStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------- validation


def as_unit_vector(embedding: Sequence[float], dimensions: int, what: str) -> np.ndarray:
    """A float32 copy scaled to length 1 (so inner product is cosine), or a ValueError naming `what`."""
    vector = np.asarray(embedding, dtype=np.float32).reshape(-1)
    if vector.shape[0] != dimensions:
        raise ValueError(f"{what}: embedding has {vector.shape[0]} dimensions, the index holds {dimensions}")
    if not np.all(np.isfinite(vector)):
        raise ValueError(f"{what}: embedding contains NaN or infinity")
    norm = float(np.linalg.norm(vector))
    if norm == 0.0 or not math.isfinite(norm):
        raise ValueError(f"{what}: embedding is the zero vector (cosine similarity is undefined)")
    return vector / norm


def validate_documents(documents: Mapping[str, Sequence[ChunkRecord]], dimensions: int) -> None:
    """Reject a batch before any write: chunk/doc mismatch, duplicate or negative index, bad embedding."""
    for doc_id, chunks in documents.items():
        if not doc_id:
            raise ValueError("doc_id must not be empty")
        seen: set[int] = set()
        for chunk in chunks:
            what = f"document {doc_id!r} chunk {chunk.chunk_index}"
            if chunk.doc_id != doc_id:
                raise ValueError(f"{what}: chunk.doc_id is {chunk.doc_id!r}, filed under {doc_id!r}")
            if chunk.chunk_index < 0:
                raise ValueError(f"{what}: chunk_index must be >= 0")
            if chunk.chunk_index in seen:
                raise ValueError(f"{what}: chunk_index appears twice")
            seen.add(chunk.chunk_index)
            as_unit_vector(chunk.embedding, dimensions, what)
            for key, value in chunk.metadata.items():
                if not isinstance(value, str | int | float | bool):
                    raise ValueError(f"{what}: metadata[{key!r}] must be str, int, float or bool")
                if isinstance(value, float) and not math.isfinite(value):
                    raise ValueError(f"{what}: metadata[{key!r}] must be a finite number")


def normalise_where(where: Where | None) -> dict[str, list[MetadataValue]]:
    """`where` as key -> list of accepted values (a scalar becomes a one-element list)."""
    if not where:
        return {}
    out: dict[str, list[MetadataValue]] = {}
    for key, value in where.items():
        raw: list[object] = list(value) if isinstance(value, list | tuple) else [value]
        if not raw:
            raise ValueError(f"where[{key!r}]: an empty list matches nothing; leave the key out instead")
        values: list[MetadataValue] = []
        for item in raw:
            if not isinstance(item, str | int | float | bool):
                raise ValueError(f"where[{key!r}]: values must be str, int, float or bool, got {item!r}")
            values.append(item)
        out[key] = values
    return out


def validate_top_k(top_k: int) -> None:
    if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
        raise ValueError(f"top_k must be a positive integer, got {top_k!r}")


# ------------------------------------------------------------------------------------------------ registry

Opener = Callable[[Any, int], VectorStore]
_BACKENDS: dict[str, Opener] = {}
_O = TypeVar("_O", bound=Opener)


def register_backend(name: str) -> Callable[[_O], _O]:
    """Class/function decorator: `open_vector_store` uses it for settings whose `backend` is `name`."""

    def decorator(opener: _O) -> _O:
        if name in _BACKENDS:
            raise ValueError(f"vector store backend {name!r} is registered twice")
        _BACKENDS[name] = opener
        return opener

    return decorator


def open_vector_store(
    settings: EmbeddedStoreSettings | PgVectorStoreSettings, dimensions: int
) -> VectorStore:
    """Open the store that `settings.backend` names (settings: a `VectorStoreSettings` model)."""
    backend = settings.backend
    try:
        opener = _BACKENDS[backend]
    except KeyError:
        raise ValueError(
            f"store.backend {backend!r} has no implementation; known: {sorted(_BACKENDS)}"
        ) from None
    return opener(settings, dimensions)
