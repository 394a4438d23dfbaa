"""Online feature store: re-applying a range changes nothing; overlaps are refused; new ranges add."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from surge_core.feature_store import (
    OffsetRange,
    PartitionRange,
    RangeConflictError,
    SqliteOnlineStore,
    SqliteOnlineStoreSettings,
    merge_online,
    open_online_store,
)

T0 = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)


def row(entity: str, window_start: datetime, count: int, value_sum: float, *, embedding=None, texts=0):
    return {
        "entity_id": entity,
        "window_start": window_start,
        "window_end": window_start + timedelta(hours=1),
        "event_count": count,
        "value_count": count,
        "value_sum": value_sum,
        "value_max": value_sum,
        "event_type_counts": json.dumps({"buy": count}),
        "first_event_at": window_start + timedelta(minutes=1),
        "last_event_at": window_start + timedelta(minutes=50),
        "recency_s": 600.0,
        "text_count": texts,
        "text_embedding": embedding,
        "range_id": "r",
        "window_date": window_start.strftime("%Y-%m-%d"),
    }


@pytest.fixture
def store(tmp_path: Path):
    s = open_online_store(SqliteOnlineStoreSettings(path=tmp_path / "features.sqlite"))
    yield s
    s.close()


def test_registry_picks_sqlite_for_the_embedded_default(store) -> None:
    assert isinstance(store, SqliteOnlineStore)


def test_rerun_of_the_same_range_changes_nothing(store) -> None:
    rng = OffsetRange.of("events", [PartitionRange(0, 0, 10), PartitionRange(1, 0, 5)])
    rows = [row("a", T0, 3, 6.0), row("b", T0, 2, 1.0)]
    first = store.apply(rng, rows)
    snapshot = store.dump()
    second = store.apply(rng, rows)
    assert first.applied and first.entities == 2
    assert not second.applied
    assert store.dump() == snapshot
    assert store.is_applied(rng)


def test_a_range_overlapping_an_applied_one_is_refused_and_changes_nothing(store) -> None:
    store.apply(OffsetRange.of("events", [PartitionRange(0, 0, 10)]), [row("a", T0, 3, 6.0)])
    before = store.dump()
    with pytest.raises(RangeConflictError, match="overlaps"):
        store.apply(OffsetRange.of("events", [PartitionRange(0, 5, 20)]), [row("a", T0, 9, 9.0)])
    assert store.dump() == before
    assert store.applied_ranges("events") == [PartitionRange(0, 0, 10)]


def test_a_second_range_adds_to_the_same_window_and_lifetime(store) -> None:
    store.apply(OffsetRange.of("events", [PartitionRange(0, 0, 10)]), [row("a", T0, 3, 6.0)])
    store.apply(OffsetRange.of("events", [PartitionRange(0, 10, 20)]), [row("a", T0, 2, 4.0)])
    features = store.get("a")
    assert features is not None
    assert features["event_count"] == 5
    assert features["value_sum"] == pytest.approx(10.0)
    assert features["value_mean"] == pytest.approx(2.0)
    assert features["lifetime_event_count"] == 5
    assert store.committed_ends("events") == {0: 20}


def test_a_newer_window_replaces_the_window_fields_but_lifetime_keeps_adding(store) -> None:
    store.apply(OffsetRange.of("events", [PartitionRange(0, 0, 10)]), [row("a", T0, 3, 6.0)])
    later = T0 + timedelta(hours=1)
    store.apply(OffsetRange.of("events", [PartitionRange(0, 10, 20)]), [row("a", later, 2, 4.0)])
    features = store.get("a")
    assert features is not None
    assert features["window_start"] == later.isoformat()
    assert features["event_count"] == 2
    assert features["lifetime_event_count"] == 5
    assert features["lifetime_value_sum"] == pytest.approx(10.0)


def test_late_data_for_an_older_window_only_counts_in_lifetime() -> None:
    later = T0 + timedelta(hours=2)
    merged = merge_online(merge_online(None, row("a", later, 4, 4.0)), row("a", T0, 3, 3.0))
    assert merged["window_start"] == later.isoformat()
    assert merged["event_count"] == 4
    assert merged["lifetime_event_count"] == 7


def test_text_embeddings_of_one_window_merge_as_a_text_count_weighted_mean() -> None:
    a = row("a", T0, 1, 1.0, embedding=[1.0, 0.0], texts=1)
    b = row("a", T0, 3, 1.0, embedding=[0.0, 1.0], texts=3)
    merged = merge_online(merge_online(None, a), b)
    assert merged["text_embedding"] == pytest.approx([0.25, 0.75])
    assert merged["text_count"] == 4


def test_unknown_entity_reads_as_none(store) -> None:
    assert store.get("nobody") is None


def test_get_is_safe_from_many_threads_while_a_job_writes(store) -> None:
    store.apply(OffsetRange.of("events", [PartitionRange(0, 0, 1)]), [row("a", T0, 1, 1.0)])
    errors: list[BaseException] = []
    seen: list[int] = []

    def reader() -> None:
        try:
            for _ in range(200):
                features = store.get("a")
                assert features is not None
                seen.append(features["lifetime_event_count"])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    for i in range(1, 20):
        store.apply(OffsetRange.of("events", [PartitionRange(0, i, i + 1)]), [row("a", T0, 1, 1.0)])
    for t in threads:
        t.join()
    assert not errors
    assert len(seen) == 800
    assert store.get("a")["lifetime_event_count"] == 20  # type: ignore[index]


def test_the_store_survives_a_reopen(tmp_path: Path) -> None:
    settings = SqliteOnlineStoreSettings(path=tmp_path / "f.sqlite")
    first = open_online_store(settings)
    rng = OffsetRange.of("events", [PartitionRange(0, 0, 3)])
    first.apply(rng, [row("a", T0, 3, 3.0)])
    first.close()
    again = open_online_store(settings)
    try:
        assert again.is_applied(rng)
        assert again.get("a")["event_count"] == 3  # type: ignore[index]
    finally:
        again.close()


def test_two_jobs_racing_on_the_same_range_apply_it_once(tmp_path: Path) -> None:
    settings = SqliteOnlineStoreSettings(path=tmp_path / "race.sqlite")
    stores = [open_online_store(settings) for _ in range(4)]
    rng = OffsetRange.of("events", [PartitionRange(0, 0, 100)])
    barrier = threading.Barrier(len(stores))
    results: list[bool] = []

    def job(store) -> None:
        barrier.wait()
        results.append(store.apply(rng, [row("a", T0, 100, 100.0)]).applied)

    threads = [threading.Thread(target=job, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert sorted(results) == [False, False, False, True]
        assert stores[0].get("a")["lifetime_event_count"] == 100  # type: ignore[index]
    finally:
        for s in stores:
            s.close()
