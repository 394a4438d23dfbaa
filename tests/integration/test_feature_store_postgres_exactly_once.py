"""The PostgreSQL online store (real server from the session fixture) keeps the exactly-once contract."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from surge_core.feature_store import (
    OffsetRange,
    OnlineFeatureStore,
    PartitionRange,
    PostgresOnlineStore,
    PostgresOnlineStoreSettings,
    RangeConflictError,
    open_online_store,
)

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)


def row(entity: str, count: int, value_sum: float, start: datetime = T0) -> dict:
    return {
        "entity_id": entity,
        "window_start": start,
        "window_end": start + timedelta(hours=1),
        "event_count": count,
        "value_count": count,
        "value_sum": value_sum,
        "value_max": value_sum,
        "event_type_counts": json.dumps({"buy": count}),
        "first_event_at": start,
        "last_event_at": start + timedelta(minutes=30),
        "recency_s": 1800.0,
        "text_count": 1,
        "text_embedding": [0.25, 0.75],
        "range_id": "r",
        "window_date": start.strftime("%Y-%m-%d"),
    }


@pytest.fixture
def pg_store(pg_dsn: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[OnlineFeatureStore]:
    monkeypatch.setenv("SURGE_FEATURES_PG_DSN", pg_dsn)
    settings = PostgresOnlineStoreSettings(table_prefix=f"t{uuid.uuid4().hex[:8]}")
    store = open_online_store(settings)
    yield store
    store.close()


def test_registry_picks_postgres_and_needs_the_dsn_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SURGE_FEATURES_PG_DSN", raising=False)
    with pytest.raises(ValueError, match="SURGE_FEATURES_PG_DSN"):
        open_online_store(PostgresOnlineStoreSettings())


def test_postgres_store_applies_a_range_once_and_refuses_overlaps(pg_store: OnlineFeatureStore) -> None:
    assert isinstance(pg_store, PostgresOnlineStore)
    first = OffsetRange.of("events", [PartitionRange(0, 0, 10), PartitionRange(1, 0, 4)])
    assert pg_store.apply(first, [row("a", 3, 6.0), row("b", 1, 1.0)]).applied
    snapshot = pg_store.dump()
    assert not pg_store.apply(first, [row("a", 3, 6.0), row("b", 1, 1.0)]).applied
    assert pg_store.dump() == snapshot
    with pytest.raises(RangeConflictError):
        pg_store.apply(OffsetRange.of("events", [PartitionRange(0, 5, 15)]), [row("a", 9, 9.0)])
    assert pg_store.dump() == snapshot
    assert pg_store.apply(OffsetRange.of("events", [PartitionRange(0, 10, 12)]), [row("a", 2, 4.0)]).applied
    features = pg_store.get("a")
    assert features is not None
    assert (features["event_count"], features["lifetime_value_sum"]) == (5, 10.0)
    assert features["text_embedding"] == [0.25, 0.75]
    assert pg_store.committed_ends("events") == {0: 12, 1: 4}
    assert pg_store.get("nobody") is None


def test_two_jobs_racing_on_the_same_range_apply_it_once(
    pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SURGE_FEATURES_PG_DSN", pg_dsn)
    settings = PostgresOnlineStoreSettings(table_prefix=f"t{uuid.uuid4().hex[:8]}")
    stores = [open_online_store(settings) for _ in range(4)]
    rng = OffsetRange.of("events", [PartitionRange(0, 0, 100)])
    results: list[bool] = []
    barrier = threading.Barrier(len(stores))

    def job(store: OnlineFeatureStore) -> None:
        barrier.wait()
        results.append(store.apply(rng, [row("a", 100, 100.0)]).applied)

    threads = [threading.Thread(target=job, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    readers_ok: list[bool] = []

    def reader() -> None:
        for _ in range(50):
            value = stores[0].get("a")
            readers_ok.append(value is None or value["lifetime_event_count"] == 100)

    reading = [threading.Thread(target=reader) for _ in range(3)]
    for t in reading:
        t.start()
    for t in threads + reading:
        t.join()
    try:
        assert sorted(results) == [False, False, False, True]
        assert stores[1].get("a")["lifetime_event_count"] == 100  # type: ignore[index]
        assert all(readers_ok) and len(readers_ok) == 150
    finally:
        for s in stores:
            s.close()


def test_reads_survive_the_server_dropping_the_read_connection(
    pg_store: OnlineFeatureStore, pg_dsn: str
) -> None:
    import psycopg

    pg_store.apply(OffsetRange.of("events", [PartitionRange(0, 0, 1)]), [row("a", 1, 1.0)])
    assert pg_store.get("a") is not None
    reader_pid = pg_store._reader.info.backend_pid  # type: ignore[attr-defined]
    with psycopg.connect(pg_dsn, autocommit=True) as admin:
        # Only this store's read connection: the server is shared with other tests of the session.
        admin.execute("SELECT pg_terminate_backend(%s)", (reader_pid,))
    features = pg_store.get("a")
    assert features is not None and features["event_count"] == 1
