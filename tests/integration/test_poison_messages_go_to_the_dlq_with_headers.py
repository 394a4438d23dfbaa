"""Poison records of every kind end in `<topic>.dlq` with headers saying why and where from, while the
good records around them are indexed and every partition's offsets move to the end."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from kafka import KafkaProducer

from pipelines.broker import free_port
from pipelines.dlq import parse_dlq_headers
from surge_core.kafka_settings import KafkaSettings
from surge_core.store_settings import EmbeddedStoreSettings
from surge_core.topics import DOCUMENTS, TopicSpec
from surge_core.vector_store import open_vector_store
from tests.kafka_helpers import (
    IngestionProcess,
    group_committed,
    ingestion_args,
    metric_value,
    read_topic,
    wait_for,
)

pytestmark = pytest.mark.integration

MAX_RECORD_BYTES = 20_000
MAX_ATTEMPTS = 3
LONG_SENTENCES = " ".join(f"Sentence number {i} of a document that is far too long." for i in range(40))

# (name, key, value bytes, expected reason, expected attempts)
POISON: list[tuple[str, bytes | None, bytes, str, int]] = [
    ("not json", b"p-1", b"{this is not json", "not_json", 0),
    ("not utf-8", b"p-2", b"\xff\xfe\xfa", "not_json", 0),
    ("empty value", b"p-3", b"", "not_json", 0),  # (a None value is a tombstone: a delete)
    ("missing text", b"p-4", json.dumps({"op": "upsert", "doc_id": "p-4"}).encode(), "schema_invalid", 0),
    (
        "unknown field",
        b"p-5",
        json.dumps({"op": "upsert", "doc_id": "p-5", "text": "x", "colour": "red"}).encode(),
        "schema_invalid",
        0,
    ),
    (
        "bad doc_id",
        b"../x",  # documents is compacted: the broker refuses records without a key
        json.dumps({"op": "upsert", "doc_id": "../x", "text": "x"}).encode(),
        "schema_invalid",
        0,
    ),
    (
        "key is not doc_id",
        b"other",
        json.dumps({"op": "upsert", "doc_id": "p-7", "text": "x"}).encode(),
        "schema_invalid",
        0,
    ),
    (
        "oversized",
        b"p-8",
        json.dumps({"op": "upsert", "doc_id": "p-8", "text": "y" * (MAX_RECORD_BYTES + 10)}).encode(),
        "oversized",
        0,
    ),
    (
        "fails processing",
        b"p-9",
        json.dumps({"op": "upsert", "doc_id": "p-9", "text": LONG_SENTENCES}).encode(),
        "processing_failed",
        MAX_ATTEMPTS,
    ),
]


def _good(i: int) -> bytes:
    return json.dumps(
        {"op": "upsert", "doc_id": f"good-{i}", "text": f"A perfectly fine note, number {i}."}
    ).encode()


@pytest.mark.timeout(240)
def test_each_poison_kind_is_dead_lettered_with_headers_and_good_records_around_it_are_indexed(
    kafka_settings: KafkaSettings,
    topic_prefix: str,
    tmp_path: Path,
    spawn_ingestion: Callable[..., IngestionProcess],
    kafka_topic: Callable[[TopicSpec], TopicSpec],
    kafka_producer: KafkaProducer,
) -> None:
    spec = kafka_topic(DOCUMENTS)
    sent: dict[str, tuple[int, int]] = {}  # poison name -> (partition, offset)
    good_ids: list[str] = []
    for round_ in range(3):
        for i in range(10):
            n = round_ * 10 + i
            kafka_producer.send(spec.name, key=f"good-{n}".encode(), value=_good(n))
            good_ids.append(f"good-{n}")
        if round_ == 1:  # poison in the middle of the stream, good records before and after
            for name, key, value, _, _ in POISON:
                metadata = kafka_producer.send(spec.name, key=key, value=value).get(timeout=30)
                sent[name] = (metadata.partition, metadata.offset)
    kafka_producer.flush()

    config = tmp_path / "ingestion.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "max_record_bytes": MAX_RECORD_BYTES,
                "retry": {"max_attempts": MAX_ATTEMPTS, "base_delay_s": 0.05, "max_delay_s": 0.2},
                # p-9 makes far more than 3 chunks: a processing failure on every attempt.
                "sink": {
                    "kind": "direct",
                    "chunk_chars": 100,
                    "chunk_overlap_chars": 0,
                    "max_chunks_per_document": 3,
                },
            }
        )
    )
    group = f"{topic_prefix}ingestion"
    metrics_port = free_port()
    consumer = spawn_ingestion(
        "poison",
        "--config",
        str(config),
        *ingestion_args(
            kafka_settings, topic_prefix, group, index_path=tmp_path / "index", metrics_port=metrics_port
        ),
    )
    total = 30 + len(POISON)
    wait_for(
        lambda: (
            consumer.assert_running() and group_committed(kafka_settings, group, spec.name) == (total, total)
        ),
        150,
        "every offset to be committed",
    )
    labels = {"topic": spec.name, "group": group}
    assert metric_value(metrics_port, "surge_consumer_records_processed_total", **labels) == 30
    assert (
        metric_value(metrics_port, "surge_consumer_records_dead_lettered_total", **labels, reason="not_json")
        == 3
    )
    assert (
        metric_value(metrics_port, "surge_consumer_records_dead_lettered_total", **labels, reason="oversized")
        == 1
    )
    assert consumer.terminate() == 0

    letters = read_topic(kafka_settings, spec.dlq)
    assert len(letters) == len(POISON)
    by_source = {
        (int(h["source-partition"]), int(h["source-offset"])): (m, h)
        for m in letters
        for h in [parse_dlq_headers(m.headers)]
    }
    for name, key, value, reason, attempts in POISON:
        message, headers = by_source[sent[name]]
        assert headers["reason"] == reason, name
        assert int(headers["attempts"]) == attempts, name
        assert headers["source-topic"] == spec.name
        assert headers["consumer-group"] == group
        assert headers["error"], name
        assert message.key == key and (message.value or b"") == value, f"{name}: original bytes must be kept"
    assert (
        "max_chunks_per_document"
        in parse_dlq_headers(by_source[sent["fails processing"]][0].headers)["error"]
    )

    with open_vector_store(EmbeddedStoreSettings(path=tmp_path / "index"), 384) as store:
        assert store.count_documents() == len(good_ids)
        assert all(store.document_chunks(doc_id) for doc_id in good_ids)
        assert not store.document_chunks("p-9")
