"""A re-embedding that dies mid-rebuild (real broker, real MiniLM, embedded index) leaves the active version
as it was; run again, it resumes from its checkpoint instead of starting over, completes and activates."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer

import pipelines.reembed as reembed
from pipelines.ingestion import IngestionSettings
from surge_core.embedding import EmbeddingModelSettings
from surge_core.embedding_versions import (
    VERSION_KEY,
    EmbeddingVersion,
    FileVersionCatalog,
    open_version_store,
)
from surge_core.kafka_settings import KafkaSettings
from surge_core.store_settings import EmbeddedStoreSettings
from surge_core.topics import DOCUMENTS, TopicSpec

pytestmark = pytest.mark.integration

DOCS = 48
V2 = EmbeddingModelSettings(truncate_dim=128)


class Killed(BaseException):
    """Stands for the process dying: not an Exception, so nothing on the way catches it."""


@pytest.mark.timeout(300)
def test_a_crash_mid_rebuild_keeps_the_old_version_active_and_the_rerun_resumes(
    kafka_settings: KafkaSettings,
    kafka_topic: Callable[[TopicSpec], TopicSpec],
    topic_prefix: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec = kafka_topic(DOCUMENTS)
    producer = KafkaProducer(**kafka_settings.kafka_python_config(), acks="all")
    try:
        for i in range(DOCS):
            value = {
                "op": "upsert",
                "doc_id": f"d{i}",
                "text": f"Document number {i} is about topic {i % 7}.",
            }
            producer.send(spec.name, key=f"d{i}".encode(), value=json.dumps(value).encode())
        producer.flush()
    finally:
        producer.close()
    store = EmbeddedStoreSettings(path=tmp_path / "index")
    catalog = FileVersionCatalog(store)
    catalog.register(EmbeddingVersion(name="v1", embedder=EmbeddingModelSettings(), dimensions=384))
    catalog.complete("v1")
    catalog.activate("v1")
    settings = IngestionSettings.model_validate(
        {
            "kafka": {"bootstrap_servers": kafka_settings.bootstrap_servers},
            "topic_prefix": topic_prefix,
            "batch_size": 8,
            "sink": {"kind": "direct", "store": {"backend": "embedded", "path": str(store.path)}},
        }
    )

    real_handler = reembed.DocumentHandler
    batches = 0

    def dying_handler(sink: Any) -> Any:
        handler = real_handler(sink)
        process = handler.process

        def process_then_die(records: Any, positions: Any) -> None:
            nonlocal batches
            batches += 1
            if batches == 3:
                raise Killed
            process(records, positions)

        handler.process = process_then_die  # type: ignore[method-assign]
        return handler

    monkeypatch.setattr(reembed, "DocumentHandler", dying_handler)
    with pytest.raises(Killed):
        reembed.run_reembed(settings, "v2", V2)
    monkeypatch.undo()

    crashed = FileVersionCatalog(store).read()
    assert crashed.active == "v1", "a crash mid-rebuild must not move the active pointer"
    assert crashed.versions["v2"].state == "building"
    done_before_crash = sum(crashed.versions["v2"].checkpoint.values())
    assert done_before_crash > 0, "the batches written before the crash are checkpointed"

    stats = reembed.run_reembed(settings, "v2", V2)
    assert stats.activated
    assert stats.records < DOCS, "the rerun resumed from the checkpoint instead of starting over"
    assert stats.records + done_before_crash >= DOCS
    finished = FileVersionCatalog(store).read()
    assert finished.active == "v2" and finished.versions["v2"].state == "complete"
    with open_version_store(store, finished.versions["v2"]) as v2:
        assert v2.count_documents() == DOCS
        assert v2.document_chunks("d5")[0].metadata[VERSION_KEY] == "v2"


def test_a_live_direct_sink_writes_into_the_activated_version_from_its_next_batch(tmp_path: Path) -> None:
    from pipelines.sinks import DirectSink, DirectSinkSettings
    from surge_core.records import DocumentUpsert

    store = EmbeddedStoreSettings(path=tmp_path / "index")
    sink = DirectSink(DirectSinkSettings(store=store))
    try:
        sink.write([DocumentUpsert(doc_id="before", text="Written before the switch.")])
        assert sink.version is None and sink.store.count_documents() == 1
        catalog = FileVersionCatalog(store)
        catalog.register(EmbeddingVersion(name="v2", embedder=V2, dimensions=128))
        catalog.complete("v2")
        catalog.activate("v2")
        sink._versions._checked_at = float("-inf")  # type: ignore[union-attr]  # skip the 1 s throttle
        sink.write([DocumentUpsert(doc_id="after", text="Written after the switch.")])
        assert sink.version == "v2" and sink.embedder.dimensions == 128
    finally:
        sink.close()
    with open_version_store(store, FileVersionCatalog(store).read().versions["v2"]) as v2:
        assert [c.metadata[VERSION_KEY] for c in v2.document_chunks("after")] == ["v2"]
        assert v2.document_chunks("before") == []
