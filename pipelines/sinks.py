"""Where the ingestion consumer writes documents: the pluggable `DocumentSink`s and how their failures
are classified.

The classification decides between two very different outcomes, so it is spelled out here:

- **Sink unavailable** (`SinkUnavailable`): the backend cannot take *any* document right now, so no record
  is at fault. The loop keeps the offset, retries with backoff and dead-letters nothing; documents wait
  in Kafka. Direct sink: PostgreSQL unreachable or out of disk, SQLite BUSY/LOCKED/FULL/IOERR/CANTOPEN/
  READONLY, and ENOSPC/EDQUOT/EIO/EROFS from the filesystem. HTTP sink: the app unreachable or answering
  408/429/502/503/504, and 401/403/404, which mean a wrong key or URL (logged as an error: someone must
  fix the configuration; dead-lettering the stream would not).
- **This record failed** (`DocumentRejected` or any other exception): retried `retry.max_attempts` times
  with backoff, then dead-lettered. HTTP sink: any other 4xx, a 403 naming the `tenant` (the record's
  tenant is not the sink key's: a producer wrote another tenant's document), and 500 (a deterministic
  server error for this document; the app answers 503 when its stages are down).
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, Literal, Protocol

import httpx
from pydantic import BaseModel, ConfigDict, Field, model_validator

from pipelines.consumer import SinkUnavailable
from surge_core import tracing
from surge_core.embedding import EmbeddingModelSettings
from surge_core.embedding_versions import EmbeddingVersionFollower, open_version_store
from surge_core.records import DocumentDelete, DocumentUpsert
from surge_core.store_settings import EmbeddedStoreSettings, VectorStoreSettings
from surge_core.tenancy import split_stored_id
from surge_core.vector_store.base import DocVersion

logger = logging.getLogger("surge.ingestion")

DocumentOp = DocumentUpsert | DocumentDelete


class DocumentRejected(ValueError):
    """This document cannot be indexed as it is (processing failure, retried then dead-lettered)."""


# ------------------------------------------------------------------------------------------------ settings


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DirectSinkSettings(_Strict):
    """Embed in this process and write straight into the vector index."""

    kind: Literal["direct"] = Field("direct", description="Selects the in-process sink.")
    store: VectorStoreSettings = Field(
        default_factory=EmbeddedStoreSettings, description="The vector index written to."
    )
    embedder: EmbeddingModelSettings = Field(
        default_factory=EmbeddingModelSettings, description="Embedding model."
    )
    chunk_chars: int = Field(800, ge=50, le=100_000, description="Target chunk size (characters).")
    chunk_overlap_chars: int = Field(100, ge=0, description="Characters shared by neighbouring chunks.")
    max_chunks_per_document: int = Field(
        2000, ge=1, description="A document chunking into more pieces is rejected (dead-lettered)."
    )
    follow_embedding_versions: bool = Field(
        True,
        description="Write into the active embedding version's index with its model when the store has a "
        "version catalog (`surge reembed`), switching when it moves; otherwise the base index and `embedder`.",
    )

    @model_validator(mode="after")
    def _overlap_below_chunk(self) -> DirectSinkSettings:
        if self.chunk_overlap_chars >= self.chunk_chars:
            raise ValueError(
                f"chunk_overlap_chars ({self.chunk_overlap_chars}) must be < chunk_chars ({self.chunk_chars})"
            )
        return self


class HttpSinkSettings(_Strict):
    """Post documents to the running app's `POST /v1/documents` (it chunks, embeds and indexes)."""

    kind: Literal["http"] = Field("http", description="Selects the HTTP sink.")
    url: str = Field("http://127.0.0.1:8000", pattern=r"^https?://", description="Base URL of the surge app.")
    api_key_env: str = Field(
        "SURGE_API_KEY", min_length=1, description="Environment variable holding the API key."
    )
    timeout_s: float = Field(120, gt=0, description="Seconds one request may take (cold starts included).")
    max_documents_per_request: int = Field(64, ge=1, le=256, description="Upserts sent per request.")
    wake_model: str | None = Field(
        "all-MiniLM-L6-v2",
        min_length=1,
        description="Embedding model woken (one tiny /v1/embeddings call, in the background) when the consumer "
        "starts, i.e. when KEDA starts it for a backlog, so the Embedder's cold start overlaps the consumer's "
        "group join instead of following it; None: no wake. Needs the key's `embeddings` scope.",
    )


SinkSettings = Annotated[DirectSinkSettings | HttpSinkSettings, Field(discriminator="kind")]


# ---------------------------------------------------------------------------------------------------- sinks


class DocumentSink(Protocol):
    """Applies document upserts and deletes durably and idempotently."""

    def write(self, ops: Sequence[DocumentOp], versions: Mapping[str, DocVersion] | None = None) -> None:
        """Apply in order; durable on return. `versions`: each doc_id's (partition, offset) of its last
        op, for sinks that fence writes (an older version never overwrites a newer one). SinkUnavailable
        if the backend is down, DocumentRejected (or any other exception) if these documents failed."""
        ...

    def close(self) -> None: ...


def last_op_per_document(ops: Sequence[DocumentOp]) -> tuple[list[DocumentUpsert], list[str]]:
    """The final upserts and deletes of a run of ops: applying only each document's last op is the same as
    applying all of them in order (an upsert replaces the whole document, a delete removes it). Documents
    are told apart by stored id (tenant and doc_id): two tenants' `x` are two documents. Deletes are given
    as stored ids."""
    final: dict[str, DocumentOp] = {}
    for op in ops:
        final.pop(op.storage_id, None)
        final[op.storage_id] = op
    upserts = [op for op in final.values() if isinstance(op, DocumentUpsert)]
    deletes = [op.storage_id for op in final.values() if isinstance(op, DocumentDelete)]
    return upserts, deletes


SinkBuilder = Callable[[Any], DocumentSink]
SINKS: dict[str, SinkBuilder] = {}


def register_sink(kind: str) -> Callable[[SinkBuilder], SinkBuilder]:
    def decorator(builder: SinkBuilder) -> SinkBuilder:
        SINKS[kind] = builder
        return builder

    return decorator


def build_sink(settings: DirectSinkSettings | HttpSinkSettings) -> DocumentSink:
    return SINKS[settings.kind](settings)


def _transient_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [ConnectionError, TimeoutError]
    try:
        import psycopg

        # OperationalError covers an unreachable server and DiskFull (SQLSTATE 53100) alike.
        errors.append(psycopg.OperationalError)
    except ImportError:  # pragma: no cover - psycopg is a dependency, but the embedded store needs none
        pass
    return tuple(errors)


# SQLite result codes (primary, before the "_" of extended ones) that say the database file cannot be
# written right now, whatever the document: another writer holds it, the disk is full or failing.
SQLITE_UNAVAILABLE = frozenset(
    {"SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_FULL", "SQLITE_IOERR", "SQLITE_CANTOPEN", "SQLITE_READONLY"}
)
OS_UNAVAILABLE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS})


def sink_unavailable_reason(error: BaseException) -> str | None:
    """Why this storage error means the sink is unavailable (not the record's fault); None if it does not."""
    if isinstance(error, sqlite3.Error):
        name = getattr(error, "sqlite_errorname", "") or ""
        primary = "_".join(name.split("_")[:2])
        if primary in SQLITE_UNAVAILABLE:
            return f"{name}: {error}"
        # faiss/sqlite wrappers sometimes lose the code; the message is stable for these two.
        text = str(error)
        if "database or disk is full" in text or "disk I/O error" in text or "database is locked" in text:
            return text
        return None
    if isinstance(error, OSError) and error.errno in OS_UNAVAILABLE:
        return f"{errno.errorcode.get(error.errno or 0, error.errno)}: {error}"
    return None


class DirectSink:
    """TextEmbedder + vector store in this process."""

    def __init__(self, settings: DirectSinkSettings) -> None:
        from surge_core.chunking import chunk_text
        from surge_core.embedding import TextEmbedder
        from surge_core.vector_store import open_vector_store

        self.settings = settings
        self._chunk_text = chunk_text
        self._versions = (
            EmbeddingVersionFollower(settings.store) if settings.follow_embedding_versions else None
        )
        active = self._versions.active() if self._versions is not None else None
        self.version = None if active is None else active.name
        self.embedder = TextEmbedder(settings.embedder if active is None else active.embedder)
        self.store: Any = (
            open_vector_store(settings.store, self.embedder.dimensions)
            if active is None
            else open_version_store(settings.store, active)
        )
        self._transient = _transient_errors()

    def _follow_active_version(self) -> None:
        """After `surge reembed` activates a version, write into it (with its model) from the next batch on;
        the re-embedding job replays what was written meanwhile into the old one."""
        from surge_core.embedding import TextEmbedder

        if self._versions is None or not self._versions.due():
            return
        active = self._versions.active()
        if active is None or active.name == self.version:
            return
        embedder = TextEmbedder(active.embedder)
        self.store.close()
        self.store, self.embedder, self.version = (
            open_version_store(self.settings.store, active),
            embedder,
            active.name,
        )
        logger.info("writing into embedding version %s from now on", active.name)

    def write(self, ops: Sequence[DocumentOp], versions: Mapping[str, DocVersion] | None = None) -> None:
        from surge_core.vector_store import ChunkRecord

        self._follow_active_version()
        upserts, deletes = last_op_per_document(ops)
        s = self.settings
        pieces: list[tuple[DocumentUpsert, list[str]]] = []
        for doc in upserts:
            chunks = self._chunk_text(doc.text, s.chunk_chars, s.chunk_overlap_chars)
            if len(chunks) > s.max_chunks_per_document:
                raise DocumentRejected(
                    f"document {doc.doc_id!r} makes {len(chunks)} chunks > max_chunks_per_document "
                    f"{s.max_chunks_per_document}"
                )
            pieces.append((doc, chunks))
        texts = [chunk for _, chunks in pieces for chunk in chunks]
        with tracing.span(
            "ingestion.embed", attributes={tracing.STAGE: "embedder", "surge.texts": len(texts)}
        ):
            vectors = self.embedder.embed(texts)
        documents: dict[str, list[Any]] = {}
        row = 0
        for doc, chunks in pieces:
            documents[doc.storage_id] = [
                ChunkRecord(doc.storage_id, i, chunk, vectors[row + i], dict(doc.metadata))
                for i, chunk in enumerate(chunks)
            ]
            row += len(chunks)
        try:
            with tracing.span(
                "ingestion.index_write",
                attributes={"surge.documents": len(documents), "surge.deletes": len(deletes)},
            ):
                if documents:
                    self.store.replace_documents(documents, versions)
                if deletes:
                    self.store.delete_documents(deletes, versions)
        except self._transient as error:
            raise SinkUnavailable(f"vector store unreachable: {error}") from error
        except (sqlite3.Error, OSError) as error:
            reason = sink_unavailable_reason(error)
            if reason is None:
                raise
            raise SinkUnavailable(f"vector store cannot write: {reason}") from error

    def index_is_empty(self) -> bool:
        return self.store.count_documents() == 0

    def close(self) -> None:
        self.store.close()
        if self._versions is not None:
            self._versions.close()


def single_api_key(raw: str, env: str) -> str:
    """The one key to send. The variable may hold the gateway's comma-separated list (one Secret for
    both): sending it whole (`Bearer k1,k2`) matches no key, so the first one is used."""
    keys = [k.strip() for k in raw.split(",") if k.strip()]
    if len(keys) > 1:
        logger.info("$%s holds %d keys; the HTTP sink sends the first", env, len(keys))
    return keys[0] if keys else ""


class HttpSink:
    """The app's `POST /v1/documents`: `{"documents": [...]}` upserts, `{"delete": [...]}` deletes."""

    # The app is busy or restarting: wait for it.
    RETRYABLE_STATUS = frozenset({408, 429, 502, 503, 504})
    # A wrong key or URL: no document is at fault, and every one would fail the same way. Wait (the
    # operator fixes the configuration; offsets stay put), and say so loudly.
    MISCONFIGURED_STATUS = frozenset({401, 403, 404})

    def __init__(self, settings: HttpSinkSettings) -> None:
        self.settings = settings
        key = single_api_key(os.environ.get(settings.api_key_env, ""), settings.api_key_env)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.client = httpx.Client(base_url=settings.url, headers=headers, timeout=settings.timeout_s)

    def _post(self, body: dict[str, Any]) -> None:
        try:
            # The current trace (a traced record's batch) continues in the app's gateway.
            response = self.client.post("/v1/documents", json=body, headers=tracing.carrier())
        except httpx.TransportError as error:
            raise SinkUnavailable(f"{self.settings.url} unreachable: {error}") from error
        if response.status_code in self.RETRYABLE_STATUS:
            raise SinkUnavailable(f"{self.settings.url} answered {response.status_code}")
        if response.status_code == 403 and _error_param(response) == "tenant":
            # The record names a tenant the sink's key does not act for: this record is at fault (a
            # producer wrote another tenant's document), so it is dead-lettered, not waited on.
            raise DocumentRejected(f"/v1/documents refused the record's tenant: {response.text[:300]}")
        if response.status_code in self.MISCONFIGURED_STATUS:
            logger.error(
                "ALERT: %s/v1/documents answered %d: check the sink's url and the key in $%s; "
                "documents wait in Kafka until it is fixed",
                self.settings.url,
                response.status_code,
                self.settings.api_key_env,
            )
            raise SinkUnavailable(f"{self.settings.url} answered {response.status_code} (misconfigured)")
        if response.status_code >= 400:
            raise DocumentRejected(f"/v1/documents answered {response.status_code}: {response.text[:300]}")

    def wake(self) -> threading.Thread | None:
        """Start the Embedder now (event-driven wake) without waiting for it: a backlog is about to be sent.

        Best effort in a daemon thread: any answer or error is only logged, the documents path decides."""
        model = self.settings.wake_model
        if model is None:
            return None

        def send() -> None:
            try:
                response = self.client.post("/v1/embeddings", json={"model": model, "input": ["wake"]})
                logger.info("woke %s: %s answered %d", model, self.settings.url, response.status_code)
            except httpx.HTTPError as error:
                logger.info("wake of %s failed (the documents path will wait instead): %s", model, error)

        thread = threading.Thread(target=send, name="embedder-wake", daemon=True)
        thread.start()
        return thread

    def write(self, ops: Sequence[DocumentOp], versions: Mapping[str, DocVersion] | None = None) -> None:
        # Fenced like the direct sink: each document's (partition, offset) travels with it, and the index
        # refuses a version older than the one it holds.
        # Each request names its tenant; the app checks it against the key's principal (403 otherwise).
        upserts, deletes = last_op_per_document(ops)
        versions = versions or {}

        def versions_of(stored_ids: Sequence[str]) -> dict[str, dict[str, int]]:
            return {
                split_stored_id(s)[1]: {"partition": versions[s][0], "offset": versions[s][1]}
                for s in stored_ids
                if s in versions
            }

        size = self.settings.max_documents_per_request
        for tenant in sorted({op.tenant for op in upserts}):
            mine = [d for d in upserts if d.tenant == tenant]
            for start in range(0, len(mine), size):
                docs = mine[start : start + size]
                self._post(
                    {
                        "tenant": tenant,
                        "documents": [{"id": d.doc_id, "text": d.text, "metadata": d.metadata} for d in docs],
                        "versions": versions_of([d.storage_id for d in docs]),
                    }
                )
        for tenant in sorted({split_stored_id(s)[0] for s in deletes}):
            gone = [s for s in deletes if split_stored_id(s)[0] == tenant]
            self._post(
                {
                    "tenant": tenant,
                    "delete": [split_stored_id(s)[1] for s in gone],
                    "versions": versions_of(gone),
                }
            )

    def close(self) -> None:
        self.client.close()


def _error_param(response: httpx.Response) -> object:
    try:
        return response.json()["error"]["param"]
    except (ValueError, KeyError, TypeError):
        return None


register_sink("direct")(DirectSink)
register_sink("http")(HttpSink)
