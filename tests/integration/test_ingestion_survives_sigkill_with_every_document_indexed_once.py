"""At-least-once ingestion: SIGKILL the consumer mid-way, restart it, and every document is indexed once.

4,000 short documents go through the real path: producer (acks=all, idempotent) -> broker -> the
ingestion consumer as a real subprocess (direct sink: MiniLM embeddings + the embedded index) -> disk.

The kill is placed where it hurts: the broker is stopped so the consumer's last write reaches the index
but its commit cannot, then the consumer is SIGKILLed and the broker started again. Records in the index beyond the committed
offset are then certain to be delivered again; the test counts them (index vs. committed offsets, and the
restarted process's processed-records metric) and checks that the replay wrote nothing twice (the index's
insert log), not just that the final count is right (the unique key would hide duplicates).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pipelines.broker import LocalBroker, free_port
from pipelines.producer import open_sender, produce_records
from surge_core.kafka_settings import KafkaSettings
from surge_core.records import DocumentUpsert
from surge_core.store_settings import EmbeddedStoreSettings
from surge_core.topics import DOCUMENTS, TopicSpec
from surge_core.vector_store import open_vector_store
from tests.kafka_helpers import (
    IngestionProcess,
    group_committed,
    index_counts,
    ingestion_args,
    metric_value,
    wait_for,
)

pytestmark = pytest.mark.integration

DOCUMENTS_TOTAL = 4_000


def _document(i: int) -> DocumentUpsert:
    return DocumentUpsert(
        doc_id=f"doc-{i:05d}",
        text=f"Note {i}: the {['red', 'green', 'blue'][i % 3]} report number {i * 7919 % 10007} is filed.",
        metadata={"n": i},
    )


@pytest.mark.timeout(420)
def test_sigkill_mid_ingestion_then_restart_indexes_every_document_exactly_once(
    private_kafka_broker: LocalBroker,
    topic_prefix: str,
    tmp_path: Path,
    spawn_ingestion: Callable[..., IngestionProcess],
    kafka_topic: Callable[[TopicSpec], TopicSpec],
) -> None:
    kafka_settings = KafkaSettings(bootstrap_servers=private_kafka_broker.bootstrap_servers)
    spec = kafka_topic(DOCUMENTS)
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
    # A restarted pod keeps its name: with static membership it takes its partitions back at once.
    args = ingestion_args(
        kafka_settings,
        topic_prefix,
        group,
        group_instance_id="ingestion-0",
        index_path=index,
        session_timeout_s=6,
    )
    committed = lambda: group_committed(kafka_settings, group, spec.name)[0]  # noqa: E731

    first = spawn_ingestion("first", *args)
    started = time.monotonic()
    wait_for(lambda: first.assert_running() and committed() >= 1200, 240, "1,200 committed records")
    before_outage = committed()
    private_kafka_broker.stop()  # the write in hand (or the next, from fetched records) lands, its commit cannot
    try:
        wait_for(lambda: index_counts(index)[0] > before_outage, 60, "a write the broker never saw committed")
        time.sleep(random.uniform(0.5, 2.0))
        first.kill()
    finally:
        private_kafka_broker.start()
    at_kill = committed()
    in_index_at_kill, _ = index_counts(index)
    assert at_kill < DOCUMENTS_TOTAL, "the consumer finished before it could be killed"
    redelivered = in_index_at_kill - at_kill
    assert redelivered > 0, "the kill did not land between a write and its commit"

    port = free_port()
    second = spawn_ingestion("second", *args, "--metrics-port", str(port))
    restarted = time.monotonic()
    wait_for(lambda: second.assert_running() and committed() == DOCUMENTS_TOTAL, 300, "all records committed")
    done = time.monotonic()
    delivered_again = metric_value(port, "surge_consumer_records_processed_total", group=group)
    assert second.terminate() == 0, second.log()[-3000:]
    # The restart read everything from the committed offset, the already-indexed records included ...
    assert delivered_again == DOCUMENTS_TOTAL - at_kill
    documents, inserts = index_counts(index)
    # ... and the replay of those wrote nothing: one insert per document, ever.
    assert (documents, inserts) == (DOCUMENTS_TOTAL, DOCUMENTS_TOTAL)

    print(
        f"ingest: killed at {at_kill} committed with {in_index_at_kill} indexed: {redelivered} records "
        f"delivered twice, 0 written twice ({inserts} inserts); end to end {DOCUMENTS_TOTAL / (done - started):.0f} docs/s "
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
