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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from kafka.consumer.fetcher import ConsumerRecord
from pydantic import Field, ValidationError

from pipelines.consumer import AtLeastOnceConsumer, ConsumerSettings
from pipelines.decoding import json_record_decoder
from pipelines.dlq import PoisonKind, PoisonRecord
from pipelines.metrics import ConsumerMetrics
from pipelines.record_tracing import RecordTraces
from pipelines.reindex import ReplayStats, committed_offsets, replay
from pipelines.sinks import (  # re-exported: the sinks used to live here
    DirectSinkSettings,
    DocumentOp,
    DocumentRejected,
    DocumentSink,
    HttpSinkSettings,
    SinkSettings,
    build_sink,
    last_op_per_document,
)
from surge_core.kafka_admin import BrokerUnreachable, ensure_topics
from surge_core.records import DOCUMENT_RECORD, DocumentDelete
from surge_core.tenancy import split_stored_id
from surge_core.topics import DOCUMENTS
from surge_core.tracing import configure_tracing

logger = logging.getLogger("surge.ingestion")

__all__ = [
    "DirectSinkSettings",
    "DocumentOp",
    "DocumentRejected",
    "DocumentSink",
    "HttpSinkSettings",
    "IngestionSettings",
    "last_op_per_document",
]


class IngestionSettings(ConsumerSettings):
    """The ingestion consumer: which group, how big a batch, and where documents go."""

    group_id: str = Field("surge-ingestion", min_length=1, max_length=200, description="Consumer group id.")
    sink: SinkSettings = Field(default_factory=DirectSinkSettings, description="Where documents are written.")


# ------------------------------------------------------------------------------------------------- handler


def tombstone_delete(key: bytes | None) -> DocumentDelete:
    """A tombstone (null value) keyed by a doc_id deletes that document.

    `documents` is compacted by doc_id, and a tombstone is how Kafka itself says "this key is gone", so
    the index follows it; a tombstone without a usable key names no document and is dead-lettered.
    """
    if key is None:
        raise PoisonRecord(PoisonKind.NOT_JSON, "tombstone without a key names no document")
    try:
        tenant, doc_id = split_stored_id(key.decode("utf-8"))
        return DocumentDelete(doc_id=doc_id, tenant=tenant)
    except (UnicodeDecodeError, ValidationError) as error:
        raise PoisonRecord(
            PoisonKind.SCHEMA_INVALID, f"tombstone key {key[:100]!r} is not a valid doc_id"
        ) from error


class DocumentHandler:
    """Plugs documents into the generic loop: decode + validate, then write through the sink."""

    def __init__(self, sink: DocumentSink, topic: str = DOCUMENTS.name) -> None:
        self.sink = sink
        self._decode_value = json_record_decoder(DOCUMENT_RECORD)
        self.traces = RecordTraces("ingestion", topic)

    def decode(self, message: ConsumerRecord) -> DocumentOp:
        record = self._decode(message)
        self.traces.remember(message)
        return record

    def _decode(self, message: ConsumerRecord) -> DocumentOp:
        if message.value is None:
            return tombstone_delete(message.key)
        record: DocumentOp = self._decode_value(message.value)
        if message.key is not None and message.key != record.storage_id.encode("utf-8"):
            # Ordering per document relies on key == its stored id (`tenant#doc_id`, or the bare doc_id for
            # the default tenant); a mismatch would reorder its updates, or let compaction mix tenants.
            raise PoisonRecord(
                PoisonKind.SCHEMA_INVALID,
                f"record key {message.key[:100]!r} does not match doc_id {record.doc_id!r} "
                f"of tenant {record.tenant!r} (expected key {record.storage_id!r})",
            )
        return record

    def process(self, records: Sequence[DocumentOp], positions: Sequence[tuple[int, int]]) -> None:
        # A document's version is where its record sits in Kafka (one doc_id, one partition): the store
        # refuses a write older than the one it holds, so a zombie or a replay never overwrites newer.
        versions = {record.storage_id: position for record, position in zip(records, positions, strict=True)}
        with self.traces.batch_span(positions, **{"surge.documents": len(records)}):
            self.sink.write(records, versions)
        self.traces.forget(positions)


def build_ingestion_consumer(
    settings: IngestionSettings, sink: DocumentSink | None = None
) -> AtLeastOnceConsumer[DocumentOp]:
    topic = DOCUMENTS.with_prefix(settings.topic_prefix).name
    metrics = ConsumerMetrics(settings.group_id)
    return AtLeastOnceConsumer(
        settings, topic, DocumentHandler(sink or build_sink(settings.sink), topic), metrics=metrics
    )


def rebuild_if_index_lost(settings: IngestionSettings, sink: DocumentSink) -> ReplayStats | None:
    """Replay `documents` up to the group's committed offsets when the index is empty but the group has
    moved on (the index was lost): otherwise the loop would resume after documents the index no longer
    holds. See `pipelines.reindex`."""
    empty = getattr(sink, "index_is_empty", lambda: None)()
    if not empty:
        return None
    topic = DOCUMENTS.with_prefix(settings.topic_prefix).name
    committed = committed_offsets(settings.kafka, settings.group_id, topic)
    if not committed:
        return None
    logger.warning(
        "the index is empty but group %s has committed %d records of %s: rebuilding it by replaying them",
        settings.group_id,
        sum(committed.values()),
        topic,
    )
    return replay(
        settings.kafka,
        topic,
        DocumentHandler(sink),
        committed,
        batch_size=settings.batch_size,
        retry=settings.retry,
        max_record_bytes=settings.max_record_bytes,
    )


def run_reindex(settings: IngestionSettings) -> ReplayStats:
    """`surge reindex`: replay all of `documents` (to its end offsets now) into the configured sink."""
    spec = DOCUMENTS.with_prefix(settings.topic_prefix)
    ensure_topics(settings.kafka, [spec])
    sink = build_sink(settings.sink)
    try:
        return replay(
            settings.kafka,
            spec.name,
            DocumentHandler(sink),
            batch_size=settings.batch_size,
            retry=settings.retry,
            max_record_bytes=settings.max_record_bytes,
        )
    finally:
        sink.close()


def run_ingestion(settings: IngestionSettings) -> int:
    """Create topics, rebuild a lost index, serve metrics, consume until SIGTERM/SIGINT; returns the
    process exit code."""
    ensure_topics(settings.kafka, [DOCUMENTS.with_prefix(settings.topic_prefix)])
    started = time.monotonic()
    sink = build_sink(settings.sink)
    logger.info("sink %s ready in %.1f s", settings.sink.kind, time.monotonic() - started)
    # Event-driven wake: the consumer runs because there is (or may be) a backlog; start the stage it
    # will call while it joins its group and polls (a sink without `wake` embeds in-process).
    wake = getattr(sink, "wake", None)
    if callable(wake):
        wake()
    rebuild_if_index_lost(settings, sink)
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
    configure_tracing("surge-ingestion")  # on only when the OTEL_* environment asks (surge_core.tracing)
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
