"""The broker restarts (SIGTERM, same port and data) while the ingestion consumer works: it reconnects,
carries on from the committed offsets, and every document ends up in the index exactly once.

"Exactly once" is checked where duplicates would show: the consumer's processed-records metric counts
deliveries (records handled again after the outage make it exceed the total), and the index's insert
log must still hold one insert per document (the unique key alone would hide a document written twice)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pipelines.broker import LocalBroker, free_port
from pipelines.producer import open_sender, produce_records
from surge_core.kafka_admin import ensure_topics
from surge_core.kafka_settings import KafkaSettings
from surge_core.records import DocumentUpsert
from surge_core.store_settings import EmbeddedStoreSettings
from surge_core.topics import DOCUMENTS
from surge_core.vector_store import open_vector_store
from tests.kafka_helpers import IngestionProcess, group_committed, index_counts, metric_value, wait_for

pytestmark = pytest.mark.integration

TOTAL = 1500


@pytest.mark.timeout(300)
def test_a_broker_restart_mid_ingestion_loses_and_duplicates_nothing(
    private_kafka_broker: LocalBroker,
    topic_prefix: str,
    tmp_path: Path,
    spawn_ingestion: Callable[..., IngestionProcess],
) -> None:
    kafka = KafkaSettings(bootstrap_servers=private_kafka_broker.bootstrap_servers)
    spec = DOCUMENTS.with_prefix(topic_prefix)
    ensure_topics(kafka, [spec])
    sender = open_sender(kafka, "kafka-python")
    try:
        produce_records(
            sender, spec, (DocumentUpsert(doc_id=f"r-{i}", text=f"Restart note {i}.") for i in range(TOTAL))
        )
    finally:
        sender.close()

    group = f"{topic_prefix}ingestion"
    port = free_port()
    consumer = spawn_ingestion(
        "restart",
        "--bootstrap-servers", kafka.bootstrap_servers,
        "--topic-prefix", topic_prefix,
        "--group-id", group,
        "--group-instance-id", "ingestion-0",
        "--index-path", str(tmp_path / "index"),
        "--batch-size", "32",
        "--session-timeout-s", "6",
        "--metrics-port", str(port),
    )  # fmt: skip
    wait_for(
        lambda: consumer.assert_running() and group_committed(kafka, group, spec.name)[0] >= 300, 180, "300"
    )

    private_kafka_broker.stop()  # SIGTERM; the consumer is mid-stream
    # Longer than the session timeout: the group forgets the member, so the batch it wrote meanwhile
    # cannot be committed by it and is delivered again.
    time.sleep(8)
    consumer.assert_running()  # a broker outage is waited out, not a crash
    private_kafka_broker.start()

    wait_for(
        lambda: consumer.assert_running() and group_committed(kafka, group, spec.name)[0] == TOTAL,
        180,
        "every record committed after the restart",
    )
    deliveries = metric_value(port, "surge_consumer_records_processed_total", group=group)
    assert consumer.terminate() == 0, consumer.log()[-3000:]
    assert deliveries is not None and deliveries >= TOTAL
    assert index_counts(tmp_path / "index") == (TOTAL, TOTAL), "a redelivered document was written twice"
    print(f"\nbroker restart: {TOTAL} records, {deliveries:.0f} deliveries ({deliveries - TOTAL:.0f} again)")
    with open_vector_store(EmbeddedStoreSettings(path=tmp_path / "index"), 384) as store:
        assert store.count_documents() == TOTAL
        assert store.count_chunks() == TOTAL
