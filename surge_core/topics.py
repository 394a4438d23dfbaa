"""Topics, their partitions and record types: the one place they are defined.

Keys keep one entity's records ordered (Kafka orders within a partition, and the default partitioner
maps equal keys to the same partition). Every consumed topic has a dead-letter topic `<topic>.dlq`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import TypeAdapter

from surge_core.records import (
    DOCUMENT_RECORD,
    DriftAlertRecord,
    EventRecord,
    InferenceLogRecord,
    ModelEventRecord,
    UsageRecord,
)


@dataclass(frozen=True)
class TopicSpec:
    """A topic: name, partition count, the schema of its values and the field used as the key."""

    name: str
    partitions: int
    schema: TypeAdapter[Any]
    key_field: str
    consumed: bool = True
    # Topic-level configs set at creation (`cleanup.policy`, ...); the broker's defaults otherwise.
    configs: dict[str, str] = field(default_factory=dict)

    @property
    def dlq(self) -> str:
        return dead_letter_topic(self.name)

    def with_prefix(self, prefix: str) -> TopicSpec:
        """The same topic under `<prefix><name>` (isolated names: tests, tenants)."""
        return replace(self, name=f"{prefix}{self.name}") if prefix else self


def dead_letter_topic(topic: str) -> str:
    return f"{topic}.dlq"


# `documents` is compacted by doc_id: it keeps the latest record of every document for good, so the index
# can always be rebuilt by replaying it from the beginning (`surge reindex`, pipelines/README.md).
DOCUMENTS = TopicSpec(
    "documents", 4, DOCUMENT_RECORD, key_field="doc_id", configs={"cleanup.policy": "compact"}
)
EVENTS = TopicSpec("events", 4, TypeAdapter(EventRecord), key_field="entity_id")
INFERENCE_LOG = TopicSpec("inference-log", 2, TypeAdapter(InferenceLogRecord), key_field="model")
DRIFT_ALERTS = TopicSpec("drift-alerts", 1, TypeAdapter(DriftAlertRecord), key_field="model", consumed=False)

# Model-lifecycle changes (deploy, weight change, rollback), keyed by alias; an audit trail, not consumed.
MODEL_EVENTS = TopicSpec("model-events", 1, TypeAdapter(ModelEventRecord), key_field="alias", consumed=False)

# One record per request, keyed by tenant (a tenant's usage stays ordered); read by `surge cost`.
USAGE = TopicSpec("usage", 2, TypeAdapter(UsageRecord), key_field="tenant", consumed=False)

TOPICS: dict[str, TopicSpec] = {
    t.name: t for t in (DOCUMENTS, EVENTS, INFERENCE_LOG, DRIFT_ALERTS, MODEL_EVENTS, USAGE)
}


def topic_specs(prefix: str = "") -> dict[str, TopicSpec]:
    """Every topic, keyed by its unprefixed name, with `prefix` in front of each real name."""
    return {name: spec.with_prefix(prefix) for name, spec in TOPICS.items()}
