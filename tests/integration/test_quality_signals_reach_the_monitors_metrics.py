"""Quality signals end to end: inference-log records through the real broker are counted per model and
version by the drift monitor's consumer and served on its /metrics over HTTP."""

from __future__ import annotations

import threading
import time
import urllib.request
import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pipelines.broker import free_port
from pipelines.drift import DriftMonitorSettings, build_monitor_loop
from pipelines.producer import open_producer, produce_records
from surge_core.kafka_admin import ensure_topics
from surge_core.kafka_settings import KafkaSettings
from surge_core.records import InferenceLogRecord
from surge_core.topics import topic_specs

pytestmark = pytest.mark.integration

PASSAGE = "The Eiffel Tower is 330 metres tall and stands in Paris."


def log(i: int, version: str, **fields: object) -> InferenceLogRecord:
    base: dict[str, object] = {
        "request_id": f"q{i}",
        "route": "/v1/chat/completions",
        "model": "smollm2",
        "model_version": version,
        "status_code": 200,
        "latency_s": 0.2,
        "completion_tokens": 8,
        "retrieval_scores": [0.7, 0.4],
        "sources": [PASSAGE],
    }
    return InferenceLogRecord.model_validate(base | fields)


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("surge_quality_")
    }


def test_records_through_the_broker_become_quality_series_per_model_version(
    kafka_settings: KafkaSettings, topic_prefix: str
) -> None:
    specs = topic_specs(topic_prefix)
    ensure_topics(kafka_settings, [specs["inference-log"], specs["drift-alerts"]])
    grounded = "The Eiffel Tower is 330 metres tall."
    made_up = "It was painted gold by Napoleon yesterday."
    records = [
        *(log(i, "1", answer=grounded) for i in range(6)),
        log(6, "1", answer="I'm sorry, but I cannot help with that."),
        log(7, "1", status_code=429, completion_tokens=0, retrieval_scores=[], sources=None),
        *(log(10 + i, "2", answer=made_up, retrieval_scores=[0.1]) for i in range(3)),
        log(13, "2", status_code=502, completion_tokens=0, answer=""),
    ]
    producer = open_producer(kafka_settings)
    produce_records(producer, specs["inference-log"], records)
    producer.close()

    port = free_port()
    settings = DriftMonitorSettings(
        kafka=kafka_settings,
        topic_prefix=topic_prefix,
        group_id=f"quality-{uuid.uuid4().hex[:8]}",
        session_timeout_s=6,
        metrics_port=port,
    )
    loop, publisher = build_monitor_loop(settings)
    loop.metrics.serve(port, settings.metrics_host)
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 45
        series = scrape(port)
        v1 = (("model", "smollm2"), ("version", "1"))
        v2 = (("model", "smollm2"), ("version", "2"))
        while time.monotonic() < deadline and (
            series.get(("surge_quality_requests_total", v1), 0) < 8
            or series.get(("surge_quality_requests_total", v2), 0) < 4
        ):
            time.sleep(0.2)
            series = scrape(port)
    finally:
        loop.stop()
        thread.join(30)
        publisher.close()

    assert series[("surge_quality_requests_total", v1)] == 8
    assert series[("surge_quality_rejections_total", tuple(sorted((*v1, ("kind", "429")))))] == 1
    assert series[("surge_quality_refusals_total", v1)] == 1
    assert series[("surge_quality_retrieval_hits_total", v1)] == 7
    assert series[("surge_quality_groundedness_count", v1)] == 7
    assert series[("surge_quality_groundedness_sum", v1)] >= 6  # the six copied answers score 1.0
    assert series[("surge_quality_requests_total", v2)] == 4
    assert series[("surge_quality_rejections_total", tuple(sorted((*v2, ("kind", "5xx")))))] == 1
    assert series[("surge_quality_retrieval_hits_total", v2)] == 1  # 0.1 is a miss; the 502 kept 0.7
    assert series[("surge_quality_groundedness_sum", v2)] == 0  # nothing of "painted gold" is sourced
    assert series[("surge_quality_answers_total", v2)] == 3
