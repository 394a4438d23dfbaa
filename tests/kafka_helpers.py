"""Small helpers the Kafka integration tests share: read a whole topic, wait for a condition."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from pipelines.settings import KafkaSettings


def read_topic(kafka: KafkaSettings, topic: str, timeout_s: float = 30.0) -> list[Any]:
    """Every message of `topic` from the beginning up to its current end (no group, nothing committed)."""
    consumer = KafkaConsumer(**kafka.kafka_python_config(), enable_auto_commit=False, group_id=None)
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not tps:
            return []
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        messages: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < end[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic} did not reach its end within {timeout_s} s")
            for batch in consumer.poll(timeout_ms=500).values():
                messages.extend(batch)
        return messages
    finally:
        consumer.close()


def group_committed(kafka: KafkaSettings, group_id: str, topic: str) -> tuple[int, int]:
    """(records committed by the group, records in the topic), summed over partitions."""
    consumer = KafkaConsumer(**kafka.kafka_python_config(), enable_auto_commit=False, group_id=group_id)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or set())]
        end = consumer.end_offsets(tps)
        committed = sum(consumer.committed(tp) or 0 for tp in tps)
        return committed, sum(end.values())
    finally:
        consumer.close(autocommit=False)


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str, interval_s: float = 0.2) -> float:
    """Poll `condition` until true; returns the seconds waited, or fails the test naming `what`."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(interval_s)
    return time.monotonic() - started
