"""Offline Parquet store: deterministic file names per range, byte-identical rewrites, hive partitions."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from pipelines.feature_job import aggregate_partition, partition_by_entity
from surge_core.feature_store import OfflineFeatureStore, OffsetRange, PartitionRange

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


def test_windows_aggregate_counts_sums_recency_type_counts_and_mean_embedding() -> None:
    hour = 3_600_000_000
    start = 10 * hour
    batch = pd.DataFrame(
        {
            "entity_id": ["e", "e", "e", "f", "e"],
            "event_type": ["buy", "view", "buy", "view", "view"],
            "ts_us": [start + 1_000_000, start + 2_000_000, start + 60_000_000, start + 5, start + hour + 7],
            "value": [2.0, float("nan"), 5.0, float("nan"), 1.0],
            "text": ["a", "", "b", "", ""],
            "window_start_us": [start, start, start, start, start + hour],
            "has_text": [True, False, True, False, False],
            "embedding": [[1.0, 0.0], [0.0, 0.0], [0.0, 1.0], [0.0, 0.0], [0.0, 0.0]],
        }
    )
    out = aggregate_partition(batch, window_us=hour).set_index(["entity_id", "window_start_us"])
    assert len(out) == 3
    e = out.loc[("e", start)]
    assert (e["event_count"], e["value_count"]) == (3, 2)
    assert e["value_sum"] == pytest.approx(7.0)
    assert e["value_max"] == pytest.approx(5.0)
    assert json.loads(e["event_type_counts"]) == {"buy": 2, "view": 1}
    assert e["recency_s"] == pytest.approx(3600 - 60)
    assert e["text_count"] == 2
    assert json.loads(e["text_embedding"]) == pytest.approx([0.5, 0.5])
    f = out.loc[("f", start)]
    assert f["value_max"] is None and f["value_sum"] == 0.0 and f["text_count"] == 0
    assert json.loads(f["text_embedding"]) is None
    later = out.loc[("e", start + hour)]
    assert (later["event_count"], later["recency_s"]) == (1, pytest.approx(3600 - 7e-6))


def test_partitioning_keeps_every_entity_in_one_block() -> None:
    frame = pd.DataFrame({"entity_id": [f"u{i % 37}" for i in range(500)], "ts_us": range(500)})
    blocks = partition_by_entity(frame, 4)
    assert sum(len(b) for b in blocks) == 500
    owners = [set(b["entity_id"]) for b in blocks]
    assert all(not (a & b) for i, a in enumerate(owners) for b in owners[i + 1 :])
    assert [len(b) for b in partition_by_entity(frame, 4)] == [len(b) for b in blocks]  # stable
