"""MESSAGE_TOO_LARGE on the dead-letter topic (real broker) fails fast into a truncated letter: the
partition keeps moving, the letter says why and carries the original's size and sha256."""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic

from pipelines.consumer import AtLeastOnceConsumer
from pipelines.dlq import TRUNCATED_VALUE_BYTES, parse_dlq_headers
from pipelines.ingestion import DocumentHandler, IngestionSettings
from surge_core.kafka_admin import ensure_topics
from surge_core.kafka_settings import KafkaSettings
from surge_core.retry import RetryPolicy
from surge_core.topics import DOCUMENTS
from tests.kafka_helpers import LoopInThread

pytestmark = pytest.mark.integration

POISON_BYTES = 200_000


class RecordingSink:
    def __init__(self) -> None:
        self.ids: list[str] = []

    def write(self, ops: Any, versions: Any = None) -> None:
        self.ids.extend(op.doc_id for op in ops)

    def close(self) -> None:
        pass


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("dlq_max_bytes", "kept"), [(40_000, TRUNCATED_VALUE_BYTES), (8_000, 0)], ids=["cut", "dropped"]
)
def test_a_dead_letter_the_dlq_refuses_as_too_large_is_sent_cut_and_the_partition_moves_on(
    kafka_settings: KafkaSettings, topic_prefix: str, dlq_max_bytes: int, kept: int
) -> None:
    spec = DOCUMENTS.with_prefix(topic_prefix)
    # The DLQ exists already, with a limit below the poison record (as an old or hand-made DLQ would).
    admin = KafkaAdminClient(**kafka_settings.kafka_python_config())
    try:
        admin.create_topics(
            [NewTopic(spec.dlq, 1, -1, topic_configs={"max.message.bytes": str(dlq_max_bytes)})]
        )
    finally:
        admin.close()
    ensure_topics(kafka_settings, [spec])
    poison = b"\xff" + b"not json " * (POISON_BYTES // 9)
    producer = KafkaProducer(**kafka_settings.kafka_python_config(), acks="all")
    try:
        bad = producer.send(spec.name, key=b"big", value=poison, partition=0).get(timeout=30)
        good = producer.send(
            spec.name,
            key=b"after",
            value=json.dumps({"op": "upsert", "doc_id": "after", "text": "fine"}).encode(),
            partition=0,
        ).get(timeout=30)
    finally:
        producer.close()

    sink = RecordingSink()
    settings = IngestionSettings(
        kafka=kafka_settings,
        topic_prefix=topic_prefix,
        group_id=f"big-{uuid.uuid4().hex[:8]}",
        poll_timeout_s=0.1,
        retry=RetryPolicy(max_attempts=2, base_delay_s=0.01, max_delay_s=0.02),
    )
    with LoopInThread(
        AtLeastOnceConsumer(settings, spec.name, DocumentHandler(sink)), kafka_settings, spec.name
    ) as running:
        # Before the fix the loop retried the refused send forever and never committed this offset.
        running.wait_committed_past(0, good.offset, timeout_s=60)
        letter = running.letter(0, bad.offset)
        assert running.alive()
    assert sink.ids == ["after"]
    assert letter is not None
    headers = parse_dlq_headers(letter.headers)
    assert headers["reason"] == "not_json"
    assert headers["truncated"] == "true"
    assert headers["original-size"] == str(len(poison))
    assert headers["original-sha256"] == hashlib.sha256(poison).hexdigest()
    assert (letter.value or b"") == poison[:kept]
