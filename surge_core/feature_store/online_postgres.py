"""The PostgreSQL online store (psycopg; the connection string comes from an environment variable)."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from surge_core.feature_store.online import OnlineFeatureStore, PostgresOnlineStoreSettings


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
