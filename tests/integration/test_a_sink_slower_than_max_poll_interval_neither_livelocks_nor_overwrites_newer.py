"""Fault test (real broker, real embedded index): every write of the sink takes longer than
`max_poll_interval_s`, and a second consumer joins the group in the middle of a write.

Before: the member writing was evicted at every batch, its commit refused, the new owner evicted in turn:
a rebalance livelock, and the evicted member's write could land after the new owner's (a stale
overwrite). Now the loop keeps polling with its partitions paused while the sink works, does not write or
commit partitions revoked meanwhile, and the store refuses versions older than the one it holds."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer

from pipelines.consumer import AtLeastOnceConsumer
from pipelines.ingestion import DocumentHandler, IngestionSettings, last_op_per_document
from surge_core.kafka_settings import KafkaSettings
from surge_core.retry import RetryPolicy
from surge_core.store_settings import EmbeddedStoreSettings
from surge_core.topics import DOCUMENTS, TopicSpec
from surge_core.vector_store import ChunkRecord, open_vector_store
from tests.kafka_helpers import LoopInThread, wait_for

pytestmark = pytest.mark.integration

DOCS, VERSIONS = 12, 3
MAX_POLL_INTERVAL_S = 3.0
WRITE_S = 4.5  # every write outlives max_poll_interval_s


class SlowIndexSink:
    """Our sink interface over a real embedded index, slower than the group allows between polls."""

    def __init__(self, path: Path) -> None:
        self.store = open_vector_store(EmbeddedStoreSettings(path=path), 4)
        self.writes = 0
        self.fenced = 0
        self.writing = threading.Event()

    def write(self, ops: Sequence[Any], versions: Any = None) -> None:
        self.writing.set()
        time.sleep(WRITE_S)
        upserts, _ = last_op_per_document(ops)
        result = self.store.replace_documents(
            {
                d.doc_id: [ChunkRecord(d.doc_id, 0, d.text, [1.0, 0.5, 0.25, float(len(d.text))])]
                for d in upserts
            },
            versions,
        )
        self.fenced += result.fenced
        self.writes += 1

    def close(self) -> None:
        self.store.close()


@pytest.mark.timeout(300)
def test_two_consumers_with_a_sink_slower_than_max_poll_interval_finish_with_every_latest_version(
    kafka_settings: KafkaSettings,
    topic_prefix: str,
    tmp_path: Path,
    kafka_topic: Callable[[TopicSpec], TopicSpec],
    kafka_producer: KafkaProducer,
) -> None:
    spec = kafka_topic(DOCUMENTS)
    for version in range(1, VERSIONS + 1):
        for i in range(DOCS):
            value = {"op": "upsert", "doc_id": f"d{i}", "text": f"d{i} version {version}"}
            kafka_producer.send(spec.name, key=f"d{i}".encode(), value=json.dumps(value).encode())
    kafka_producer.flush()
    total = DOCS * VERSIONS

    settings = IngestionSettings(
        kafka=kafka_settings,
        topic_prefix=topic_prefix,
        group_id=f"slow-{uuid.uuid4().hex[:8]}",
        batch_size=6,
        poll_timeout_s=0.2,
        max_poll_interval_s=MAX_POLL_INTERVAL_S,
        session_timeout_s=6,
        retry=RetryPolicy(max_attempts=1),
    )
    index = tmp_path / "index"
    sinks = [SlowIndexSink(index), SlowIndexSink(index)]
    loops = [AtLeastOnceConsumer(settings, spec.name, DocumentHandler(sink)) for sink in sinks]
    started = time.monotonic()
    try:
        with LoopInThread(loops[0], kafka_settings, spec.name) as first:
            wait_for(sinks[0].writing.is_set, 60, "the first consumer to start a slow write")
            with LoopInThread(loops[1], kafka_settings, spec.name) as second:  # joins mid-write
                wait_for(
                    lambda: sum(first.committed(p) for p in range(spec.partitions)) == total,
                    200,
                    "every offset committed (a livelock never gets there)",
                )
                assert first.alive() and second.alive()
        elapsed = time.monotonic() - started
        texts = {f"d{i}": [h.text for h in sinks[0].store.document_chunks(f"d{i}")] for i in range(DOCS)}
        assert texts == {f"d{i}": [f"d{i} version {VERSIONS}"] for i in range(DOCS)}, "a stale overwrite"
        writes = [sink.writes for sink in sinks]
        assert writes[1] > 0, "the second consumer never got partitions"
        # Each batch is written once, barring a few replays around the one rebalance (not a livelock).
        assert sum(writes) <= total, writes
        print(
            f"\nslow sink: {total} records in {elapsed:.0f} s, writes per consumer {writes}, "
            f"fenced {[s.fenced for s in sinks]}, commits {[loop.stats.commits for loop in loops]}"
        )
    finally:
        for sink in sinks:
            sink.close()
