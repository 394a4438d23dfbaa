"""Fault test (real broker): a rebalance during a slow sink write hands the consumer back the very partition
it was writing.

kafka-python 3 keeps a partition's position across such a rebalance (eager protocol: every partition is
revoked, then the kept ones keep their state). The loop does not commit a batch of a partition revoked during
its write, so before the fix it neither committed those records nor read them again: the group's lag stayed
up for good, and records skipped as revoked were lost once a later batch committed past them. The rebalance
here is made deterministic: a second member joins the same group subscribed to another topic, so this
consumer keeps every partition of its own."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer

from pipelines.consumer import AtLeastOnceConsumer
from pipelines.consumer_contract import ConsumerSettings
from surge_core.kafka_settings import KafkaSettings
from surge_core.retry import RetryPolicy
from surge_core.topics import TopicSpec
from tests.kafka_helpers import LoopInThread, wait_for

pytestmark = pytest.mark.integration

RECORDS = 5


class GatedSink:
    """A batch handler whose first write blocks until the test has rebalanced the group."""

    def __init__(self) -> None:
        self.writing = threading.Event()
        self.release = threading.Event()
        self.written: list[tuple[int, int]] = []

    def decode(self, message: Any) -> bytes:
        return bytes(message.value)

    def process(self, records: Sequence[bytes], versions: Sequence[tuple[int, int]]) -> None:
        self.writing.set()
        assert self.release.wait(60), "the test never released the write"
        self.written.extend(versions)


@pytest.mark.timeout(120)
def test_records_of_a_partition_handed_back_during_a_write_are_written_and_committed(
    kafka_settings: KafkaSettings,
    topic_prefix: str,
    kafka_topic: Callable[[TopicSpec], TopicSpec],
    kafka_producer: KafkaProducer,
) -> None:
    from pydantic import TypeAdapter

    spec = kafka_topic(TopicSpec(name="handback", partitions=1, schema=TypeAdapter(Any), key_field="id"))
    other = kafka_topic(TopicSpec(name="other", partitions=1, schema=TypeAdapter(Any), key_field="id"))
    for i in range(RECORDS):
        kafka_producer.send(spec.name, key=b"k", value=f"record {i}".encode())
    kafka_producer.flush()

    settings = ConsumerSettings(
        kafka=kafka_settings,
        group_id=f"handback-{uuid.uuid4().hex[:8]}",
        batch_size=RECORDS,
        poll_timeout_s=0.2,
        max_poll_interval_s=10,
        session_timeout_s=6,
        retry=RetryPolicy(max_attempts=1),
    )
    sink = GatedSink()
    loop = AtLeastOnceConsumer(settings, spec.name, sink)
    with LoopInThread(loop, kafka_settings, spec.name) as running:
        wait_for(sink.writing.is_set, 60, "the consumer to start its write")
        # A second member of the group, on another topic: the rebalance revokes and hands back partition 0.
        # It polls all along (a member that stops polling holds every rebalance up to its timeout).
        joiner = KafkaConsumer(
            **kafka_settings.kafka_python_config(),
            group_id=settings.group_id,
            enable_auto_commit=False,
            session_timeout_ms=6000,
            heartbeat_interval_ms=2000,
        )
        joiner.subscribe([other.name])
        stop_joiner = threading.Event()

        def poll_joiner() -> None:
            while not stop_joiner.is_set():
                joiner.poll(timeout_ms=100)

        polling = threading.Thread(target=poll_joiner, name="joiner", daemon=True)
        polling.start()
        try:
            wait_for(
                lambda: bool(loop._revoked_during_write) and bool(running.loop_assignment()),
                60,
                "the rebalance to revoke partition 0 and hand it back mid-write",
            )
            sink.release.set()
            wait_for(
                lambda: running.committed(0) == RECORDS,
                60,
                "every record committed after the partition came back (before the fix: never)",
            )
            assert running.alive()
        finally:
            stop_joiner.set()
            polling.join(10)
            joiner.close(autocommit=False)
    assert {offset for _, offset in sink.written} == set(range(RECORDS)), sink.written
    assert loop.stats.commits >= 1
