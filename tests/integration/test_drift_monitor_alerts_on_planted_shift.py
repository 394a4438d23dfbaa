"""The drift monitor on a real broker: quiet on unchanged traffic, one alert window on a planted shift,
malformed records dead-lettered, state carried over a restart, Prometheus series served over HTTP."""

from __future__ import annotations

import threading
import time
import urllib.request
import uuid
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from kafka import KafkaConsumer, KafkaProducer

from pipelines.broker import free_port
from pipelines.dlq import parse_dlq_headers
from pipelines.drift import DriftHandler, DriftMonitorSettings, build_monitor_loop
from pipelines.producer import open_producer, produce_records
from surge_core.kafka_settings import KafkaSettings
from surge_core.records import DriftAlertRecord
from surge_core.topics import topic_specs
from tests.drift_streams import inference_logs

pytestmark = pytest.mark.integration

MODEL = "smollm2-135m-instruct"
WINDOW = 200


def run_until(
    settings: DriftMonitorSettings, windows: int, timeout_s: float = 90
) -> tuple[DriftHandler, float]:
    """Run a monitor process-alike until its handler has evaluated `windows` windows; stop it gracefully."""
    loop, publisher = build_monitor_loop(settings)
    handler = loop.handler
    assert isinstance(handler, DriftHandler)
    if settings.metrics_port:
        loop.metrics.serve(settings.metrics_port, settings.metrics_host)
    thread = threading.Thread(target=loop.run, daemon=True)
    started = time.perf_counter()
    thread.start()
    deadline = time.monotonic() + timeout_s
    while len(handler.results) < windows and time.monotonic() < deadline and thread.is_alive():
        time.sleep(0.05)
    elapsed = time.perf_counter() - started
    if settings.metrics_port:
        scrape = urllib.request.urlopen(f"http://127.0.0.1:{settings.metrics_port}/metrics", timeout=5).read()
        handler.scraped = scrape.decode()  # type: ignore[attr-defined]
    loop.stop()
    thread.join(30)
    publisher.close()
    assert not thread.is_alive()
    assert len(handler.results) == windows, f"evaluated {len(handler.results)} of {windows} windows"
    return handler, elapsed


def read_all(kafka: KafkaSettings, topic: str) -> list:
    consumer = KafkaConsumer(
        **kafka.kafka_python_config(), auto_offset_reset="earliest", consumer_timeout_ms=2000
    )
    consumer.subscribe([topic])
    messages = list(consumer)
    consumer.close()
    return messages


def test_drift_monitor_is_quiet_then_alerts_on_the_shifted_window_across_a_restart(
    kafka_settings: KafkaSettings, topic_prefix: str, tmp_path: Path
) -> None:
    specs = topic_specs(topic_prefix)
    settings = DriftMonitorSettings(
        kafka=kafka_settings,
        topic_prefix=topic_prefix,
        group_id=f"drift-{uuid.uuid4().hex[:8]}",
        batch_size=200,
        session_timeout_s=6,
        reference_size=1000,
        window={"size": WINDOW},
        state_path=tmp_path / "drift-state.json",
        metrics_port=free_port(),
    )
    rng = np.random.default_rng(11)
    producer = open_producer(kafka_settings)
    # Phase 1: reference + 3 unchanged windows.
    from surge_core.kafka_admin import ensure_topics

    ensure_topics(kafka_settings, [specs["inference-log"], specs["drift-alerts"]])
    produce_records(producer, specs["inference-log"], inference_logs(rng, 1000 + 3 * WINDOW))
    first, first_s = run_until(settings, windows=3)
    assert [r.window_index for r in first.results] == [0, 1, 2]
    assert not any(r.alerts for r in first.results)
    assert f'surge_drift_windows_evaluated_total{{model="{MODEL}"}} 3.0' in first.scraped  # type: ignore[attr-defined]
    assert 'surge_drift_score{feature="latency_s"' in first.scraped  # type: ignore[attr-defined]

    # Phase 2 (a restarted monitor, same group and state file): 2 unchanged windows, 1 shifted, 3 poison.
    later = inference_logs(rng, 2 * WINDOW) + inference_logs(rng, WINDOW, latency_shift=0.5)
    produce_records(producer, specs["inference-log"], later)
    producer.close()
    raw = KafkaProducer(**kafka_settings.kafka_python_config(), acks="all")
    for value in (b"not json", b'{"model": "x"}', b'{"request_id": "r", "latency_s": -1}'):
        raw.send(specs["inference-log"].name, key=MODEL.encode(), value=value)
    raw.flush()
    raw.close()
    restarted = DriftMonitorSettings.model_validate(settings.model_dump() | {"metrics_port": free_port()})
    second, second_s = run_until(restarted, windows=3)
    # The reference and window count came back from the state file: indexes continue at 3.
    assert [r.window_index for r in second.results] == [3, 4, 5]
    assert [bool(r.alerts) for r in second.results] == [False, False, True]

    alerts = [
        DriftAlertRecord.model_validate_json(m.value)
        for m in read_all(kafka_settings, specs["drift-alerts"].name)
    ]
    assert {a.window_index for a in alerts} == {5}
    assert {(a.feature, a.test) for a in alerts} >= {("latency_s", "psi"), ("latency_s", "ks")}
    assert all(a.model == MODEL and a.reference_size == 1000 and a.window_size == WINDOW for a in alerts)

    dead = read_all(kafka_settings, specs["inference-log"].dlq)
    assert Counter(parse_dlq_headers(m.headers)["reason"] for m in dead) == {
        "not_json": 1,
        "schema_invalid": 2,
    }

    windows = len(first.results) + len(second.results)
    records = 1000 + 6 * WINDOW
    eval_ms = 1000 * float(np.mean([r.seconds for r in first.results + second.results]))
    print(
        f"\n[drift monitor over Kafka] {records} records, {windows} windows in {first_s + second_s:.1f} s "
        f"(includes group joins); {eval_ms:.1f} ms per window evaluation"
    )
