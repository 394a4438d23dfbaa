"""The event-driven warmer reads a real consumer group's lag from the real broker: documents produced and
not yet consumed hold the Embedder's floor at one replica; once the group has committed them, the floor
is gone. (That Serve runs the policy's floor is shown by the scheduled-warmer test: the same
`SurgeAutoscalingPolicy` path, a different warmer.)"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from kafka import KafkaConsumer, KafkaProducer

from deployments.autoscaling.serve_policy import SurgeAutoscalingPolicy
from deployments.settings import AutoscalingSettings
from surge_core.kafka_admin import group_lag
from surge_core.kafka_settings import KafkaSettings
from surge_core.topics import DOCUMENTS, TopicSpec

pytestmark = pytest.mark.integration

GROUP = "surge-ingestion"


def test_a_backlog_holds_the_floor_until_the_group_commits_it(
    kafka_settings: KafkaSettings,
    kafka_topic: Callable[[TopicSpec], TopicSpec],
    kafka_producer: KafkaProducer,
) -> None:
    topic = kafka_topic(DOCUMENTS).name
    autoscaling = AutoscalingSettings.model_validate(
        {
            "min_replicas": 0,
            "policy": {
                "backlog": {
                    "kafka": kafka_settings.model_dump(mode="json"),
                    "topic": topic,
                    "group_id": GROUP,
                    "poll_s": 0.5,
                }
            },
        }
    )
    policy = SurgeAutoscalingPolicy(**autoscaling.to_serve(64)["policy"]["policy_kwargs"])
    (backlog,) = policy.warmers
    assert backlog.floor(0.0) == 0, "an empty topic must not wake the stage"

    for i in range(5):
        record = {"op": "upsert", "doc_id": f"d{i}", "text": f"document {i}"}
        kafka_producer.send(topic, key=f"d{i}".encode(), value=json.dumps(record).encode())
    kafka_producer.flush()
    assert group_lag(kafka_settings, GROUP, topic) == 5
    backlog._read_at = None  # the next decision reads the broker again (no waiting out poll_s here)
    assert backlog.floor(0.0) == 1

    consumer = KafkaConsumer(
        topic,
        **kafka_settings.kafka_python_config(),
        group_id=GROUP,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    try:
        seen = 0
        while seen < 5:
            seen += sum(len(batch) for batch in consumer.poll(timeout_ms=1000).values())
        consumer.commit()
    finally:
        consumer.close(autocommit=False)
    assert group_lag(kafka_settings, GROUP, topic) == 0
    backlog._read_at = None
    assert backlog.floor(0.0) == 0
