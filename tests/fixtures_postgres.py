"""Session fixtures: one real PostgreSQL 18 with pgvector per test session, started by scripts/postgres.py.

The server listens on a Unix socket inside its own data directory (no TCP port), so test sessions running
side by side on one machine cannot collide. The data directory is a fresh `mkdtemp` rather than pytest's
tmp_path: pytest prunes old `pytest-of-<user>` directories, and a concurrent session could delete a running
server's data. The server is stopped (by its postmaster PID) and the directory removed at session end.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "postgres.py"
START_TIMEOUT_S = 120


def _script(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="session")
def pg_dsn() -> Iterator[str]:
    """Connection string of a PostgreSQL 18 + pgvector server that lives for the whole test session."""
    root = Path(tempfile.mkdtemp(prefix="surge-pg-"))
    data_dir = root / "data"
    started = time.monotonic()
    result = _script("start", "--data-dir", str(data_dir), timeout=START_TIMEOUT_S)
    if result.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"scripts/postgres.py start failed ({result.returncode}):\n{result.stderr[-4000:]}")
    dsn = result.stdout.strip().splitlines()[-1]
    sys.stderr.write(f"\n[fixtures_postgres] PostgreSQL ready in {time.monotonic() - started:.2f}s: {dsn}\n")
    try:
        yield dsn
    finally:
        _script("stop", "--data-dir", str(data_dir), timeout=60)
        shutil.rmtree(root, ignore_errors=True)
