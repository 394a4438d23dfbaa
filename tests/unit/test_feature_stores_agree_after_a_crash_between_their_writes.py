"""A feature-job run that crashes between the offline write and the online apply leaves the two stores
disagreeing; the next run settles it against the ledger (pipelines.feature_recovery), so the offline
store again holds exactly the ranges the online store applied. Events with NaN or Infinity never reach
either store."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from pipelines import feature_recovery
from surge_core.feature_store import (
    OfflineFeatureStore,
    OffsetRange,
    PartitionRange,
    SqliteOnlineStoreSettings,
    open_online_store,
)
from surge_core.records import EventRecord
from tests.unit.test_feature_store_exactly_once import T0, row


def _ranges() -> tuple[OffsetRange, OffsetRange]:
    crashed = OffsetRange.of("events", [PartitionRange(0, 0, 10)])
    # The re-run plans from the ledger, and more events arrived meanwhile: a longer range, same start.
    rerun = OffsetRange.of("events", [PartitionRange(0, 0, 15)])
    return crashed, rerun


def test_files_of_a_range_never_applied_online_are_removed_before_the_next_range(tmp_path: Path) -> None:
    offline = OfflineFeatureStore(tmp_path / "offline")
    online = open_online_store(SqliteOnlineStoreSettings(path=tmp_path / "online.sqlite"))
    try:
        crashed, rerun = _ranges()
        feature_recovery.begin(offline.root, crashed)
        offline.write(crashed, [row("a", T0, 10, 10.0)])
        # ... crash: online.apply never ran.

        assert feature_recovery.recover(offline.root, online) == [crashed.range_id]
        feature_recovery.begin(offline.root, rerun)
        offline.write(rerun, [row("a", T0, 15, 15.0)])
        online.apply(rerun, [row("a", T0, 15, 15.0)])
        feature_recovery.finish(offline.root, rerun)

        table = offline.read().to_pylist()
        assert [(r["entity_id"], r["event_count"]) for r in table] == [("a", 15)], "events counted twice"
        assert [(r["entity_id"], r["lifetime_event_count"]) for r in online.dump()] == [("a", 15)]
    finally:
        online.close()


def test_a_crash_after_the_online_apply_keeps_the_files(tmp_path: Path) -> None:
    offline = OfflineFeatureStore(tmp_path / "offline")
    online = open_online_store(SqliteOnlineStoreSettings(path=tmp_path / "online.sqlite"))
    try:
        crashed, _ = _ranges()
        feature_recovery.begin(offline.root, crashed)
        offline.write(crashed, [row("a", T0, 10, 10.0)])
        online.apply(crashed, [row("a", T0, 10, 10.0)])
        # ... crash before the marker was removed.
        assert feature_recovery.recover(offline.root, online) == []
        assert [r["event_count"] for r in offline.read().to_pylist()] == [10]
        assert not list((offline.root / feature_recovery.PENDING_DIR).glob("*.json"))
    finally:
        online.close()


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_events_with_non_finite_values_are_rejected_at_validation(value: float) -> None:
    with pytest.raises(ValidationError):
        EventRecord(event_id="e", entity_id="u", event_type="buy", timestamp=T0, value=value)
