"""The drift monitor's saved state carries the offsets it has counted: after a restart the records
replayed from the last commit are not counted again, and the reference is the saved one, not relearned
from traffic that has since drifted."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipelines.drift import DriftHandler, DriftMonitor, DriftMonitorSettings
from tests.drift_streams import inference_logs


def _positions(start: int, count: int, partition: int = 0) -> list[tuple[int, int]]:
    return [(partition, offset) for offset in range(start, start + count)]


def test_records_replayed_after_a_restart_are_not_counted_twice(tmp_path: Path) -> None:
    settings = DriftMonitorSettings(reference_size=1000, state_path=tmp_path / "state.json")
    rng = np.random.default_rng(11)
    records = inference_logs(rng, 1000) + inference_logs(rng, 300, latency_shift=0.5)
    first = DriftHandler(DriftMonitor(settings), lambda alerts: None, settings.state_path)
    first.process(records[:1200], _positions(0, 1200))  # saved, then a crash before the commit

    restarted = DriftMonitor(settings)
    restarted.load(settings.state_path)
    second = DriftHandler(restarted, lambda alerts: None, settings.state_path)
    # The group's last commit was at 1100: offsets 1100..1199 come again, then new ones.
    second.process(records[1100:1300], _positions(1100, 200))

    uninterrupted = DriftHandler(DriftMonitor(settings), lambda alerts: None)
    uninterrupted.process(records, _positions(0, 1300))
    model = next(iter(uninterrupted.monitor.models))
    assert restarted.models[model].window.records == uninterrupted.monitor.models[model].window.records
    assert restarted.models[model].window_index == uninterrupted.monitor.models[model].window_index
    assert restarted.applied == {0: 1300}


def test_a_restart_keeps_the_saved_reference_instead_of_learning_drifted_traffic(tmp_path: Path) -> None:
    settings = DriftMonitorSettings(reference_size=1000, state_path=tmp_path / "state.json")
    rng = np.random.default_rng(12)
    first = DriftHandler(DriftMonitor(settings), lambda alerts: None, settings.state_path)
    first.process(inference_logs(rng, 1000), _positions(0, 1000))
    model = next(iter(first.monitor.models))
    saved_reference = first.monitor.models[model].reference.to_json()

    restarted = DriftMonitor(settings)
    restarted.load(settings.state_path)
    alerts: list = []
    second = DriftHandler(restarted, alerts.extend, settings.state_path)
    second.process(inference_logs(rng, 600, latency_shift=0.5), _positions(1000, 600))
    assert restarted.models[model].reference.to_json() == saved_reference
    assert {a.feature for a in alerts} >= {"latency_s"}, (
        "drifted traffic must alert, not become the reference"
    )
