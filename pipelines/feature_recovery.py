"""Keeping the offline and online feature stores in agreement across a crash between their two writes.

A run writes the offline Parquet files of its range first, then applies the rows to the online store and
records the range in the ledger (one transaction). A crash between the two left files for a range the
ledger never got; the next run plans from the ledger, often a *different* (longer) range over the same
events, and the offline store ended up counting those events twice.

The fix is a pending marker, written before the files and removed after the ledger commit:

    root/_pending/<range slug>.json     {"topic": ..., "partitions": [[partition, start, end], ...]}

At the start of every run `recover` settles each marker against the ledger: range applied -> the files
are complete and agree with the online store, drop the marker; not applied -> its files are orphans,
delete them and the marker. Either way the offline store again holds exactly the ledger's ranges.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from surge_core.feature_store import OffsetRange, OnlineFeatureStore, PartitionRange

logger = logging.getLogger(__name__)

PENDING_DIR = "_pending"


def _marker(root: Path, offset_range: OffsetRange) -> Path:
    return root / PENDING_DIR / f"{offset_range.slug}.json"


def begin(root: Path, offset_range: OffsetRange) -> None:
    """Record that `offset_range` is about to be written (durably, before any of its files)."""
    path = _marker(root, offset_range)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {
        "topic": offset_range.topic,
        "partitions": [[p.partition, p.start, p.end] for p in offset_range.partitions],
    }
    tmp = path.with_suffix(".tmp")
    with tmp.open("w") as handle:
        json.dump(body, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def finish(root: Path, offset_range: OffsetRange) -> None:
    """Both stores hold the range: the marker goes."""
    _marker(root, offset_range).unlink(missing_ok=True)


def recover(root: Path, online: OnlineFeatureStore) -> list[str]:
    """Settle the markers left by crashed runs (see the module doc); returns the orphaned range ids."""
    orphaned = []
    for path in sorted((root / PENDING_DIR).glob("*.json")) if (root / PENDING_DIR).exists() else []:
        body = json.loads(path.read_text())
        offset_range = OffsetRange.of(body["topic"], [PartitionRange(*p) for p in body["partitions"]])
        if not online.is_applied(offset_range):
            for stale in root.glob(f"window_date=*/{offset_range.slug}.parquet"):
                stale.unlink()
            orphaned.append(offset_range.range_id)
            logger.warning(
                "removed the offline files of %s: a crashed run never applied it online",
                offset_range.range_id,
            )
        path.unlink()
    return orphaned
