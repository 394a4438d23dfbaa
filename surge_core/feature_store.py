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

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, model_validator

# ---------------------------------------------------------------------------------------------- ranges


@dataclass(frozen=True, order=True)
class PartitionRange:
    """Offsets [start, end) of one partition (end exclusive, like Kafka's end offsets)."""

    partition: int
    start: int
    end: int

    def __post_init__(self) -> None:
        if self.partition < 0 or self.start < 0 or self.end < self.start:
            raise ValueError(f"invalid partition range {self.partition}:{self.start}-{self.end}")

    @property
    def size(self) -> int:
        return self.end - self.start

    def overlaps(self, other: PartitionRange) -> bool:
        return (
            self.partition == other.partition
            and self.size > 0
            and other.size > 0
            and self.start < other.end
            and other.start < self.end
        )

    @classmethod
    def parse(cls, text: str) -> PartitionRange:
        """`"2:100-250"` -> partition 2, offsets 100 (inclusive) to 250 (exclusive)."""
        try:
            partition, offsets = text.split(":")
            start, end = offsets.split("-")
            return cls(int(partition), int(start), int(end))
        except ValueError as exc:
            raise ValueError(f"range {text!r} is not PARTITION:START-END, e.g. 0:0-100 ({exc})") from exc


@dataclass(frozen=True)
class OffsetRange:
    """The bounded slice of a topic one feature-job run consumes: one `PartitionRange` per partition.

    Empty partitions are dropped, so the same data gives the same `range_id` however it was asked for.
    """

    topic: str
    partitions: tuple[PartitionRange, ...]

    @classmethod
    def of(cls, topic: str, partitions: Sequence[PartitionRange]) -> OffsetRange:
        kept = tuple(sorted(p for p in partitions if p.size > 0))
        if len({p.partition for p in kept}) != len(kept):
            raise ValueError(f"a partition appears twice in the range for topic {topic!r}")
        return cls(topic, kept)

    @property
    def records(self) -> int:
        return sum(p.size for p in self.partitions)

    @property
    def range_id(self) -> str:
        """Canonical text of the range, e.g. `events:0=0-100,1=0-120`."""
        return f"{self.topic}:" + ",".join(f"{p.partition}={p.start}-{p.end}" for p in self.partitions)

    @property
    def slug(self) -> str:
        """File-name-safe, deterministic name of the range (hashed when it would get too long)."""
        body = "_".join(f"p{p.partition}o{p.start}-{p.end}" for p in self.partitions)
        name = f"{self.topic}_{body}".replace(".", "-")
        if len(name) > 160:
            name = f"{self.topic}_{hashlib.sha256(self.range_id.encode()).hexdigest()[:32]}"
        return name


class RangeConflictError(RuntimeError):
    """A range overlaps, but differs from, one already applied: applying it would double count events."""


# ------------------------------------------------------------------------------------------ feature rows

#: Columns of a feature row (one per entity and tumbling window), in the offline store's order.
FEATURE_SCHEMA = pa.schema(
    [
        pa.field("entity_id", pa.string(), nullable=False),
        pa.field("window_start", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("window_end", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("event_count", pa.int64(), nullable=False),
        pa.field("value_count", pa.int64(), nullable=False),
        pa.field("value_sum", pa.float64(), nullable=False),
        pa.field("value_max", pa.float64()),
        pa.field("event_type_counts", pa.string(), nullable=False),  # JSON object, sorted keys
        pa.field("first_event_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("last_event_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("recency_s", pa.float64(), nullable=False),  # window_end - last_event_at
        pa.field("text_count", pa.int64(), nullable=False),
        pa.field("text_embedding", pa.list_(pa.float32())),  # mean of the window's text embeddings
        pa.field("range_id", pa.string(), nullable=False),
        pa.field("window_date", pa.string(), nullable=False),  # hive partition key (YYYY-MM-DD)
    ]
)

FeatureRow = dict[str, Any]


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


def _as_datetime(value: datetime | str) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)


def merge_online(existing: dict[str, Any] | None, row: FeatureRow) -> dict[str, Any]:
    """Fold one feature row into an entity's online record (a pure function; JSON-safe output).

    The online record holds the entity's *latest* window plus lifetime totals. A row for a newer window
    replaces the window fields; a row for the same window (events split over two ranges) adds to them
    (counts and sums add, the text embedding is the text-count-weighted mean); a row for an older window
    (late data) only adds to the lifetime totals. Example: existing window 10:00 with 3 events, new row for
    10:00 with 2 events -> window event_count 5; new row for 11:00 -> window event_count 2, lifetime 5+2.
    """
    window = {
        "window_start": _iso(row["window_start"]),
        "window_end": _iso(row["window_end"]),
        "event_count": int(row["event_count"]),
        "value_count": int(row["value_count"]),
        "value_sum": float(row["value_sum"]),
        "value_max": None if row["value_max"] is None else float(row["value_max"]),
        "event_type_counts": json.loads(row["event_type_counts"]),
        "first_event_at": _iso(row["first_event_at"]),
        "last_event_at": _iso(row["last_event_at"]),
        "text_count": int(row["text_count"]),
        "text_embedding": None
        if row["text_embedding"] is None
        else [float(x) for x in row["text_embedding"]],
    }
    if existing is None:
        merged: dict[str, Any] = {
            "entity_id": row["entity_id"],
            **window,
            "lifetime_event_count": 0,
            "lifetime_value_sum": 0.0,
            "last_seen_at": window["last_event_at"],
        }
    else:
        merged = dict(existing)
        old_start = _as_datetime(existing["window_start"])
        new_start = _as_datetime(window["window_start"])
        if new_start > old_start:
            merged.update(window)
        elif new_start == old_start:
            merged.update(_add_windows(existing, window))
        merged["last_seen_at"] = max(existing["last_seen_at"], window["last_event_at"], key=_as_datetime)
    merged["lifetime_event_count"] += window["event_count"]
    merged["lifetime_value_sum"] += window["value_sum"]
    merged["value_mean"] = merged["value_sum"] / merged["value_count"] if merged["value_count"] else None
    merged["recency_s"] = (
        _as_datetime(merged["window_end"]) - _as_datetime(merged["last_event_at"])
    ).total_seconds()
    return merged


def _add_windows(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    counts = dict(a["event_type_counts"])
    for key, n in b["event_type_counts"].items():
        counts[key] = counts.get(key, 0) + n
    maxes = [m for m in (a["value_max"], b["value_max"]) if m is not None]
    embedding = a["text_embedding"]
    if b["text_embedding"] is not None:
        if embedding is None:
            embedding = b["text_embedding"]
        else:
            wa, wb = a["text_count"], b["text_count"]
            embedding = [
                (x * wa + y * wb) / (wa + wb) for x, y in zip(embedding, b["text_embedding"], strict=True)
            ]
    return {
        "event_count": a["event_count"] + b["event_count"],
        "value_count": a["value_count"] + b["value_count"],
        "value_sum": a["value_sum"] + b["value_sum"],
        "value_max": max(maxes) if maxes else None,
        "event_type_counts": dict(sorted(counts.items())),
        "first_event_at": min(a["first_event_at"], b["first_event_at"], key=_as_datetime),
        "last_event_at": max(a["last_event_at"], b["last_event_at"], key=_as_datetime),
        "text_count": a["text_count"] + b["text_count"],
        "text_embedding": embedding,
    }


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


# ---------------------------------------------------------------------------------------- online store


class SqliteOnlineStoreSettings(BaseModel):
    """The embedded online store: one SQLite file (WAL mode, so readers never wait for the job)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: Literal["sqlite"] = Field("sqlite", description="Selects the embedded SQLite store.")
    path: Path = Field(Path("~/.cache/surge/features.sqlite"), description="SQLite database file.")
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


class PostgresOnlineStore(OnlineFeatureStore):
    """PostgreSQL through psycopg 3: a read connection guarded by a lock, one connection per write."""

    placeholder = "%s"

    def __init__(self, settings: PostgresOnlineStoreSettings) -> None:
        import psycopg

        super().__init__(settings.table_prefix)
        dsn = os.environ.get(settings.dsn_env)
        if not dsn:
            raise ValueError(
                f"online store backend 'postgres' needs the environment variable {settings.dsn_env}"
            )
        self._psycopg = psycopg
        self._dsn = dsn
        self._timeout = settings.connect_timeout_s
        self._reader = psycopg.connect(dsn, autocommit=True, connect_timeout=self._timeout)
        self._reader_lock = threading.Lock()
        with self._write_transaction() as cursor:
            # Serialise concurrent CREATEs from two first runs.
            cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self.ledger_table,))
            self._create_tables(cursor, "JSONB")

    def _read_connection(self) -> Any:
        with self._reader_lock:
            if self._reader.closed or self._reader.broken:
                # The server restarted or the network dropped: the next read reconnects instead of failing.
                self._reader = self._psycopg.connect(
                    self._dsn, autocommit=True, connect_timeout=self._timeout
                )
        return _LockedConnection(self._reader, self._reader_lock)

    def get(self, entity_id: str) -> dict[str, Any] | None:
        try:
            return super().get(entity_id)
        except self._psycopg.OperationalError:
            # The shared read connection died (server restart, idle timeout): one retry on a new one.
            return super().get(entity_id)

    @contextmanager
    def _write_transaction(self) -> Iterator[Any]:
        with (
            self._psycopg.connect(self._dsn, connect_timeout=self._timeout) as connection,
            connection.transaction(),
            connection.cursor() as cursor,
        ):
            if self._table_exists(cursor):
                # Writers queue here, so two jobs cannot both pass the ledger check; readers are not blocked.
                cursor.execute(f"LOCK TABLE {self.ledger_table} IN SHARE ROW EXCLUSIVE MODE")
            yield cursor

    def _table_exists(self, cursor: Any) -> bool:
        cursor.execute("SELECT to_regclass(%s) IS NOT NULL", (self.ledger_table,))
        row = cursor.fetchone()
        return bool(row and row[0])

    def close(self) -> None:
        self._reader.close()


class _LockedConnection:
    """A psycopg connection shared by threads: each cursor holds the lock until it is closed."""

    def __init__(self, connection: Any, lock: threading.Lock) -> None:
        self._connection = connection
        self._lock = lock

    def cursor(self) -> _LockedCursor:
        self._lock.acquire()
        return _LockedCursor(self._connection.cursor(), self._lock)


class _LockedCursor:
    def __init__(self, cursor: Any, lock: threading.Lock) -> None:
        self._cursor = cursor
        self._lock = lock

    def execute(self, statement: str, params: Sequence[Any] = ()) -> None:
        self._cursor.execute(statement, params)

    def fetchone(self) -> Any:
        return self._cursor.fetchone()

    def fetchall(self) -> list[Any]:
        return list(self._cursor.fetchall())

    def close(self) -> None:
        try:
            self._cursor.close()
        finally:
            self._lock.release()


ONLINE_STORES: dict[str, Callable[[Any], OnlineFeatureStore]] = {
    "sqlite": SqliteOnlineStore,
    "postgres": PostgresOnlineStore,
}


def open_online_store(
    settings: SqliteOnlineStoreSettings | PostgresOnlineStoreSettings,
) -> OnlineFeatureStore:
    """The online store the settings select (registry keyed by `backend`)."""
    return ONLINE_STORES[settings.backend](settings)
