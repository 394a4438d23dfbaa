"""`surge feature-job ...` and `surge drift-monitor ...` are wired into the surge CLI with their options."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines.cli import build_parser
from pipelines.feature_job import FeatureJobSettings, load_settings
from surge_core.feature_store import PartitionRange


def test_feature_job_run_parses_ranges_and_min_lag() -> None:
    args = build_parser().parse_args(
        ["feature-job", "run", "--range", "0:0-100", "--range", "1:5-9", "--min-lag", "50", "--no-embed"]
    )
    assert [PartitionRange.parse(r) for r in args.ranges] == [
        PartitionRange(0, 0, 100),
        PartitionRange(1, 5, 9),
    ]
    assert (args.min_lag, args.no_embed) == (50, True)
    assert args.handler.__name__ == "_run_command"


def test_feature_job_trigger_and_drift_monitor_are_registered() -> None:
    parser = build_parser()
    trigger = parser.parse_args(
        ["feature-job", "trigger", "--min-lag", "10000", "--image", "img", "--dry-run"]
    )
    assert trigger.handler.__name__ == "_trigger_command"
    drift = parser.parse_args(
        ["drift-monitor", "run", "--metrics-port", "9300", "--state-path", "/tmp/s.json"]
    )
    assert (drift.metrics_port, drift.state_path) == (9300, "/tmp/s.json")


def test_settings_file_and_flags_combine_and_typos_fail(tmp_path: Path) -> None:
    path = tmp_path / "fj.json"
    path.write_text(
        json.dumps({"window_s": 600, "online": {"backend": "sqlite", "path": str(tmp_path / "o.db")}})
    )
    settings = load_settings(str(path), topic="t.events", embed_text=False)
    assert (settings.window_s, settings.topic, settings.embed_text) == (600, "t.events", False)
    path.write_text(json.dumps({"windw_s": 600}))
    with pytest.raises(ValueError, match="windw_s"):
        load_settings(str(path))
    with pytest.raises(ValueError, match="dsn_env"):
        FeatureJobSettings.model_validate(
            {"online": {"backend": "postgres", "dsn_env": "postgresql://u@h/db"}}
        )
