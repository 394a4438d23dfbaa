"""Drift tests (registry, scipy-backed statistics, worked example), the policy and the monitor settings."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import generate_latest
from pydantic import ValidationError
from scipy import stats

from pipelines.drift import DriftHandler, DriftMonitor, DriftMonitorSettings
from pipelines.drift_tests import DRIFT_TESTS, DriftPolicy, make_test
from tests.drift_streams import inference_logs


def test_registry_holds_the_four_tests_by_kind() -> None:
    assert {n: c.kind for n, c in DRIFT_TESTS.items()} == {
        "psi": "numeric",
        "ks": "numeric",
        "embedding_cosine": "embedding",
        "mmd_rbf": "embedding",
    }


def test_psi_matches_the_worked_example_in_the_policy_docstring() -> None:
    reference = np.arange(1000, dtype=float)  # deciles: bins of 100 values each
    top = np.full(300, 950.0)  # 30% in the top decile
    rest = np.concatenate([np.full(78, 50.0 + 100 * i) for i in range(9)])[:700]
    window = np.concatenate([top, rest])
    score = make_test("psi", DriftPolicy()).score(reference, window)
    assert score == pytest.approx(0.270, abs=0.005)


def test_psi_handles_integer_features_with_tied_quantiles() -> None:
    rng = np.random.default_rng(0)
    reference = rng.poisson(2, 1000).astype(float)
    psi = make_test("psi", DriftPolicy())
    assert psi.score(reference, rng.poisson(2, 500).astype(float)) < 0.05
    assert psi.score(reference, rng.poisson(4, 500).astype(float)) > 0.25


def test_ks_score_is_minus_log10_of_scipys_p_value() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(0, 1, 300), rng.normal(0.3, 1, 200)
    expected = -math.log10(stats.ks_2samp(a, b).pvalue)
    assert make_test("ks", DriftPolicy()).score(a, b) == pytest.approx(expected)
    assert DriftPolicy(ks_alpha=1e-3).threshold("ks") == pytest.approx(3.0)


def test_embedding_tests_score_near_zero_for_same_distribution_and_high_for_a_shift() -> None:
    rng = np.random.default_rng(2)
    x, y = rng.normal(1, 0.1, (300, 8)), rng.normal(1, 0.1, (200, 8))
    shifted = y + np.eye(8)[0] * 2.0
    for name in ("embedding_cosine", "mmd_rbf"):
        test = make_test(name, DriftPolicy())
        assert abs(test.score(x, y)) < test.threshold / 5
        assert test.score(x, shifted) > test.threshold


def test_unknown_test_names_are_rejected_naming_the_field() -> None:
    with pytest.raises(ValidationError, match="numeric_tests"):
        DriftMonitorSettings(numeric_tests=("psi", "chi2"))
    with pytest.raises(ValidationError, match="embedding_test"):
        DriftMonitorSettings(embedding_test="ks")
    with pytest.raises(ValidationError, match="features"):
        DriftMonitorSettings(features=("latency_s", "colour"))
    with pytest.raises(KeyError, match="known"):
        make_test("chi2", DriftPolicy())


def test_policy_rejects_more_bins_than_samples() -> None:
    with pytest.raises(ValidationError, match="psi_bins"):
        DriftPolicy(psi_bins=50, min_samples=20)


def test_windows_too_small_for_the_psi_threshold_are_rejected() -> None:
    with pytest.raises(ValidationError, match="PSI on unchanged data averages"):
        DriftMonitorSettings(reference_size=100, window={"size": 50})


def test_time_windows_need_a_length() -> None:
    with pytest.raises(ValidationError, match="window.seconds"):
        DriftMonitorSettings(window={"by": "time"})


def test_time_windows_close_on_record_time_and_skip_thin_windows() -> None:
    settings = DriftMonitorSettings(
        reference_size=1000, window={"by": "time", "seconds": 100, "min_size": 80}, embedding_test=None
    )
    monitor = DriftMonitor(settings)
    rng = np.random.default_rng(4)
    for rec in inference_logs(rng, 1000):
        monitor.observe(rec)
    # 1,000 records one second apart after the reference: windows of 100 s = 100 records each.
    start = inference_logs(rng, 1)[0].timestamp.replace(hour=1)
    results = [r for rec in inference_logs(rng, 1000, start=start) for r in monitor.observe(rec)]
    assert [r.window_size for r in results] == [100] * 9  # the tenth is still open
    # A sparse stretch (one record per 10 s): the first record closes the open 100-record window (it is
    # evaluated); the later windows hold 10 records each, below min_size, and close unevaluated.
    sparse = inference_logs(rng, 60, start=start.replace(hour=3), spacing_s=10)
    closed = [r for rec in sparse for r in monitor.observe(rec)]
    assert [(r.window_index, r.window_size) for r in closed] == [(9, 100)]
    assert monitor.models["smollm2-135m-instruct"].window_index == 15


def test_scores_and_counters_are_exported_to_prometheus() -> None:
    monitor = DriftMonitor(DriftMonitorSettings(reference_size=1000))
    rng = np.random.default_rng(5)
    for rec in inference_logs(rng, 1000) + inference_logs(rng, 200, latency_shift=0.5):
        monitor.observe(rec)
    text = generate_latest(monitor.metrics.registry).decode()
    assert 'surge_drift_score{feature="latency_s",model="smollm2-135m-instruct",test="psi"}' in text
    assert 'surge_drift_windows_evaluated_total{model="smollm2-135m-instruct"} 1.0' in text
    assert 'surge_drift_alerts_total{feature="latency_s",model="smollm2-135m-instruct",test="ks"} 1.0' in text


def test_state_saved_before_commit_restores_reference_and_open_window(tmp_path: Path) -> None:
    settings = DriftMonitorSettings(reference_size=1000, state_path=tmp_path / "state.json")
    rng = np.random.default_rng(6)
    records = inference_logs(rng, 1000) + inference_logs(rng, 400, latency_shift=0.5)
    published: list = []
    first = DriftHandler(DriftMonitor(settings), published.extend, settings.state_path)
    first.process(records[:1100])  # reference + half a window, then "crash"
    restarted = DriftMonitor(settings)
    restarted.load(tmp_path / "state.json")
    second = DriftHandler(restarted, published.extend, settings.state_path)
    second.process(records[1100:])
    uninterrupted = DriftHandler(DriftMonitor(settings), lambda alerts: None)
    uninterrupted.process(records)
    assert [(r.window_index, r.scores) for r in second.results] == [
        (r.window_index, r.scores) for r in uninterrupted.results
    ]
    assert published and {a.feature for a in published} >= {"latency_s"}


def test_a_batch_whose_alerts_cannot_be_published_is_rolled_back_for_the_retry() -> None:
    from kafka.errors import KafkaTimeoutError

    from pipelines.consumer import SinkUnavailable

    settings = DriftMonitorSettings(reference_size=1000)
    rng = np.random.default_rng(8)
    records = inference_logs(rng, 1000) + inference_logs(rng, 200, latency_shift=0.5)
    calls: list[int] = []

    def flaky_publish(alerts: list) -> None:
        calls.append(len(alerts))
        if len(calls) == 1:
            raise KafkaTimeoutError("broker away")

    handler = DriftHandler(DriftMonitor(settings), flaky_publish)
    handler.process(records[:1000])
    with pytest.raises(SinkUnavailable):
        handler.process(records[1000:])
    handler.process(records[1000:])  # the loop's retry of the same batch
    assert [r.window_index for r in handler.results] == [0]
    assert calls[0] == calls[1] > 0
    uninterrupted = DriftHandler(DriftMonitor(settings), lambda alerts: None)
    uninterrupted.process(records)
    assert handler.results[0].scores == uninterrupted.results[0].scores

    def state(monitor: DriftMonitor) -> dict:
        return {
            m: (s.reference.to_json(), s.window.to_json(), s.window_index) for m, s in monitor.models.items()
        }

    assert state(handler.monitor) == state(uninterrupted.monitor)


def test_rollback_undoes_a_half_processed_batch_exactly() -> None:
    monitor = DriftMonitor(DriftMonitorSettings(reference_size=1000))
    rng = np.random.default_rng(9)
    records = inference_logs(rng, 1100) + inference_logs(rng, 250, model="other")
    for rec in records[:1100]:
        monitor.observe(rec)
    before = {
        m: (s.reference.to_json(), s.window.to_json(), s.window_index) for m, s in monitor.models.items()
    }
    snap = monitor.snapshot()
    for rec in inference_logs(rng, 150) + records[1100:]:  # closes window 0, opens 1, adds a model
        monitor.observe(rec)
    monitor.restore(snap)
    after = {
        m: (s.reference.to_json(), s.window.to_json(), s.window_index) for m, s in monitor.models.items()
    }
    assert after == before
