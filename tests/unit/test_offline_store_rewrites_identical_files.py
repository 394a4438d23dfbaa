"""Offline Parquet store: deterministic file names per range, byte-identical rewrites, hive partitions."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from pipelines.feature_job import aggregate_window
from pipelines.feature_store import OfflineFeatureStore, OffsetRange, PartitionRange

T0 = datetime(2026, 11, 1, 23, 0, tzinfo=UTC)


def rows(range_id: str) -> list[dict]:
    out = []
    for i, start in enumerate([T0, T0 + timedelta(hours=1)]):  # two windows on two dates
        out.append(
            {
                "entity_id": f"e{i}",
                "window_start": start,
                "window_end": start + timedelta(hours=1),
                "event_count": 2,
                "value_count": 1,
                "value_sum": 1.5,
                "value_max": 1.5,
                "event_type_counts": json.dumps({"view": 2}),
                "first_event_at": start,
                "last_event_at": start + timedelta(minutes=5),
                "recency_s": 3300.0,
                "text_count": 1,
                "text_embedding": [0.5, -0.5],
                "range_id": range_id,
                "window_date": start.strftime("%Y-%m-%d"),
            }
        )
    return out


def digest(paths: list[Path]) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


def test_rewriting_a_range_produces_byte_identical_files(tmp_path: Path) -> None:
    store = OfflineFeatureStore(tmp_path)
    rng = OffsetRange.of("events", [PartitionRange(0, 0, 4)])
    first = digest(store.write(rng, rows(rng.range_id)))
    second = digest(store.write(rng, list(reversed(rows(rng.range_id)))))
    assert first == second
    assert sorted(p.relative_to(tmp_path).as_posix() for p in map(Path, first)) == [
        "window_date=2026-11-01/events_p0o0-4.parquet",
        "window_date=2026-11-02/events_p0o0-4.parquet",
    ]


def test_a_second_range_adds_files_and_rows(tmp_path: Path) -> None:
    store = OfflineFeatureStore(tmp_path)
    a = OffsetRange.of("events", [PartitionRange(0, 0, 4)])
    b = OffsetRange.of("events", [PartitionRange(0, 4, 8)])
    store.write(a, rows(a.range_id))
    store.write(b, rows(b.range_id))
    table = store.read()
    assert table.num_rows == 4
    assert sorted(set(table.column("range_id").to_pylist())) == [a.range_id, b.range_id]
    assert set(table.column("window_date").to_pylist()) == {"2026-11-01", "2026-11-02"}


def test_one_window_aggregates_counts_sums_recency_and_mean_embedding() -> None:
    hour = 3_600_000_000
    start = 10 * hour
    group = pd.DataFrame(
        {
            "entity_id": ["e"] * 3,
            "event_type": ["buy", "view", "buy"],
            "ts_us": [start + 1_000_000, start + 2_000_000, start + 60_000_000],
            "value": [2.0, float("nan"), 5.0],
            "text": ["a", "", "b"],
            "window_start_us": [start] * 3,
            "has_text": [True, False, True],
            "embedding": [[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]],
        }
    )
    out = aggregate_window(group, window_us=hour).iloc[0]
    assert out["event_count"] == 3
    assert out["value_count"] == 2
    assert out["value_sum"] == pytest.approx(7.0)
    assert out["value_max"] == pytest.approx(5.0)
    assert json.loads(out["event_type_counts"]) == {"buy": 2, "view": 1}
    assert out["recency_s"] == pytest.approx(3600 - 60)
    assert out["text_count"] == 2
    assert json.loads(out["text_embedding"]) == pytest.approx([0.5, 0.5])


def test_a_window_without_text_or_values_has_no_embedding_and_no_max() -> None:
    group = pd.DataFrame(
        {
            "entity_id": ["e"],
            "event_type": ["view"],
            "ts_us": [5],
            "value": [float("nan")],
            "text": [""],
            "window_start_us": [0],
        }
    )
    out = aggregate_window(group, window_us=1_000_000).iloc[0]
    assert out["value_max"] is None
    assert out["value_sum"] == 0.0
    assert json.loads(out["text_embedding"]) is None
