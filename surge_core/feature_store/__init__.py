"""Feature stores for the batch feature job: an offline Parquet store and an online store keyed by entity.

Exactly-once effect. The feature job consumes a bounded offset range (`OffsetRange`) and produces feature
rows for it. The online store applies those rows and records the range in an offset ledger **in one
transaction**: a re-run of the same range finds its ledger rows and changes nothing; a range that overlaps
an applied one (but is not identical) is refused, since applying it would count some events twice. The
offline store writes one Parquet file per (range, date partition) whose name derives from the range, so a
re-run rewrites byte-identical files and a new range adds new files.

Online backends share one small interface (:class:`OnlineFeatureStore`) and are picked by
`open_online_store(settings)` from a registry keyed by the settings' `backend`: SQLite (embedded default,
a file, no server) and PostgreSQL (psycopg; the DSN comes from an environment variable).
"""

from collections.abc import Callable
from typing import Any

from surge_core.feature_store.offline import OfflineFeatureStore
from surge_core.feature_store.online import (
    ApplyResult,
    OnlineFeatureStore,
    OnlineStoreSettings,
    PostgresOnlineStoreSettings,
    SqliteOnlineStore,
    SqliteOnlineStoreSettings,
)
from surge_core.feature_store.online_postgres import PostgresOnlineStore
from surge_core.feature_store.ranges import OffsetRange, PartitionRange, RangeConflictError
from surge_core.feature_store.rows import FEATURE_SCHEMA, FeatureRow, merge_online

ONLINE_STORES: dict[str, Callable[[Any], OnlineFeatureStore]] = {
    "sqlite": SqliteOnlineStore,
    "postgres": PostgresOnlineStore,
}


def open_online_store(
    settings: SqliteOnlineStoreSettings | PostgresOnlineStoreSettings,
) -> OnlineFeatureStore:
    """The online store the settings select (registry keyed by `backend`)."""
    return ONLINE_STORES[settings.backend](settings)


__all__ = [
    "FEATURE_SCHEMA",
    "ONLINE_STORES",
    "ApplyResult",
    "FeatureRow",
    "OfflineFeatureStore",
    "OffsetRange",
    "OnlineFeatureStore",
    "OnlineStoreSettings",
    "PartitionRange",
    "PostgresOnlineStore",
    "PostgresOnlineStoreSettings",
    "RangeConflictError",
    "SqliteOnlineStore",
    "SqliteOnlineStoreSettings",
    "merge_online",
    "open_online_store",
]
