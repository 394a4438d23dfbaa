"""Producing records: files -> validated records -> Kafka, keyed so one entity's records stay ordered.

Producers use acks=all and idempotence (no duplicates from producer retries, order kept per partition),
through one small interface (`RecordSender`) with two clients: kafka-python, and confluent-kafka for bulk
loads (`surge produce --client`).
Inputs are validated completely before the first record is sent, so a bad line fails the command
without leaving half a file in the topic.

Inputs:
- `documents` from a folder: every `.txt` / `.md` file below it is one document; its id is the path
  relative to the folder (characters a doc_id may not hold become `_`), metadata `{"path": ...}`.
- `documents` / `events` from a `.jsonl` file: one record (`surge_core.records`) per line.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from kafka import KafkaProducer
from kafka.errors import KafkaError
from opentelemetry.trace import SpanKind
from pydantic import BaseModel, TypeAdapter, ValidationError

from surge_core import tracing
from surge_core.kafka_admin import BrokerUnreachable
from surge_core.kafka_settings import KafkaSettings
from surge_core.records import DOC_ID_PATTERN, DocumentUpsert
from surge_core.topics import TopicSpec

DOCUMENT_SUFFIXES = (".txt", ".md")
_DOC_ID_CHAR = re.compile(r"[^A-Za-z0-9._:/@-]")


class InputError(ValueError):
    """The input cannot be produced as it is (message says which file and line)."""


class ProduceFailed(RuntimeError):
    """The broker did not acknowledge every record."""


def doc_id_for(relative: Path) -> str:
    """A valid doc_id from a relative file path (`notes/my file.md` -> `notes/my_file.md`)."""
    doc_id = _DOC_ID_CHAR.sub("_", relative.as_posix())
    if not re.fullmatch(DOC_ID_PATTERN, doc_id):
        raise InputError(f"{relative}: cannot make a document id from this path")
    return doc_id


def read_document_folder(folder: Path) -> Iterator[DocumentUpsert]:
    """One DocumentUpsert per .txt/.md file below `folder` (sorted; empty files are skipped)."""
    for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in DOCUMENT_SUFFIXES and p.is_file()):
        relative = path.relative_to(folder)
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as error:
            raise InputError(f"{path}: not UTF-8 text ({error.reason})") from error
        if not text.strip():
            continue
        try:
            yield DocumentUpsert(
                doc_id=doc_id_for(relative), text=text, metadata={"path": relative.as_posix()}
            )
        except ValidationError as error:
            raise InputError(f"{path}: {_first_error(error)}") from error


def read_jsonl(
    path: Path, schema: TypeAdapter[Any], defaults: dict[str, Any] | None = None
) -> Iterator[BaseModel]:
    """Validated records, one per non-empty line of a .jsonl file (`defaults` fill missing fields)."""
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
                if defaults and isinstance(data, dict):
                    data = {**defaults, **data}
                yield schema.validate_python(data)
            except json.JSONDecodeError as error:
                raise InputError(f"{path}:{number}: not JSON ({error.msg})") from error
            except ValidationError as error:
                raise InputError(f"{path}:{number}: {_first_error(error)}") from error
            except UnicodeDecodeError as error:
                raise InputError(f"{path}:{number}: not UTF-8 text") from error


def read_records(spec: TopicSpec, path: Path) -> list[BaseModel]:
    """Every record of the input, validated (raises InputError on the first bad one)."""
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.is_dir():
        if spec.key_field != "doc_id":
            raise InputError(f"{path}: a folder can only be produced to documents; give a .jsonl file")
        records: list[BaseModel] = list(read_document_folder(path))
        if not records:
            raise InputError(f"{path}: no non-empty .txt or .md files found")
        return records
    if path.suffix.lower() not in (".jsonl", ".ndjson"):
        raise InputError(f"{path}: expected a folder of .txt/.md files or a .jsonl file")
    # A document line without "op" is an upsert: the file format of `surge produce` is friendlier than the
    # wire schema, which stays strict (the CLI always writes "op").
    defaults = {"op": "upsert"} if spec.key_field == "doc_id" else None
    return list(read_jsonl(path, spec.schema, defaults))


def _first_error(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "record"
    return f"{where}: {first['msg']}"


def open_producer(kafka: KafkaSettings, timeout_s: float = 10.0, **overrides: Any) -> KafkaProducer:
    """acks=all + idempotence: a retried send neither duplicates nor reorders records of a partition."""
    config: dict[str, Any] = {
        **kafka.kafka_python_config(),
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 20,
        "batch_size": 262_144,
        "bootstrap_timeout_ms": int(timeout_s * 1000),
        "max_block_ms": int(max(timeout_s, 10) * 1000),
    }
    config.update(overrides)
    try:
        return KafkaProducer(**config)
    except (KafkaError, OSError) as error:
        raise BrokerUnreachable(f"no Kafka broker reachable at {kafka.bootstrap_servers}") from error


@dataclass(frozen=True)
class ProduceResult:
    records: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else float("inf")


def record_key(spec: TopicSpec, record: BaseModel) -> bytes:
    # A document's key is its stored id (`tenant#doc_id`): compaction must never mix two tenants' `x`.
    key = getattr(record, "storage_id", None) or getattr(record, spec.key_field)
    return str(key).encode("utf-8")


class RecordSender(Protocol):
    """The one interface of a producer client: queue a record, then wait for every acknowledgement."""

    def send(self, topic: str, key: bytes, value: bytes, headers: tracing.KafkaHeaders | None = None) -> None:
        """Queue one record; `headers` (trace context) only when tracing is on."""
        ...

    def flush(self, timeout_s: float) -> list[str]:
        """Wait for acknowledgements; returns one message per record that failed (empty: all acked)."""
        ...

    def close(self) -> None: ...


class KafkaPythonSender:
    """kafka-python's KafkaProducer (the design card's client): about 12k records/s here."""

    def __init__(self, producer: KafkaProducer) -> None:
        self.producer = producer
        self._failures: list[str] = []

    def send(self, topic: str, key: bytes, value: bytes, headers: tracing.KafkaHeaders | None = None) -> None:
        future = self.producer.send(topic, key=key, value=value, headers=headers or None)
        future.add_errback(lambda e: self._failures.append(str(e)))

    def flush(self, timeout_s: float) -> list[str]:
        try:
            self.producer.flush(timeout=timeout_s)
        except KafkaError as error:
            self._failures.append(f"not acknowledged within {timeout_s} s: {error}")
        return self._failures

    def close(self) -> None:
        self.producer.close(timeout=10)


class ConfluentSender:
    """confluent-kafka (librdkafka) for bulk loads: about 4x kafka-python's rate here (46k vs 12k/s)."""

    def __init__(self, kafka: KafkaSettings, timeout_s: float) -> None:
        from confluent_kafka import KafkaException, Producer

        config: dict[str, Any] = {
            "bootstrap.servers": kafka.bootstrap_servers,
            "security.protocol": kafka.security_protocol,
            "client.id": kafka.client_id,
            "enable.idempotence": True,  # implies acks=all and ordered, duplicate-free retries
            "acks": "all",
            "linger.ms": 20,
        }
        if kafka.sasl_mechanism:
            config["sasl.mechanism"] = kafka.sasl_mechanism
            config["sasl.username"] = os.environ.get(kafka.sasl_username_env, "")
            config["sasl.password"] = os.environ.get(kafka.sasl_password_env, "")
        if kafka.ssl_cafile:
            config["ssl.ca.location"] = kafka.ssl_cafile
        self.producer = Producer(config)
        try:
            self.producer.list_topics(timeout=timeout_s)  # fail fast when no broker answers
        except KafkaException as error:
            raise BrokerUnreachable(f"no Kafka broker reachable at {kafka.bootstrap_servers}") from error
        self._failures: list[str] = []

    def _delivered(self, error: Any, message: Any) -> None:
        if error is not None:
            self._failures.append(str(error))

    def send(self, topic: str, key: bytes, value: bytes, headers: tracing.KafkaHeaders | None = None) -> None:
        # librdkafka's header values may be text or bytes: a list of that wider type (lists are invariant).
        wide: list[tuple[str, str | bytes | None]] | None = [(k, v) for k, v in headers] if headers else None
        while True:
            try:
                self.producer.produce(topic, key=key, value=value, on_delivery=self._delivered, headers=wide)
                break
            except BufferError:  # local queue full: let deliveries drain, then retry
                self.producer.poll(0.05)
        self.producer.poll(0)

    def flush(self, timeout_s: float) -> list[str]:
        left = self.producer.flush(timeout_s)
        if left:
            self._failures.append(f"{left} record(s) not acknowledged within {timeout_s} s")
        return self._failures

    def close(self) -> None:
        self.producer.flush(10)


SENDERS: dict[str, Callable[[KafkaSettings, float], RecordSender]] = {
    "kafka-python": lambda kafka, timeout_s: KafkaPythonSender(open_producer(kafka, timeout_s)),
    "confluent": ConfluentSender,
}


def open_sender(kafka: KafkaSettings, client: str = "kafka-python", timeout_s: float = 10.0) -> RecordSender:
    """A producer client by name (`SENDERS`), acks=all and idempotent whichever it is."""
    try:
        return SENDERS[client](kafka, timeout_s)
    except KeyError as error:
        raise InputError(f"unknown Kafka client {client!r}; choose from {sorted(SENDERS)}") from error


def produce_records(
    producer: KafkaProducer | RecordSender,
    spec: TopicSpec,
    records: Iterable[BaseModel],
    *,
    total: int | None = None,
    progress: bool = False,
    flush_timeout_s: float = 120.0,
) -> ProduceResult:
    """Send every record to `spec.name` keyed by `spec.key_field`; wait until all are acknowledged.

    `producer` is a RecordSender, or a kafka-python KafkaProducer (wrapped; the caller still closes it).
    With tracing on (`OTEL_*`, `surge_core.tracing`), each record is sent under its own producer span and
    carries its context as a `traceparent` header: the consumers continue that trace (one per record).
    Off, nothing changes (no span, no header).
    """
    from tqdm import tqdm

    sender: RecordSender = KafkaPythonSender(producer) if isinstance(producer, KafkaProducer) else producer
    started = time.perf_counter()
    count = 0
    bar = tqdm(total=total, unit="rec", desc=f"-> {spec.name}", disable=not progress, mininterval=0.5)
    try:
        for record in records:
            key, value = record_key(spec, record), record.model_dump_json().encode("utf-8")
            if tracing.enabled():
                with tracing.span(
                    f"{spec.name} publish", kind=SpanKind.PRODUCER, attributes=publish_attributes(spec, key)
                ) as span:
                    sender.send(spec.name, key, value, headers=tracing.kafka_headers(span))
            else:
                sender.send(spec.name, key, value)
            count += 1
            if count % 1000 == 0:
                bar.update(1000)
        failures = sender.flush(flush_timeout_s)
        bar.update(count % 1000)
    finally:
        bar.close()
    if failures:
        raise ProduceFailed(f"{len(failures)} of {count} records were not acknowledged: {failures[0]}")
    return ProduceResult(count, time.perf_counter() - started)


def publish_attributes(spec: TopicSpec, key: bytes) -> dict[str, str]:
    """OpenTelemetry's messaging attributes of one produced record."""
    return {
        "messaging.system": "kafka",
        "messaging.operation.type": "publish",
        "messaging.destination.name": spec.name,
        "messaging.kafka.message.key": key.decode("utf-8", "replace"),
    }
