"""Property, against the real broker: the feature job reads a range full of fuzzed bad events without
failing; each bad event becomes a dead letter with a reason in `events.dlq`, each good one an event.

This is the job's decode-and-handle path (read the range, parse, publish dead letters); the Ray compute
that follows only ever sees parsed events (tests/integration/test_feature_job_rerun_changes_nothing.py runs
the whole job, with malformed events, on Ray).
"""

from __future__ import annotations

import json
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka import KafkaProducer

from pipelines.decoding import decode_object, validate
from pipelines.dlq import PoisonKind, PoisonRecord, parse_dlq_headers
from pipelines.feature_job import EVENT_RECORD, publish_dead_letters, read_range
from surge_core.feature_store import OffsetRange, PartitionRange
from surge_core.kafka_admin import ensure_topics
from surge_core.kafka_settings import KafkaSettings
from surge_core.topics import EVENTS
from tests.kafka_helpers import read_topic
from tests.poison_values import EVENT, KINDS, bad_values

pytestmark = pytest.mark.integration


def _usable(value: bytes | None) -> bool:
    try:
        validate(EVENT_RECORD, decode_object(value))
        return True
    except PoisonRecord:
        return False


@pytest.mark.timeout(600)
def test_feature_job_reads_ranges_of_fuzzed_events_and_dead_letters_each_bad_one_with_a_reason(
    kafka_settings: KafkaSettings, topic_prefix: str
) -> None:
    spec = EVENTS.with_prefix(topic_prefix)
    ensure_topics(kafka_settings, [spec])
    producer = KafkaProducer(**kafka_settings.kafka_python_config(), acks="all", max_request_size=1_048_000)
    good = json.dumps(EVENT).encode()
    tried: Counter[str] = Counter()
    totals = Counter[str]()

    @settings(
        max_examples=60,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(st.lists(bad_values(EVENT), min_size=1, max_size=12))
    def one_range(drawn: list[tuple[str, bytes | None]]) -> None:
        values = [good] + [value for _, value in drawn] + [good]
        offsets = [
            producer.send(spec.name, key=b"u1", value=value, partition=0).get(timeout=30).offset
            for value in values
        ]
        for kind, _ in drawn:
            tried[kind] += 1
        offset_range = OffsetRange.of(spec.name, [PartitionRange(0, offsets[0], offsets[-1] + 1)])
        read = read_range(kafka_settings, offset_range, timeout_s=60)  # must not raise
        expected_bad = {o for o, v in zip(offsets, values, strict=True) if not _usable(v)}
        assert {letter.offset for letter in read.dead_letters} == expected_bad
        assert len(read.events) == len(values) - len(expected_bad)
        publish_dead_letters(kafka_settings, read.dead_letters)
        totals["records"] += len(values)
        totals["dead_letters"] += len(expected_bad)

    try:
        one_range()
    finally:
        producer.close()
    letters = {
        int(parse_dlq_headers(m.headers)["source-offset"]): m for m in read_topic(kafka_settings, spec.dlq)
    }
    reasons = Counter(parse_dlq_headers(m.headers)["reason"] for m in letters.values())
    assert set(reasons) <= {k.value for k in PoisonKind} - {PoisonKind.UNDECODABLE.value}
    assert all(parse_dlq_headers(m.headers)["error"] for m in letters.values())
    assert len(letters) == totals["dead_letters"]
    print(
        f"\nbroker fuzz feature_job: {sum(tried.values())} bad events in {totals['records']} records, "
        f"kinds {json.dumps(dict(tried))}, dead letters by reason {json.dumps(dict(reasons))}"
    )
    assert set(tried) >= set(KINDS) - {"empty"}
