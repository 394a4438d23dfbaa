"""Shadow records (mirrored requests no caller saw) never skew the primary's monitors: the drift monitor
keeps them in a model of their own (`shadow:<name>@<version>`), and quality signals count them under the
version label `shadow:<version>`."""

from __future__ import annotations

from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry

from pipelines.drift import DriftMonitor, DriftMonitorSettings, monitored_model
from pipelines.quality import QualityMetrics, QualitySignals
from surge_core.records import InferenceLogRecord
from tests.drift_streams import inference_logs

MODEL = "smollm2-135m-instruct"
REFERENCE, WINDOW = 400, 200


def _shadowed(records: list[InferenceLogRecord], version: str = "2") -> list[InferenceLogRecord]:
    return [r.model_copy(update={"shadow": True, "model_version": version}) for r in records]


def test_a_drifted_shadow_neither_enters_nor_alarms_the_primarys_windows_but_alarms_its_own() -> None:
    monitor = DriftMonitor(DriftMonitorSettings(reference_size=REFERENCE))
    rng = np.random.default_rng(3)
    for record in inference_logs(rng, REFERENCE, model=MODEL):
        monitor.observe(record)
    # The shadow version answers 3x slower than the primary: interleaved with unchanged primary traffic.
    primary = inference_logs(rng, WINDOW, model=MODEL)
    shadow = _shadowed(inference_logs(rng, REFERENCE + WINDOW, model=MODEL, latency_shift=1.1))
    results = []
    for i, record in enumerate(shadow):
        results += monitor.observe(record)
        if i >= REFERENCE:
            results += monitor.observe(primary[i - REFERENCE])
    by_model = {r.model: r for r in results}
    assert set(by_model) == {MODEL, f"shadow:{MODEL}@2"}
    assert by_model[MODEL].window_size == WINDOW  # only the primary's own records
    assert not any(a.feature == "latency_s" for a in by_model[MODEL].alerts)
    # Judged against its own reference, the shadow's steady latency is no drift either: both models are
    # quiet; what matters is that the primary's reference holds primary traffic only.
    assert monitor.models[MODEL].reference.records == REFERENCE
    assert monitor.models[f"shadow:{MODEL}@2"].reference.records == REFERENCE


def test_without_the_separation_the_same_shadow_would_alarm_the_primary() -> None:
    """The counter-check: the slow shadow's records, taken as primary traffic, do raise latency drift."""
    monitor = DriftMonitor(DriftMonitorSettings(reference_size=REFERENCE))
    rng = np.random.default_rng(3)
    for record in inference_logs(rng, REFERENCE, model=MODEL):
        monitor.observe(record)
    slow = inference_logs(rng, WINDOW, model=MODEL, latency_shift=1.1)
    results = [r for record in slow for r in monitor.observe(record)]
    assert any(a.feature == "latency_s" for a in results[0].alerts)


def test_only_shadow_records_are_monitored_apart() -> None:
    (record,) = inference_logs(np.random.default_rng(1), 1, model=MODEL)
    assert monitored_model(record) == MODEL
    assert (
        monitored_model(record.model_copy(update={"shadow": True, "model_version": ""}))
        == f"shadow:{MODEL}@1"
    )


def _quality_record(**fields: Any) -> InferenceLogRecord:
    base: dict[str, Any] = {
        "request_id": "r",
        "route": "/v1/chat/completions",
        "model": "m",
        "latency_s": 0.1,
    }
    return InferenceLogRecord(
        **(base | {"status_code": 200, "completion_tokens": 5, "answer": "Fine."} | fields)
    )


def test_quality_counts_shadow_records_under_their_own_version_label() -> None:
    metrics = QualityMetrics(CollectorRegistry())
    primary = [_quality_record(model_version="2") for _ in range(3)]
    shadows = [
        _quality_record(model_version="2", shadow=True, status_code=502, answer=None) for _ in range(5)
    ]
    QualitySignals(metrics=metrics).observe(primary + shadows)

    def count(name: str, version: str, **labels: str) -> float:
        value = metrics.registry.get_sample_value(name, {"model": "m", "version": version, **labels})
        return 0.0 if value is None else value

    # The primary's version 2 keeps a clean record: 3 answers, no failures from its failing shadow.
    assert count("surge_quality_requests_total", "2") == 3
    assert count("surge_quality_rejections_total", "2", kind="5xx") == 0
    assert count("surge_quality_requests_total", "shadow:2") == 5
    assert count("surge_quality_rejections_total", "shadow:2", kind="5xx") == 5
