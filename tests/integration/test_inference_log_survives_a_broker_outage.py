"""The gateway's inference-log publisher against a real broker that goes away and comes back."""

from __future__ import annotations

import json
import logging
import time

import pytest

from pipelines.broker import LocalBroker
from surge_core.inference_log import (
    InferenceLogSettings,
    KafkaInferenceLogPublisher,
    build_inference_log_publisher,
)
from surge_core.kafka_settings import KafkaSettings
from surge_core.records import InferenceLogRecord
from tests.kafka_helpers import read_topic, wait_for

pytestmark = pytest.mark.integration


def _record(request_id: str) -> InferenceLogRecord:
    return InferenceLogRecord(
        request_id=request_id,
        route="/v1/chat/completions",
        model="smollm2-135m-instruct",
        status_code=200,
        latency_s=0.1,
    )


def test_publish_stays_fast_warns_once_and_delivery_resumes_after_the_broker_returns(
    private_kafka_broker: LocalBroker, topic_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="surge.inference_log")
    kafka = KafkaSettings(bootstrap_servers=private_kafka_broker.bootstrap_servers)
    settings = InferenceLogSettings(
        enabled=True, kafka=kafka, topic_prefix=topic_prefix, max_queue_records=300
    )
    publisher = build_inference_log_publisher(settings, warn_interval_s=120, delivery_timeout_s=3)
    assert isinstance(publisher, KafkaInferenceLogPublisher)
    try:
        before = [f"before-{i}" for i in range(50)]
        for request_id in before:
            publisher.publish(_record(request_id))
        wait_for(lambda: publisher.stats().delivered == 50, 30, "the first 50 records to be delivered")

        private_kafka_broker.stop()  # SIGTERM: the broker saves its data and goes away
        during = [f"during-{i}" for i in range(1000)]
        took = []
        for request_id in during:
            started = time.perf_counter()
            publisher.publish(_record(request_id))
            took.append(time.perf_counter() - started)
        took.sort()
        # A publish that waited on the broker would wait out the producer's delivery timeout (3 s here). The
        # bound on the slowest one is half that: one publish of 1,000 took 0.9 s once in CI on two busy cores
        # (2026-12-02, cause not found: the sender thread holds the lock only to move records), while the
        # typical one must stay well under a millisecond.
        assert took[-1] < 1.5, f"publish blocked for {took[-1]:.3f} s while the broker was down"
        assert took[len(took) // 2] < 0.005 and took[int(0.99 * len(took))] < 0.05, (took[500], took[990])
        wait_for(
            lambda: any("cannot deliver" in r.getMessage() for r in caplog.records), 30, "an outage warning"
        )
        time.sleep(4)  # more failed attempts happen meanwhile; the warning must not repeat
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1, [r.getMessage() for r in warnings]
        stats = publisher.stats()
        assert stats.dropped == 1000 - 300, stats  # the bound holds: oldest dropped and counted
        assert stats.delivered == 50

        private_kafka_broker.start()  # same port, same data dir
        wait_for(lambda: publisher.stats().delivered == 50 + 300, 60, "the queued records to be delivered")
        wait_for(
            lambda: any("delivery resumed" in r.getMessage() for r in caplog.records), 10, "a recovery line"
        )
        assert publisher.stats().queued == 0
        after = [f"after-{i}" for i in range(50)]
        for request_id in after:
            publisher.publish(_record(request_id))
        wait_for(lambda: publisher.stats().delivered >= 50 + 300 + 50, 30, "new records to be delivered")
    finally:
        publisher.close()

    ids = {json.loads(m.value)["request_id"] for m in read_topic(kafka, f"{topic_prefix}inference-log")}
    assert set(before) <= ids
    assert set(after) <= ids
    # The newest 300 outage records were kept and delivered; the 700 oldest were the ones dropped.
    assert {i for i in ids if i.startswith("during-")} == set(during[-300:])


def test_disabled_publisher_is_a_no_op() -> None:
    publisher = build_inference_log_publisher(InferenceLogSettings(enabled=False))
    publisher.publish(_record("x"))
    publisher.close()
    assert type(publisher).__name__ == "NoopInferenceLogPublisher"
