"""Two ingestion consumers in one group split the partitions; when one leaves (SIGTERM), the other takes
over its partitions from the committed offsets and no document is lost."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from kafka import KafkaProducer

from pipelines.broker import free_port
from pipelines.producer import produce_records
from surge_core.kafka_settings import KafkaSettings
from surge_core.records import DocumentUpsert
from surge_core.store_settings import EmbeddedStoreSettings
from surge_core.topics import DOCUMENTS, TopicSpec
from surge_core.vector_store import open_vector_store
from tests.kafka_helpers import IngestionProcess, group_committed, ingestion_args, metric_value, wait_for

pytestmark = pytest.mark.integration

TOTAL = 3000


@pytest.mark.timeout(360)
def test_two_consumers_share_the_partitions_and_one_leaving_loses_nothing(
    kafka_settings: KafkaSettings,
    topic_prefix: str,
    tmp_path: Path,
    spawn_ingestion: Callable[..., IngestionProcess],
    kafka_topic: Callable[[TopicSpec], TopicSpec],
    kafka_producer: KafkaProducer,
) -> None:
    spec = kafka_topic(DOCUMENTS)
    docs = [DocumentUpsert(doc_id=f"d-{i}", text=f"Shared partition note {i}.") for i in range(TOTAL)]
    produce_records(kafka_producer, spec, docs)

    group = f"{topic_prefix}ingestion"
    ports = {"a": free_port(), "b": free_port()}

    def args(name: str) -> list[str]:
        return ingestion_args(
            kafka_settings,
            topic_prefix,
            group,
            index_path=tmp_path / f"index-{name}",
            metrics_port=ports[name],
            batch_size=32,
            session_timeout_s=6,
        )

    consumers = {name: spawn_ingestion(name, *args(name)) for name in ports}
    labels = {"topic": spec.name, "group": group}

    def processed(name: str) -> float:
        consumers[name].assert_running()
        return metric_value(ports[name], "surge_consumer_records_processed_total", **labels) or 0.0

    wait_for(
        lambda: processed("a") >= 100 and processed("b") >= 100, 180, "both consumers to process records"
    )
    assert group_committed(kafka_settings, group, spec.name)[0] < TOTAL, "finished before the leave"

    assert consumers["a"].terminate() == 0, consumers["a"].log()[-3000:]  # a leaves the group
    assert "stopped:" in consumers["a"].log()
    wait_for(
        lambda: (
            consumers["b"].assert_running() and group_committed(kafka_settings, group, spec.name)[0] == TOTAL
        ),
        240,
        "the remaining consumer to commit everything",
    )
    assert consumers["b"].terminate() == 0

    seen: dict[str, set[str]] = {}
    for name in consumers:
        with open_vector_store(EmbeddedStoreSettings(path=tmp_path / f"index-{name}"), 384) as store:
            seen[name] = {doc.doc_id for doc in docs if store.document_chunks(doc.doc_id)}
            assert store.count_documents() == len(seen[name])
    assert seen["a"] and seen["b"], "both consumers must have owned partitions"
    assert seen["a"] | seen["b"] == {doc.doc_id for doc in docs}, "documents lost in the rebalance"
    print(
        f"\nrebalance: a indexed {len(seen['a'])}, b {len(seen['b'])}, replayed {len(seen['a'] & seen['b'])}"
    )
