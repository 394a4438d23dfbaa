"""Topic creation at start-up: idempotent, from the one definition in `surge_core.topics`.

Every consumer and producer command calls `ensure_topics` before it starts; creating a topic that exists
is not an error, so any number of processes may race to do it. Each consumed topic gets its dead-letter
topic too. Replication is the broker's default (`replication_factor=-1`) unless given: a 3-broker Kafka
gets its configured default, a one-node laptop broker gets 1.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from surge_core.kafka_settings import KafkaSettings
from surge_core.topics import TopicSpec, topic_specs

logger = logging.getLogger(__name__)

# Dead-letter topics see little traffic; one partition keeps their order easy to read.
DLQ_PARTITIONS = 1
# A dead letter is the original record plus ~1 KB of headers, and records up to the consumers'
# max_record_bytes (2 MB by default) are dead-lettered whole: give the DLQ room well above that. Anything
# larger is still refused, and the consumer sends it truncated (pipelines.dlq) rather than stalling.
DLQ_MAX_MESSAGE_BYTES = 8 * 1024 * 1024


def dlq_configs(replication_factor: int) -> dict[str, str]:
    """Topic configs of a dead-letter topic.

    `min.insync.replicas` = replication_factor - 1 (at least 2) when the factor is known and >= 3, so an
    acknowledged dead letter survives a broker loss while one broker may be down; e.g. factor 3 -> 2.
    With the broker's default factor (-1) or fewer than 3 replicas the broker's default applies: asking
    for 2 in-sync replicas of a topic that may have 1 would refuse every write.
    """
    configs = {"max.message.bytes": str(DLQ_MAX_MESSAGE_BYTES)}
    if replication_factor >= 3:
        configs["min.insync.replicas"] = str(max(2, replication_factor - 1))
    return configs


class BrokerUnreachable(RuntimeError):
    """No broker answered at the configured bootstrap servers."""


def admin_client(kafka: KafkaSettings, timeout_s: float = 10.0) -> KafkaAdminClient:
    try:
        return KafkaAdminClient(
            **kafka.kafka_python_config(),
            bootstrap_timeout_ms=int(timeout_s * 1000),
            request_timeout_ms=int(max(timeout_s, 5) * 1000),
        )
    except (KafkaError, OSError) as error:
        raise BrokerUnreachable(f"no Kafka broker reachable at {kafka.bootstrap_servers}") from error


def wanted_topics(specs: Iterable[TopicSpec], replication_factor: int = -1) -> list[NewTopic]:
    """NewTopic requests for the specs and, for each consumed one, its dead-letter topic."""
    wanted: list[NewTopic] = []
    for spec in specs:
        wanted.append(
            NewTopic(spec.name, spec.partitions, replication_factor, topic_configs=dict(spec.configs))
        )
        if spec.consumed:
            wanted.append(
                NewTopic(
                    spec.dlq,
                    DLQ_PARTITIONS,
                    replication_factor,
                    topic_configs=dlq_configs(replication_factor),
                )
            )
    return wanted


def ensure_topics(
    kafka: KafkaSettings,
    specs: Iterable[TopicSpec] | None = None,
    *,
    prefix: str = "",
    replication_factor: int = -1,
    timeout_s: float = 10.0,
) -> list[str]:
    """Create the topics (all of `surge_core.topics` by default) that do not exist; returns those created."""
    chosen = list(specs) if specs is not None else list(topic_specs(prefix).values())
    wanted = wanted_topics(chosen, replication_factor)
    client = admin_client(kafka, timeout_s)
    try:
        existing = set(client.list_topics())
        missing = [t for t in wanted if t.name not in existing]
        created: list[str] = []
        for topic in missing:
            # One request per topic: another process creating the same topic at the same time must not
            # fail the others in the batch.
            try:
                client.create_topics([topic], timeout_ms=int(timeout_s * 1000))
                created.append(topic.name)
            except TopicAlreadyExistsError:
                pass
        if created:
            logger.info("created topics: %s", ", ".join(created))
        return created
    finally:
        client.close()


def describe_topics(kafka: KafkaSettings, timeout_s: float = 10.0) -> dict[str, dict[str, Any]]:
    """Topic name -> {partitions: int}, for `surge topics list` (internal `__*` topics left out)."""
    client = admin_client(kafka, timeout_s)
    try:
        names = sorted(n for n in client.list_topics() if not n.startswith("__"))
        described = client.describe_topics(names) if names else []
        return {
            d.get("name", d.get("topic")): {"partitions": len(d.get("partitions") or [])} for d in described
        }
    finally:
        client.close()


def group_lag(kafka: KafkaSettings, group_id: str, topic: str, timeout_s: float = 5.0) -> int:
    """Records of `topic` that consumer group `group_id` has not committed yet, over all partitions.

    lag = sum over partitions of (end offset - committed offset), where a partition the group has never
    committed counts from its beginning offset (a new group reads from the earliest record). E.g. ends
    {0: 120, 1: 40}, committed {0: 100}, beginnings {0: 0, 1: 10} -> (120 - 100) + (40 - 10) = 50.
    """
    from kafka import KafkaConsumer, TopicPartition

    # A consumer that names the group but never subscribes: it reads the group's commits and joins nothing.
    consumer = KafkaConsumer(
        **kafka.kafka_python_config(),
        group_id=group_id,
        enable_auto_commit=False,
        request_timeout_ms=int(max(timeout_s, 5) * 1000),
    )
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not partitions:
            return 0
        ends = consumer.end_offsets(partitions)
        starts = consumer.beginning_offsets(partitions)
        lag = 0
        for tp in partitions:
            committed = consumer.committed(tp)
            lag += max(0, ends[tp] - (committed if committed is not None else starts[tp]))
        return lag
    finally:
        consumer.close(autocommit=False)
