"""At-least-once ingestion: SIGKILL the consumer mid-way, restart it, and every document is indexed once.

10,000 short documents go through the real path: producer (acks=all, idempotent) -> broker -> the
ingestion consumer as a real subprocess (direct sink: MiniLM embeddings + the embedded index) -> disk.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from deployments.settings import EmbeddedStoreSettings
from deployments.vector_store import open_vector_store
from pipelines.admin import ensure_topics
from pipelines.producer import open_sender, produce_records
from pipelines.records import DocumentUpsert
from pipelines.settings import KafkaSettings
from pipelines.topics import DOCUMENTS
from tests.kafka_helpers import IngestionProcess, group_committed, wait_for

pytestmark = pytest.mark.integration

DOCUMENTS_TOTAL = 10_000


def _document(i: int) -> DocumentUpsert:
    return DocumentUpsert(
        doc_id=f"doc-{i:05d}",
        text=f"Note {i}: the {['red', 'green', 'blue'][i % 3]} report number {i * 7919 % 10007} is filed.",
        metadata={"n": i},
    )


@pytest.mark.timeout(420)
def test_sigkill_mid_ingestion_then_restart_indexes_every_document_exactly_once(
    kafka_settings: KafkaSettings,
    topic_prefix: str,
    tmp_path: Path,
    spawn_ingestion: Callable[..., IngestionProcess],
) -> None:
    spec = DOCUMENTS.with_prefix(topic_prefix)
    ensure_topics(kafka_settings, [spec])
    sender = open_sender(kafka_settings, "confluent")
    try:
        produced = produce_records(sender, spec, (_document(i) for i in range(DOCUMENTS_TOTAL)))
    finally:
        sender.close()
    print(
        f"\nproduce: {produced.records} records in {produced.seconds:.2f} s = {produced.per_second:,.0f} msg/s"
    )

    index = tmp_path / "index"
    group = f"{topic_prefix}ingestion"
    args = [
        "--bootstrap-servers", kafka_settings.bootstrap_servers,
        "--topic-prefix", topic_prefix,
        "--group-id", group,
        # A restarted pod keeps its name: with static membership it takes its partitions back at once.
        "--group-instance-id", "ingestion-0",
        "--index-path", str(index),
        "--session-timeout-s", "6",
    ]  # fmt: skip
    committed = lambda: group_committed(kafka_settings, group, spec.name)[0]  # noqa: E731

    first = spawn_ingestion("first", *args)
    started = time.monotonic()
    wait_for(lambda: first.assert_running() and committed() >= 3000, 240, "3,000 committed records")
    time.sleep(random.uniform(0.0, 0.5))  # land anywhere inside the next batch: write done or not
    first.kill()
    at_kill = committed()
    assert at_kill < DOCUMENTS_TOTAL, "the consumer finished before it could be killed"

    second = spawn_ingestion("second", *args)
    restarted = time.monotonic()
    wait_for(lambda: second.assert_running() and committed() == DOCUMENTS_TOTAL, 300, "all records committed")
    done = time.monotonic()
    assert second.terminate() == 0, second.log()[-3000:]

    print(
        f"ingest: killed at {at_kill} committed; end to end {DOCUMENTS_TOTAL / (done - started):.0f} docs/s "
        f"over {done - started:.1f} s (two model loads included); after restart "
        f"{(DOCUMENTS_TOTAL - at_kill) / (done - restarted):.0f} docs/s"
    )
    with open_vector_store(EmbeddedStoreSettings(path=index), 384) as store:
        assert store.count_documents() == DOCUMENTS_TOTAL
        assert store.count_chunks() == DOCUMENTS_TOTAL  # one chunk each: no document indexed twice
        for i in random.Random(7).sample(range(DOCUMENTS_TOTAL), 50):
            chunks = store.document_chunks(f"doc-{i:05d}")
            assert [c.text for c in chunks] == [_document(i).text]
            assert chunks[0].metadata == {"n": i}
