"""The offline store: one Parquet file per (range, date partition), named by the range."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from surge_core.feature_store.ranges import OffsetRange
from surge_core.feature_store.rows import FEATURE_SCHEMA, FeatureRow

# --------------------------------------------------------------------------------------- offline store


class OfflineFeatureStore:
    """Parquet files under `root`, hive-partitioned by `window_date`, one file per range and date.

    Layout: `root/window_date=2026-11-29/<range slug>.parquet`. Rows are sorted by entity and window and
    written with fixed options, so the same range always produces byte-identical files. Files are written
    to a temporary name and renamed, so a reader never sees half a file.
    """

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).expanduser()

    def write(self, offset_range: OffsetRange, rows: Sequence[FeatureRow]) -> list[Path]:
        by_date: dict[str, list[FeatureRow]] = {}
        for row in rows:
            by_date.setdefault(row["window_date"], []).append(row)
        written = []
        for date, date_rows in sorted(by_date.items()):
            date_rows.sort(key=lambda r: (r["entity_id"], r["window_start"]))
            table = pa.Table.from_pylist(date_rows, schema=FEATURE_SCHEMA)
            folder = self.root / f"window_date={date}"
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{offset_range.slug}.parquet"
            tmp = path.with_suffix(f".tmp-{os.getpid()}")
            # The partition key lives in the folder name, as hive readers expect.
            pq.write_table(
                table.drop_columns(["window_date"]), tmp, compression="zstd", write_statistics=True
            )
            os.replace(tmp, path)
            written.append(path)
        return written

    def read(self) -> pa.Table:
        """Every feature row written so far (all ranges), with `window_date` restored from the folders."""
        if not self.root.exists():
            return FEATURE_SCHEMA.empty_table()
        return pads.dataset(self.root, format="parquet", partitioning="hive").to_table()
