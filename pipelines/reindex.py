"""Rebuilding the index from `documents`: the recovery path when an index is lost.

`documents` is compacted by doc_id (`surge_core.topics`), so it always holds the latest record of every
document (an upsert, a delete record, or for a while a tombstone). Replaying it from the beginning through
the ingestion handler and sink rebuilds the index exactly:

- `surge reindex ...` (the `surge ingest` flags) replays every partition from the beginning to its end
  offset at start, into the configured sink, without touching the consumer group's offsets;
- `surge ingest` does it by itself before consuming when the index is empty but the group has committed
  offsets (an index deleted or a fresh volume under a group that has moved on): it replays up to the
  committed offsets, and the loop carries on from there.

Replay writes carry each record's (partition, offset) as the document's version, so a replay running next
to a live consumer never overwrites a newer version. Poison records are skipped and counted, not
dead-lettered again (they were when first consumed).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from pipelines.consumer_contract import BatchHandler, SinkUnavailable
from pipelines.dlq import PoisonRecord
from surge_core.kafka_settings import KafkaSettings
from surge_core.retry import RetryPolicy

logger = logging.getLogger(__name__)


@dataclass
class ReplayStats:
    """What a replay did."""

    records: int = 0
    written: int = 0
    skipped_poison: int = 0
    skipped_failed: int = 0
    seconds: float = 0.0


def committed_offsets(kafka: KafkaSettings, group_id: str, topic: str) -> dict[int, int]:
    """The group's committed offset per partition (partitions without one left out)."""
    consumer = KafkaConsumer(**kafka.kafka_python_config(), enable_auto_commit=False, group_id=group_id)
    try:
        partitions = sorted(consumer.partitions_for_topic(topic) or set())
        found = {p: consumer.committed(TopicPartition(topic, p)) for p in partitions}
        return {p: int(o) for p, o in found.items() if o}
    finally:
        consumer.close(autocommit=False)


def replay(
    kafka: KafkaSettings,
    topic: str,
    handler: BatchHandler[Any],
    ends: Mapping[int, int] | None = None,
    *,
    batch_size: int = 64,
    retry: RetryPolicy | None = None,
    max_record_bytes: int = 2_000_000,
    starts: Mapping[int, int] | None = None,
    after_batch: Callable[[dict[int, int]], None] | None = None,
) -> ReplayStats:
    """Feed `topic` from the beginning (or `starts`, partition -> offset, to resume) up to `ends` (partition
    -> end offset; default: the end offsets now) through the handler, batch by batch, in offset order per
    partition. `after_batch({partition: next offset})` is called once a batch is written (a checkpoint)."""
    started = time.monotonic()
    stats = ReplayStats()
    policy = retry or RetryPolicy()
    consumer = KafkaConsumer(
        **kafka.kafka_python_config(),
        enable_auto_commit=False,
        group_id=None,
        max_partition_fetch_bytes=max(1_048_576, max_record_bytes + 1024),
    )
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or set())]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        for tp in tps:
            if starts and starts.get(tp.partition):
                consumer.seek(tp, starts[tp.partition])
        stop = (
            dict(ends)
            if ends is not None
            else {tp.partition: o for tp, o in consumer.end_offsets(tps).items()}
        )
        pending = {tp for tp in tps if consumer.position(tp) < stop.get(tp.partition, 0)}
        while pending:
            for tp, messages in consumer.poll(timeout_ms=500, max_records=batch_size).items():
                wanted = [m for m in messages if m.offset < stop.get(tp.partition, 0)]
                _write(handler, wanted, stats, policy)
                if after_batch is not None and wanted:
                    after_batch({tp.partition: wanted[-1].offset + 1})
                if consumer.position(tp) >= stop.get(tp.partition, 0) or len(wanted) < len(messages):
                    consumer.pause(tp)
                    pending.discard(tp)
    finally:
        consumer.close()
    stats.seconds = time.monotonic() - started
    logger.info(
        "replayed %s: %d records, %d written, %d poison and %d failed skipped, in %.1f s",
        topic,
        stats.records,
        stats.written,
        stats.skipped_poison,
        stats.skipped_failed,
        stats.seconds,
    )
    return stats


def _write(handler: BatchHandler[Any], messages: list[Any], stats: ReplayStats, policy: RetryPolicy) -> None:
    records, positions = [], []
    for message in messages:
        stats.records += 1
        try:
            records.append(handler.decode(message))
            positions.append((message.partition, message.offset))
        except PoisonRecord:
            stats.skipped_poison += 1
        except Exception:  # the live consumer dead-letters these as undecodable
            stats.skipped_poison += 1
    if not records:
        return
    attempt = 0
    while True:
        try:
            handler.process(records, positions)
            stats.written += len(records)
            return
        except SinkUnavailable as error:
            attempt += 1
            logger.warning("sink unavailable during the replay (%s); retrying", error)
            time.sleep(policy.delay_s(min(attempt, 64)))
        except Exception:
            break
    for record, position in zip(records, positions, strict=True):  # one by one: skip only what fails
        try:
            handler.process([record], [position])
            stats.written += 1
        except Exception as error:
            logger.warning("replay skipped %s@%s: %s", type(record).__name__, position, error)
            stats.skipped_failed += 1
