"""The feature job's Kafka side: plan an offset range, read it (every record becomes an event or a dead
letter), publish the dead letters, commit progress. `pipelines.feature_job` runs the rest."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import TypeAdapter

from pipelines.decoding import decode_object, undecodable, validate
from pipelines.dlq import DeadLetter, PoisonRecord, send_dead_letters
from surge_core.feature_store import OffsetRange, PartitionRange
from surge_core.kafka_settings import KafkaSettings
from surge_core.records import EventRecord

DLQ_GROUP = "surge-feature-job"
EVENT_RECORD = TypeAdapter(EventRecord)


# ------------------------------------------------------------------------------------------- planning


def _consumer(kafka: KafkaSettings) -> Any:
    from kafka import KafkaConsumer

    # No group: offsets are ours (the ledger), not the broker's.
    return KafkaConsumer(
        **kafka.kafka_python_config(), group_id=None, enable_auto_commit=False, auto_offset_reset="earliest"
    )


def topic_offsets(kafka: KafkaSettings, topic: str) -> tuple[dict[int, int], dict[int, int]]:
    """(beginning, end) offsets per partition of `topic`."""
    from kafka import TopicPartition

    consumer = _consumer(kafka)
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise ValueError(f"topic {topic!r} does not exist or has no partitions")
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        begin = {tp.partition: int(o) for tp, o in consumer.beginning_offsets(tps).items()}
        end = {tp.partition: int(o) for tp, o in consumer.end_offsets(tps).items()}
        return begin, end
    finally:
        consumer.close()


def plan_range(
    topic: str,
    beginning: dict[int, int],
    end: dict[int, int],
    committed_ends: dict[int, int],
    max_per_partition: int | None = None,
) -> OffsetRange:
    """The next range to consume: from the ledger's end (or the log start) to the end offset, capped.

    Example: end {0: 120, 1: 80}, ledger ends {0: 100}, cap None -> `topic:0=100-120,1=0-80`.
    """
    parts = []
    for partition, stop in sorted(end.items()):
        start = max(committed_ends.get(partition, 0), beginning.get(partition, 0))
        if max_per_partition is not None:
            stop = min(stop, start + max_per_partition)
        parts.append(PartitionRange(partition, start, max(start, stop)))
    return OffsetRange.of(topic, parts)


# -------------------------------------------------------------------------------------------- reading


@dataclass
class ReadResult:
    events: list[dict[str, Any]]
    dead_letters: list[DeadLetter]


def read_range(kafka: KafkaSettings, offset_range: OffsetRange, timeout_s: float = 60.0) -> ReadResult:
    """Every record of the range, parsed; invalid ones become dead letters (not published here)."""
    from kafka import TopicPartition

    consumer = _consumer(kafka)
    events: list[dict[str, Any]] = []
    dead: list[DeadLetter] = []
    try:
        tps = {p.partition: TopicPartition(offset_range.topic, p.partition) for p in offset_range.partitions}
        consumer.assign(list(tps.values()))
        for p in offset_range.partitions:
            consumer.seek(tps[p.partition], p.start)
        ends = {tps[p.partition]: p.end for p in offset_range.partitions}
        pending = {tp for tp, e in ends.items() if consumer.position(tp) < e}
        deadline = time.monotonic() + timeout_s
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {offset_range.range_id} took over {timeout_s} s")
            for tp, messages in consumer.poll(timeout_ms=500, max_records=5000).items():
                for message in messages:
                    if message.offset >= ends[tp]:
                        break
                    _parse(message, events, dead)
                if consumer.position(tp) >= ends[tp]:
                    consumer.pause(tp)
                    pending.discard(tp)
    finally:
        consumer.close()
    return ReadResult(events, dead)


def _parse(message: Any, events: list[dict[str, Any]], dead: list[DeadLetter]) -> None:
    # Every value either becomes an event or a dead letter: a record that raised here would fail the run,
    # and every re-run of the same range, forever.
    failure: PoisonRecord | None = None
    try:
        record = validate(EVENT_RECORD, decode_object(message.value))
    except PoisonRecord as poison:
        failure = poison
    except Exception as exc:
        failure = undecodable(exc)
    if failure is not None:
        dead.append(
            DeadLetter(
                source_topic=message.topic,
                partition=message.partition,
                offset=message.offset,
                key=message.key,
                value=message.value,
                kind=failure.kind,
                error=str(failure),
                attempts=0,
                group_id=DLQ_GROUP,
                original_headers=tuple(message.headers or ()),
            )
        )
        return
    events.append(
        {
            "entity_id": record.entity_id,
            "event_type": record.event_type,
            "ts_us": int(record.timestamp.timestamp() * 1_000_000),
            "value": np.nan if record.value is None else float(record.value),
            "text": record.text or "",
        }
    )


def commit_progress(kafka: KafkaSettings, group_id: str, offset_range: OffsetRange) -> None:
    """Commit the range's end offsets to `group_id` (never moving a committed offset backwards)."""
    from kafka import TopicPartition
    from kafka.structs import OffsetAndMetadata

    if not offset_range.partitions:
        return
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(**kafka.kafka_python_config(), group_id=group_id, enable_auto_commit=False)
    try:
        tps = {p.partition: TopicPartition(offset_range.topic, p.partition) for p in offset_range.partitions}
        consumer.assign(list(tps.values()))
        offsets = {}
        for p in offset_range.partitions:
            current = consumer.committed(tps[p.partition])
            if current is None or current < p.end:
                offsets[tps[p.partition]] = OffsetAndMetadata(p.end, offset_range.range_id, -1)
        if offsets:
            consumer.commit(offsets)
    finally:
        consumer.close(autocommit=False)


def publish_dead_letters(kafka: KafkaSettings, letters: Sequence[DeadLetter], attempts: int = 5) -> None:
    """Send dead letters to `<topic>.dlq` (original key/value, `surge-dlq-*` headers) and wait for acks;
    a letter too large for the DLQ goes truncated (`pipelines.dlq.send_dead_letters`)."""
    if not letters:
        return
    from kafka import KafkaProducer

    producers: list[Any] = []

    def producer() -> Any:
        if not producers:
            producers.append(
                KafkaProducer(**kafka.kafka_python_config(), acks="all", max_request_size=16_777_216)
            )
        return producers[0]

    def reset() -> None:
        while producers:
            producers.pop().close()

    try:
        pending = list(letters)
        for attempt in range(attempts):
            pending = send_dead_letters(producer, pending, reset)
            if not pending:
                return
            time.sleep(min(2.0**attempt, 10.0))
        raise RuntimeError(f"{len(pending)} dead letter(s) could not be published; the run is retried")
    finally:
        reset()
