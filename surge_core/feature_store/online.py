"""The online store's interface (latest features per entity plus the ledger of applied ranges), its
settings, and the embedded SQLite backend."""

from __future__ import annotations

import json
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from surge_core.feature_store.ranges import OffsetRange, PartitionRange, RangeConflictError
from surge_core.feature_store.rows import FeatureRow, merge_online
from surge_core.model_assets import cache_dir

# ---------------------------------------------------------------------------------------- online store


class SqliteOnlineStoreSettings(BaseModel):
    """The embedded online store: one SQLite file (WAL mode, so readers never wait for the job)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: Literal["sqlite"] = Field("sqlite", description="Selects the embedded SQLite store.")
    path: Path = Field(
        default_factory=lambda: cache_dir() / "features.sqlite",
        description="SQLite database file (default: $SURGE_CACHE_DIR/features.sqlite).",
    )
    table_prefix: str = Field(
        "surge", pattern=r"^[a-z_][a-z0-9_]{0,40}$", description="Prefix of the feature and ledger tables."
    )


class PostgresOnlineStoreSettings(BaseModel):
    """PostgreSQL via psycopg; the connection string is read from an environment variable."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: Literal["postgres"] = Field("postgres", description="Selects PostgreSQL.")
    dsn_env: str = Field(
        "SURGE_FEATURES_PG_DSN",
        min_length=1,
        description="Environment variable holding the connection string.",
    )
    table_prefix: str = Field(
        "surge", pattern=r"^[a-z_][a-z0-9_]{0,40}$", description="Prefix of the feature and ledger tables."
    )
    connect_timeout_s: int = Field(10, ge=1, le=300, description="Seconds to wait for a connection.")

    @model_validator(mode="after")
    def _dsn_env_is_a_name(self) -> PostgresOnlineStoreSettings:
        if "=" in self.dsn_env or "://" in self.dsn_env:
            raise ValueError("dsn_env must name an environment variable, not hold the connection string")
        return self


OnlineStoreSettings = Annotated[
    SqliteOnlineStoreSettings | PostgresOnlineStoreSettings, Field(discriminator="backend")
]


@dataclass(frozen=True)
class ApplyResult:
    """What `OnlineFeatureStore.apply` did: `applied` is False when the range was already in the ledger."""

    applied: bool
    entities: int
    range_id: str


class OnlineFeatureStore(ABC):
    """Latest features per entity, plus the ledger of offset ranges already applied.

    Subclasses give a DB-API connection and their SQL dialect; the transaction logic is shared here, so
    both backends have the same exactly-once behaviour. `get` is safe to call from many threads.
    """

    placeholder = "?"

    def __init__(self, table_prefix: str) -> None:
        self.features_table = f"{table_prefix}_entity_features"
        self.ledger_table = f"{table_prefix}_feature_ledger"

    # -- backend hooks
    @abstractmethod
    def _read_connection(self) -> Any:
        """A connection for reads in the calling thread (reads must not block on the writer)."""

    @abstractmethod
    @contextmanager
    def _write_transaction(self) -> Iterator[Any]:
        """A cursor inside one transaction that serialises writers; commits on exit, rolls back on error."""

    @abstractmethod
    def close(self) -> None: ...

    def _sql(self, statement: str) -> str:
        return statement.replace("?", self.placeholder)

    def _create_tables(self, cursor: Any, json_type: str) -> None:
        cursor.execute(
            f"CREATE TABLE IF NOT EXISTS {self.features_table} ("
            " entity_id TEXT PRIMARY KEY,"
            " window_start TEXT NOT NULL,"
            f" features {json_type} NOT NULL,"
            " range_id TEXT NOT NULL)"
        )
        cursor.execute(
            f"CREATE TABLE IF NOT EXISTS {self.ledger_table} ("
            " topic TEXT NOT NULL,"
            " partition_id INTEGER NOT NULL,"
            " start_offset BIGINT NOT NULL,"
            " end_offset BIGINT NOT NULL,"
            " range_id TEXT NOT NULL,"
            " rows_written INTEGER NOT NULL,"
            " applied_at TEXT NOT NULL,"
            " PRIMARY KEY (topic, partition_id, start_offset))"
        )

    # -- reads
    def get(self, entity_id: str) -> dict[str, Any] | None:
        """The entity's online features (latest window + lifetime totals), or None if never seen."""
        cursor = self._read_connection().cursor()
        try:
            cursor.execute(
                self._sql(f"SELECT features FROM {self.features_table} WHERE entity_id = ?"), (entity_id,)
            )
            row = cursor.fetchone()
        finally:
            cursor.close()
        if row is None:
            return None
        value = row[0]
        return value if isinstance(value, dict) else json.loads(value)

    def applied_ranges(self, topic: str) -> list[PartitionRange]:
        """Every partition range of `topic` in the ledger, sorted."""
        cursor = self._read_connection().cursor()
        try:
            cursor.execute(
                self._sql(
                    f"SELECT partition_id, start_offset, end_offset FROM {self.ledger_table} WHERE topic = ?"
                ),
                (topic,),
            )
            rows = cursor.fetchall()
        finally:
            cursor.close()
        return sorted(PartitionRange(int(p), int(s), int(e)) for p, s, e in rows)

    def is_applied(self, offset_range: OffsetRange) -> bool:
        applied = set(self.applied_ranges(offset_range.topic))
        return bool(offset_range.partitions) and all(p in applied for p in offset_range.partitions)

    def committed_ends(self, topic: str) -> dict[int, int]:
        """Per partition, the highest end offset applied (where the next scheduled run starts)."""
        ends: dict[int, int] = {}
        for p in self.applied_ranges(topic):
            ends[p.partition] = max(ends.get(p.partition, 0), p.end)
        return ends

    # -- the exactly-once write
    def apply(self, offset_range: OffsetRange, rows: Sequence[FeatureRow]) -> ApplyResult:
        """Fold `rows` into the online features and record `offset_range` in the ledger, atomically.

        Already applied (same range in the ledger) -> nothing changes. Overlapping a different applied
        range -> `RangeConflictError`, nothing changes.
        """
        with self._write_transaction() as cursor:
            cursor.execute(
                self._sql(
                    "SELECT partition_id, start_offset, end_offset, range_id"
                    f" FROM {self.ledger_table} WHERE topic = ?"
                ),
                (offset_range.topic,),
            )
            ledger = [(PartitionRange(int(p), int(s), int(e)), r) for p, s, e, r in cursor.fetchall()]
            if any(r == offset_range.range_id for _, r in ledger):
                return ApplyResult(False, 0, offset_range.range_id)
            for mine in offset_range.partitions:
                for theirs, other_id in ledger:
                    if mine.overlaps(theirs):
                        raise RangeConflictError(
                            f"range {offset_range.range_id} overlaps applied range {other_id} on partition "
                            f"{mine.partition}; re-run exactly that range or a disjoint one"
                        )
            ordered = sorted(rows, key=lambda r: (r["entity_id"], r["window_start"]))
            entities = sorted({r["entity_id"] for r in ordered})
            current = self._load(cursor, entities)
            for row in ordered:
                current[row["entity_id"]] = merge_online(current.get(row["entity_id"]), row)
            for entity_id in entities:
                record = current[entity_id]
                cursor.execute(
                    self._sql(
                        f"INSERT INTO {self.features_table} (entity_id, window_start, features, range_id)"
                        " VALUES (?, ?, ?, ?) ON CONFLICT (entity_id) DO UPDATE SET"
                        " window_start = excluded.window_start, features = excluded.features,"
                        " range_id = excluded.range_id"
                    ),
                    (
                        entity_id,
                        record["window_start"],
                        json.dumps(record, sort_keys=True),
                        offset_range.range_id,
                    ),
                )
            applied_at = datetime.now(UTC).isoformat()
            for p in offset_range.partitions:
                cursor.execute(
                    self._sql(
                        f"INSERT INTO {self.ledger_table} (topic, partition_id, start_offset, end_offset,"
                        " range_id, rows_written, applied_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
                    ),
                    (
                        offset_range.topic,
                        p.partition,
                        p.start,
                        p.end,
                        offset_range.range_id,
                        len(rows),
                        applied_at,
                    ),
                )
        return ApplyResult(True, len(entities), offset_range.range_id)

    def _load(self, cursor: Any, entities: Sequence[str]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(entities), 500):
            chunk = list(entities[start : start + 500])
            marks = ", ".join("?" for _ in chunk)
            cursor.execute(
                self._sql(
                    f"SELECT entity_id, features FROM {self.features_table} WHERE entity_id IN ({marks})"
                ),
                chunk,
            )
            for entity_id, value in cursor.fetchall():
                found[entity_id] = value if isinstance(value, dict) else json.loads(value)
        return found

    def dump(self) -> list[dict[str, Any]]:
        """All online records sorted by entity (for tests and inspection)."""
        cursor = self._read_connection().cursor()
        try:
            cursor.execute(f"SELECT features FROM {self.features_table} ORDER BY entity_id")
            rows = cursor.fetchall()
        finally:
            cursor.close()
        return [v if isinstance(v, dict) else json.loads(v) for (v,) in rows]


class SqliteOnlineStore(OnlineFeatureStore):
    """SQLite file in WAL mode; one connection per thread (sqlite3 connections are not shareable)."""

    def __init__(self, settings: SqliteOnlineStoreSettings) -> None:
        super().__init__(settings.table_prefix)
        self.path = settings.path.expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        with self._write_transaction() as cursor:
            self._create_tables(cursor, "TEXT")

    def _connect(self) -> sqlite3.Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            # isolation_level=None: we issue BEGIN ourselves; the timeout lets a second writer wait.
            connection = sqlite3.connect(self.path, isolation_level=None, timeout=30, check_same_thread=False)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            self._local.connection = connection
            with self._lock:
                self._connections.append(connection)
        return connection

    def _read_connection(self) -> sqlite3.Connection:
        return self._connect()

    @contextmanager
    def _write_transaction(self) -> Iterator[sqlite3.Cursor]:
        connection = self._connect()
        cursor = connection.cursor()
        # IMMEDIATE takes the write lock up front, so two jobs cannot both pass the ledger check.
        cursor.execute("BEGIN IMMEDIATE")
        try:
            yield cursor
        except BaseException:
            connection.rollback()
            raise
        else:
            connection.commit()
        finally:
            cursor.close()

    def close(self) -> None:
        with self._lock:
            for connection in self._connections:
                connection.close()
            self._connections.clear()
        self._local = threading.local()
