"""The documents topic carries the tenant: records of the HTTP sink key's tenant are indexed under that
tenant (key `tenant#doc_id`), and a record naming another tenant is refused by the app and dead-lettered,
never written into either tenant."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pipelines.producer import open_producer, produce_records
from surge_core.kafka_admin import ensure_topics
from surge_core.kafka_settings import KafkaSettings
from surge_core.records import DocumentUpsert
from surge_core.topics import DOCUMENTS
from surge_core.vector_store import open_vector_store
from tests.kafka_helpers import IngestionProcess, group_committed, read_topic, wait_for

pytestmark = pytest.mark.integration


@pytest.mark.timeout(600)
def test_a_record_of_another_tenant_than_the_sinks_key_is_dead_lettered_and_its_own_are_indexed(
    kafka_settings: KafkaSettings,
    topic_prefix: str,
    tmp_path: Path,
    spawn_ingestion: Callable[..., IngestionProcess],
    surge_app: Any,
) -> None:
    spec = DOCUMENTS.with_prefix(topic_prefix)
    ensure_topics(kafka_settings, [spec])
    own = [
        DocumentUpsert(doc_id=f"{topic_prefix}t-{i}", tenant="acme", text=f"acme note {i}") for i in range(3)
    ]
    forged = DocumentUpsert(
        doc_id=f"{topic_prefix}t-forged", tenant="globex", text="globex note by acme's sink"
    )
    producer = open_producer(kafka_settings)
    try:
        produce_records(producer, spec, [*own, forged])
    finally:
        producer.close()
    assert {m.key.decode() for m in read_topic(kafka_settings, spec.name)} == {
        d.storage_id for d in [*own, forged]
    }

    group = f"{topic_prefix}tenant-ingestion"
    sink = spawn_ingestion(
        "tenant",
        "--bootstrap-servers", kafka_settings.bootstrap_servers,
        "--topic-prefix", topic_prefix,
        "--group-id", group,
        "--max-attempts", "1",
        "--sink-url", surge_app.base_url,
        env={"SURGE_API_KEY": "sk-acme-all"},
    )  # fmt: skip
    wait_for(
        lambda: sink.assert_running() and group_committed(kafka_settings, group, spec.name)[0] == 4,
        300,
        "every record to be committed or dead-lettered",
    )
    assert sink.terminate() == 0, sink.log()[-3000:]
    dead = read_topic(kafka_settings, spec.dlq)
    assert [m.key.decode() for m in dead] == [forged.storage_id]

    settings = surge_app.settings.retriever
    with open_vector_store(settings.store, settings.dimensions) as store:
        for doc in own:
            assert [c.text for c in store.document_chunks(f"acme#{doc.doc_id}")] == [doc.text]
            assert store.document_chunks(doc.doc_id) == []  # not in the default tenant
        assert store.document_chunks(forged.storage_id) == []
        assert store.document_chunks(f"acme#{forged.doc_id}") == []
