"""The HTTP sink: while the app is unreachable nothing is committed or dead-lettered and SIGTERM still
exits cleanly; pointed at the running app (`POST /v1/documents`), every record lands in its index."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pipelines.broker import free_port
from pipelines.producer import open_producer, produce_records
from surge_core.kafka_settings import KafkaSettings
from surge_core.records import DocumentDelete, DocumentUpsert
from surge_core.topics import DOCUMENTS, TopicSpec
from surge_core.vector_store import open_vector_store
from tests.kafka_helpers import IngestionProcess, group_committed, ingestion_args, read_topic, wait_for

pytestmark = pytest.mark.integration


@pytest.mark.timeout(600)
def test_unreachable_app_is_waited_out_then_documents_are_indexed_through_the_app(
    kafka_settings: KafkaSettings,
    topic_prefix: str,
    tmp_path: Path,
    spawn_ingestion: Callable[..., IngestionProcess],
    surge_app: Any,
    kafka_topic: Callable[[TopicSpec], TopicSpec],
) -> None:
    spec = kafka_topic(DOCUMENTS)
    ids = [f"{topic_prefix}http-{i}" for i in range(40)]
    records: list[DocumentUpsert | DocumentDelete] = [
        DocumentUpsert(
            doc_id=doc_id, text=f"Posted through the HTTP sink, note {i}.", metadata={"via": "kafka"}
        )
        for i, doc_id in enumerate(ids)
    ]
    records.append(DocumentDelete(doc_id=ids[-1]))  # the last one is upserted, then deleted
    producer = open_producer(kafka_settings)
    try:
        produce_records(producer, spec, records)
    finally:
        producer.close()

    group = f"{topic_prefix}http-ingestion"
    common = ingestion_args(kafka_settings, topic_prefix, group, max_attempts=2)
    env = {"SURGE_API_KEY": surge_app.api_key}

    down = spawn_ingestion("down", *common, "--sink-url", f"http://127.0.0.1:{free_port()}", env=env)
    wait_for(lambda: down.assert_running() and "sink unavailable" in down.log(), 120, "the outage to be seen")
    wait_for(lambda: down.log().count("sink unavailable") >= 3, 60, "a few retries of the same batch")
    assert group_committed(kafka_settings, group, spec.name)[0] == 0, "nothing may be committed while down"
    assert down.terminate(timeout_s=30) == 0, down.log()[-3000:]
    assert "abandoning an uncommitted batch" in down.log()
    assert read_topic(kafka_settings, spec.dlq) == [], "an unreachable sink is not poison"

    up = spawn_ingestion("up", *common, "--sink-url", surge_app.base_url, env=env)
    total = len(records)
    wait_for(
        lambda: up.assert_running() and group_committed(kafka_settings, group, spec.name)[0] == total,
        300,
        "every record to be committed through the app",
    )
    assert up.terminate() == 0, up.log()[-3000:]
    assert read_topic(kafka_settings, spec.dlq) == []

    settings = surge_app.settings.retriever
    with open_vector_store(settings.store, settings.dimensions) as store:
        for i, doc_id in enumerate(ids[:-1]):
            chunks = store.document_chunks(doc_id)
            assert [c.text for c in chunks] == [f"Posted through the HTTP sink, note {i}."], doc_id
            assert json.loads(json.dumps(chunks[0].metadata)) == {"via": "kafka"}
        assert store.document_chunks(ids[-1]) == []
