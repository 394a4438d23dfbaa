"""Fault test: the filesystem under the embedded index really fills (a 2 MiB tmpfs mounted over the index
directory). The ingestion loop must treat that as "sink unavailable": keep the offsets, dead-letter
nothing, and index every document once space comes back. Needs root (mount); skipped otherwise."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer

from pipelines.consumer import AtLeastOnceConsumer, SinkUnavailable
from pipelines.ingestion import DocumentHandler, IngestionSettings
from pipelines.sinks import DirectSink, DirectSinkSettings
from surge_core.kafka_settings import KafkaSettings
from surge_core.retry import RetryPolicy
from surge_core.store_settings import EmbeddedStoreSettings
from surge_core.topics import DOCUMENTS, TopicSpec
from tests.kafka_helpers import LoopInThread, read_topic, wait_for

pytestmark = pytest.mark.integration

DOCUMENTS_SENT = 60


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mountpoint = tmp_path / "index"
    mountpoint.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mountpoint)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


class CountingSink:
    """Our DirectSink, counting how often it reported itself unavailable."""

    def __init__(self, inner: DirectSink) -> None:
        self.inner = inner
        self.unavailable: list[str] = []

    def write(self, ops: Sequence[Any], versions: Any = None) -> None:
        try:
            self.inner.write(ops, versions)
        except SinkUnavailable as error:
            self.unavailable.append(str(error))
            raise

    def close(self) -> None:
        self.inner.close()


@pytest.mark.timeout(300)
def test_a_full_index_disk_keeps_offsets_dead_letters_nothing_and_catches_up_when_space_returns(
    kafka_settings: KafkaSettings,
    topic_prefix: str,
    small_disk: Path,
    kafka_topic: Callable[[TopicSpec], TopicSpec],
    kafka_producer: KafkaProducer,
) -> None:
    spec = kafka_topic(DOCUMENTS)
    sink = CountingSink(
        DirectSink(DirectSinkSettings(store=EmbeddedStoreSettings(path=small_disk), chunk_chars=400))
    )
    # Leave ~150 KiB free: the empty index fits, the documents below do not.
    free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * max(0, free - 150 * 1024))

    for i in range(DOCUMENTS_SENT):
        text = " ".join(f"Document {i} sentence {j} about disks that fill up." for j in range(30))
        value = json.dumps({"op": "upsert", "doc_id": f"d{i}", "text": text}).encode()
        kafka_producer.send(spec.name, key=f"d{i}".encode(), value=value)
    kafka_producer.flush()

    settings = IngestionSettings(
        kafka=kafka_settings,
        topic_prefix=topic_prefix,
        group_id=f"disk-{uuid.uuid4().hex[:8]}",
        poll_timeout_s=0.2,
        batch_size=16,
        retry=RetryPolicy(max_attempts=2, base_delay_s=0.05, max_delay_s=0.5),
    )
    loop = AtLeastOnceConsumer(settings, spec.name, DocumentHandler(sink))
    try:
        with LoopInThread(loop, kafka_settings, spec.name) as running:
            wait_for(lambda: len(sink.unavailable) >= 3, 120, "the sink to report the full disk")
            assert running.alive()
            committed = sum(running.committed(p) for p in range(spec.partitions))
            assert committed < DOCUMENTS_SENT, "offsets moved past documents that were never indexed"
            assert read_topic(kafka_settings, spec.dlq) == [], "a full disk is not the records' fault"
            assert any("FULL" in e or "IOERR" in e or "ENOSPC" in e for e in sink.unavailable), (
                sink.unavailable
            )

            filler.unlink()  # space comes back
            wait_for(
                lambda: sum(running.committed(p) for p in range(spec.partitions)) == DOCUMENTS_SENT,
                180,
                "every offset committed after space came back",
            )
            assert running.alive()
        assert sink.inner.store.count_documents() == DOCUMENTS_SENT
        assert read_topic(kafka_settings, spec.dlq) == []
        print(
            f"\nfull disk: sink unavailable {len(sink.unavailable)} times, e.g. {sink.unavailable[0][:120]}"
        )
    finally:
        sink.close()
