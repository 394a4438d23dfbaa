"""Property, against the real broker: whatever bytes land on a topic, its consumer loop stays alive,
commits past the record, and a record it cannot use is in `<topic>.dlq` with a reason.

Hypothesis draws bad values of every kind (tests/poison_values.py); each is produced to partition 0 of a
fresh topic while the real `AtLeastOnceConsumer` of the ingestion consumer or of the drift monitor runs in
a thread. The sinks are our own recording stand-ins (the unit here is the loop's decode-and-handle path).
The feature job's path is covered in tests/integration/test_feature_job_dead_letters_fuzzed_events.py.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from kafka import KafkaProducer
from kafka.consumer.fetcher import ConsumerRecord

from pipelines.consumer import AtLeastOnceConsumer
from pipelines.dlq import PoisonKind, PoisonRecord, parse_dlq_headers
from pipelines.drift import DriftHandler, DriftMonitor, DriftMonitorSettings
from pipelines.ingestion import DocumentHandler, IngestionSettings
from surge_core.kafka_settings import KafkaSettings
from surge_core.retry import RetryPolicy
from surge_core.topics import DOCUMENTS, INFERENCE_LOG, TopicSpec
from tests.kafka_helpers import LoopInThread
from tests.poison_values import DOCUMENT, INFERENCE, KINDS, bad_values

T = TypeVar("T", IngestionSettings, DriftMonitorSettings)

pytestmark = pytest.mark.integration

EXAMPLES = 300
FAST_RETRY = RetryPolicy(max_attempts=2, base_delay_s=0.01, max_delay_s=0.02)


class RecordingSink:
    def __init__(self) -> None:
        self.ops: list[Any] = []

    def write(self, ops: Sequence[Any], versions: Any = None) -> None:
        self.ops.extend(ops)

    def close(self) -> None:
        pass


def _as_message(topic: str, offset: int, key: bytes | None, value: bytes | None) -> ConsumerRecord:
    fields: dict[str, Any] = {name: None for name in ConsumerRecord._fields}
    fields.update(topic=topic, partition=0, offset=offset, key=key, value=value, headers=[])
    return ConsumerRecord(**fields)


def _fuzz_loop(
    kafka: KafkaSettings,
    topic: str,
    loop: AtLeastOnceConsumer[Any],
    template: dict[str, Any],
    key: bytes | None,
    name: str,
) -> Counter[str]:
    producer = KafkaProducer(**kafka.kafka_python_config(), acks="all", max_request_size=1_048_000)
    tried: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    try:
        with LoopInThread(loop, kafka, topic) as running:

            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
            )
            @given(bad_values(template))
            def one_record(drawn: tuple[str, bytes | None]) -> None:
                kind, value = drawn
                tried[kind] += 1
                sent = producer.send(topic, key=key, value=value, partition=0).get(timeout=30)
                running.wait_committed_past(0, sent.offset)
                assert running.alive(), f"the loop died on {kind}: {running.error!r}"
                try:
                    loop.handler.decode(_as_message(topic, sent.offset, key, value))
                    usable = True
                except PoisonRecord:
                    usable = False
                letter = running.letter(0, sent.offset, timeout_s=10 if not usable else 0.2)
                if usable:
                    assert letter is None, f"a usable {kind} record was dead-lettered"
                    outcomes["processed"] += 1
                    return
                assert letter is not None, f"{kind} record at offset {sent.offset} is in no DLQ"
                headers = parse_dlq_headers(letter.headers)
                assert headers["reason"] in {k.value for k in PoisonKind}
                assert headers["error"], "the dead letter must say why"
                assert letter.value == value or (value == b"" and letter.value is None)
                outcomes[headers["reason"]] += 1

            one_record()
            assert running.alive()
    finally:
        producer.close()
    print(f"\nbroker fuzz {name}: {sum(tried.values())} records, kinds {json.dumps(dict(tried))}, "
          f"outcomes {json.dumps(dict(outcomes))}, loop alive: yes")  # fmt: skip
    assert set(tried) >= set(KINDS) - {"empty"}, f"kinds not tried: {set(KINDS) - set(tried)}"
    return tried


def _fast_loop_settings(model: type[T], kafka_settings: KafkaSettings, topic_prefix: str) -> T:
    """A consumer loop's settings for fuzzing: its own group, short polls, small batches, fast retries."""
    return model(
        kafka=kafka_settings,
        topic_prefix=topic_prefix,
        group_id=f"fuzz-{uuid.uuid4().hex[:8]}",
        poll_timeout_s=0.05,
        batch_size=8,
        retry=FAST_RETRY,
    )


@pytest.mark.timeout(600)
def test_ingestion_loop_survives_every_fuzzed_record_and_commits_past_it(
    kafka_settings: KafkaSettings, topic_prefix: str, kafka_topic: Callable[[TopicSpec], TopicSpec]
) -> None:
    spec = kafka_topic(DOCUMENTS)
    settings_ = _fast_loop_settings(IngestionSettings, kafka_settings, topic_prefix)
    loop = AtLeastOnceConsumer(settings_, spec.name, DocumentHandler(RecordingSink()))
    _fuzz_loop(kafka_settings, spec.name, loop, DOCUMENT, b"doc-1", "ingestion")


@pytest.mark.timeout(600)
def test_drift_monitor_loop_survives_every_fuzzed_record_and_commits_past_it(
    kafka_settings: KafkaSettings, topic_prefix: str, kafka_topic: Callable[[TopicSpec], TopicSpec]
) -> None:
    spec = kafka_topic(INFERENCE_LOG)
    settings_ = _fast_loop_settings(DriftMonitorSettings, kafka_settings, topic_prefix)
    publish: Callable[[Any], None] = lambda alerts: None  # noqa: E731
    loop = AtLeastOnceConsumer(settings_, spec.name, DriftHandler(DriftMonitor(settings_), publish))
    _fuzz_loop(kafka_settings, spec.name, loop, INFERENCE, b"m", "drift")
