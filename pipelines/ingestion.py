"""The ingestion consumer: `documents` -> validate -> chunk -> embed -> upsert/delete in the vector index.

Delivery guarantees (inherited from `pipelines.consumer.AtLeastOnceConsumer`, checked by the tests):

- At-least-once: offsets are committed only after the sink's write returned, and the sinks return only
  once the write is durable (the vector store commits its transaction; the HTTP sink gets a 2xx from the
  app, which writes before answering). A SIGKILL between write and commit replays those records.
- Replays are harmless: an upsert replaces the document's chunks as a whole (unchanged chunks are not
  rewritten) and a delete of an absent document is a no-op, so the index holds each document once.
- Poison records (not JSON, schema-invalid, oversized, or failing processing `retry.max_attempts` times)
  go to `documents.dlq` with headers naming why and where from; the partition keeps moving.
- A sink backend that is down (PostgreSQL unreachable, the app answering 503) is retried without
  dead-lettering and without committing: documents wait in Kafka.
- One document's records share a partition (keyed by doc_id), so its upserts and deletes apply in order;
  within a batch the last record of each doc_id decides, which is the same outcome as applying them one
  by one.
- SIGTERM: the current batch is finished (or abandoned uncommitted), durable work is committed, exit 0.

Sinks are pluggable (`DocumentSink`), picked by the `sink.kind` of the settings through `SINKS`:
`direct` (in-process TextEmbedder + vector store; the default) or `http` (the running app's
`POST /v1/documents`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

import httpx
import yaml
from kafka.consumer.fetcher import ConsumerRecord
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from deployments.settings import EmbeddedStoreSettings, EmbedderSettings, VectorStoreSettings
from pipelines.admin import BrokerUnreachable, ensure_topics
from pipelines.consumer import AtLeastOnceConsumer, ConsumerSettings, SinkUnavailable, json_record_decoder
from pipelines.dlq import PoisonKind, PoisonRecord
from pipelines.metrics import ConsumerMetrics
from pipelines.records import DOCUMENT_RECORD, DocumentDelete, DocumentUpsert
from pipelines.topics import DOCUMENTS

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
    embedder: EmbedderSettings = Field(default_factory=EmbedderSettings, description="Embedding model.")
    chunk_chars: int = Field(800, ge=50, le=100_000, description="Target chunk size (characters).")
    chunk_overlap_chars: int = Field(100, ge=0, description="Characters shared by neighbouring chunks.")
    max_chunks_per_document: int = Field(
        2000, ge=1, description="A document chunking into more pieces is rejected (dead-lettered)."
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


SinkSettings = Annotated[DirectSinkSettings | HttpSinkSettings, Field(discriminator="kind")]


class IngestionSettings(ConsumerSettings):
    """The ingestion consumer: which group, how big a batch, and where documents go."""

    group_id: str = Field("surge-ingestion", min_length=1, max_length=200, description="Consumer group id.")
    sink: SinkSettings = Field(default_factory=DirectSinkSettings, description="Where documents are written.")


# ---------------------------------------------------------------------------------------------------- sinks


class DocumentSink(Protocol):
    """Applies document upserts and deletes durably and idempotently."""

    def write(self, ops: Sequence[DocumentOp]) -> None:
        """Apply in order; durable on return. SinkUnavailable if the backend is down, DocumentRejected (or
        any other exception) if these documents failed."""
        ...

    def close(self) -> None: ...


def last_op_per_document(ops: Sequence[DocumentOp]) -> tuple[list[DocumentUpsert], list[str]]:
    """The final upserts and deletes of a run of ops: applying only each doc_id's last op is the same as
    applying all of them in order (an upsert replaces the whole document, a delete removes it)."""
    final: dict[str, DocumentOp] = {}
    for op in ops:
        final.pop(op.doc_id, None)
        final[op.doc_id] = op
    upserts = [op for op in final.values() if isinstance(op, DocumentUpsert)]
    deletes = [op.doc_id for op in final.values() if isinstance(op, DocumentDelete)]
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

        errors.append(psycopg.OperationalError)
    except ImportError:  # pragma: no cover - psycopg is a dependency, but the embedded store needs none
        pass
    return tuple(errors)


class DirectSink:
    """TextEmbedder + vector store in this process."""

    def __init__(self, settings: DirectSinkSettings) -> None:
        from deployments.chunking import chunk_text
        from deployments.embedding import TextEmbedder
        from deployments.vector_store import open_vector_store

        self.settings = settings
        self._chunk_text = chunk_text
        self.embedder = TextEmbedder(settings.embedder)
        self.store = open_vector_store(settings.store, self.embedder.dimensions)
        self._transient = _transient_errors()

    def write(self, ops: Sequence[DocumentOp]) -> None:
        from deployments.vector_store import ChunkRecord

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
        vectors = self.embedder.embed(texts)
        documents: dict[str, list[Any]] = {}
        row = 0
        for doc, chunks in pieces:
            documents[doc.doc_id] = [
                ChunkRecord(doc.doc_id, i, chunk, vectors[row + i], dict(doc.metadata))
                for i, chunk in enumerate(chunks)
            ]
            row += len(chunks)
        try:
            if documents:
                self.store.replace_documents(documents)
            if deletes:
                self.store.delete_documents(deletes)
        except self._transient as error:
            raise SinkUnavailable(f"vector store unreachable: {error}") from error

    def close(self) -> None:
        self.store.close()


class HttpSink:
    """The app's `POST /v1/documents`: `{"documents": [...]}` upserts, `{"delete": [...]}` deletes."""

    RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})

    def __init__(self, settings: HttpSinkSettings) -> None:
        self.settings = settings
        key = os.environ.get(settings.api_key_env, "")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.client = httpx.Client(base_url=settings.url, headers=headers, timeout=settings.timeout_s)

    def _post(self, body: dict[str, Any]) -> None:
        try:
            response = self.client.post("/v1/documents", json=body)
        except httpx.TransportError as error:
            raise SinkUnavailable(f"{self.settings.url} unreachable: {error}") from error
        if response.status_code in self.RETRYABLE_STATUS:
            raise SinkUnavailable(f"{self.settings.url} answered {response.status_code}")
        if response.status_code >= 400:
            raise DocumentRejected(f"/v1/documents answered {response.status_code}: {response.text[:300]}")

    def write(self, ops: Sequence[DocumentOp]) -> None:
        upserts, deletes = last_op_per_document(ops)
        size = self.settings.max_documents_per_request
        for start in range(0, len(upserts), size):
            docs = upserts[start : start + size]
            self._post(
                {"documents": [{"id": d.doc_id, "text": d.text, "metadata": d.metadata} for d in docs]}
            )
        if deletes:
            self._post({"delete": deletes})

    def close(self) -> None:
        self.client.close()


register_sink("direct")(DirectSink)
register_sink("http")(HttpSink)


# ------------------------------------------------------------------------------------------------- handler


class DocumentHandler:
    """Plugs documents into the generic loop: decode + validate, then write through the sink."""

    def __init__(self, sink: DocumentSink) -> None:
        self.sink = sink
        self._decode_value = json_record_decoder(DOCUMENT_RECORD)

    def decode(self, message: ConsumerRecord) -> DocumentOp:
        record: DocumentOp = self._decode_value(message.value)
        if message.key is not None and message.key != record.doc_id.encode("utf-8"):
            # Ordering per document relies on key == doc_id; a mismatch would reorder its updates.
            raise PoisonRecord(
                PoisonKind.SCHEMA_INVALID,
                f"record key {message.key[:100]!r} does not match doc_id {record.doc_id!r}",
            )
        return record

    def process(self, records: Sequence[DocumentOp]) -> None:
        self.sink.write(records)


def build_ingestion_consumer(
    settings: IngestionSettings, sink: DocumentSink | None = None
) -> AtLeastOnceConsumer[DocumentOp]:
    topic = DOCUMENTS.with_prefix(settings.topic_prefix).name
    metrics = ConsumerMetrics(settings.group_id)
    return AtLeastOnceConsumer(
        settings, topic, DocumentHandler(sink or build_sink(settings.sink)), metrics=metrics
    )


def run_ingestion(settings: IngestionSettings) -> int:
    """Create topics, serve metrics, consume until SIGTERM/SIGINT; returns the process exit code."""
    ensure_topics(settings.kafka, [DOCUMENTS.with_prefix(settings.topic_prefix)])
    started = time.monotonic()
    sink = build_sink(settings.sink)
    logger.info("sink %s ready in %.1f s", settings.sink.kind, time.monotonic() - started)
    loop = build_ingestion_consumer(settings, sink)
    if settings.metrics_port:
        loop.metrics.serve(settings.metrics_port, settings.metrics_host)
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: loop.stop())
    try:
        loop.run()
    finally:
        sink.close()
    return 0


# --------------------------------------------------------------------------------------------- command line


def add_ingestion_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="IngestionSettings as a YAML or JSON file.")
    parser.add_argument("--bootstrap-servers", help="Kafka bootstrap servers (host:port,...).")
    parser.add_argument("--group-id", help="Consumer group id.")
    parser.add_argument("--topic-prefix", help="Prefix of the topic names.")
    parser.add_argument("--group-instance-id", help="Static group membership id (e.g. the pod name).")
    parser.add_argument("--batch-size", type=int, help="Records per batch.")
    parser.add_argument("--metrics-port", type=int, help="Serve Prometheus /metrics on this port.")
    parser.add_argument("--max-record-bytes", type=int, help="Dead-letter records larger than this.")
    parser.add_argument("--max-attempts", type=int, help="Processing tries before a record is dead-lettered.")
    parser.add_argument("--session-timeout-s", type=float, help="Consumer group session timeout.")
    parser.add_argument("--index-path", type=Path, help="Direct sink: directory of the embedded index.")
    parser.add_argument("--sink-url", help="Use the HTTP sink: base URL of the surge app.")


def _deep_set(data: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    node = data
    for name in parents:
        node = node.setdefault(name, {})
    node[leaf] = value


def settings_from_args(args: argparse.Namespace) -> IngestionSettings:
    """Config file (if any), then flags on top; raises ValueError with a readable message."""
    data: dict[str, Any] = {}
    if args.config is not None:
        try:
            loaded = yaml.safe_load(args.config.read_text())
        except (OSError, yaml.YAMLError) as error:
            raise ValueError(f"cannot read --config {args.config}: {error}") from error
        if not isinstance(loaded, dict):
            raise ValueError(f"--config {args.config} must hold a mapping of IngestionSettings")
        data = loaded
    flags = {
        "kafka.bootstrap_servers": args.bootstrap_servers,
        "group_id": args.group_id,
        "group_instance_id": args.group_instance_id,
        "topic_prefix": args.topic_prefix,
        "batch_size": args.batch_size,
        "metrics_port": args.metrics_port,
        "max_record_bytes": args.max_record_bytes,
        "retry.max_attempts": args.max_attempts,
        "session_timeout_s": args.session_timeout_s,
    }
    for path, value in flags.items():
        if value is not None:
            _deep_set(data, path, value)
    if args.sink_url is not None:
        data["sink"] = {**data.get("sink", {}), "kind": "http", "url": args.sink_url}
    if args.index_path is not None:
        data["sink"] = {"kind": "direct", **data.get("sink", {})}
        data["sink"]["store"] = {"backend": "embedded", "path": str(args.index_path)}
    try:
        return IngestionSettings.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ValueError(f"invalid ingestion settings: {where}: {first['msg']}") from error


def configure_logging() -> None:
    logging.basicConfig(
        level=os.environ.get("SURGE_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("kafka").setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.ingestion", description=__doc__.split("\n")[0])
    add_ingestion_arguments(parser)
    args = parser.parse_args(argv)
    configure_logging()
    try:
        settings = settings_from_args(args)
        logger.info("settings: %s", json.dumps(settings.model_dump(mode="json"))[:2000])
        return run_ingestion(settings)
    except (ValueError, BrokerUnreachable) as error:
        print(f"surge ingest: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main())
