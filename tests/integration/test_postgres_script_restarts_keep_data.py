"""scripts/postgres.py: a real PostgreSQL + pgvector that keeps its data across stop/start, next to other
servers (the session's own) without colliding; an open pgvector store carries on after the restart."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from surge_core.store_settings import PgVectorStoreSettings
from surge_core.vector_store import ChunkRecord, open_vector_store

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "postgres.py"


def script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture
def data_dir() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="surge-pg-restart-"))
    yield root / "data"
    script("stop", "--data-dir", str(root / "data"))
    shutil.rmtree(root, ignore_errors=True)


def test_a_restarted_server_still_has_the_chunks(
    data_dir: Path, pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = time.monotonic()
    first = script("start", "--data-dir", str(data_dir))
    assert first.returncode == 0, first.stderr
    dsn = first.stdout.strip()
    assert dsn != pg_dsn and str(data_dir) in dsn  # its own socket, in its own data directory
    assert script("start", "--data-dir", str(data_dir)).stdout.strip() == dsn  # start is idempotent
    print(f"\ninitdb + start + create extension: {time.monotonic() - started:.2f}s (two starts)")

    monkeypatch.setenv("SURGE_RESTART_DSN", dsn)
    settings = PgVectorStoreSettings(dsn_env="SURGE_RESTART_DSN", table="restart_check")
    store = open_vector_store(settings, 3)
    store.replace_documents({"kept": [ChunkRecord("kept", 0, "survives a restart", [0.0, 1.0, 0.0])]})
    survivor = open_vector_store(settings, 3)  # stays open across the restart, like a serving replica
    assert len(survivor.search([0.0, 1.0, 0.0], 1)) == 1
    store.close()

    assert script("stop", "--data-dir", str(data_dir)).returncode == 0
    assert script("dsn", "--data-dir", str(data_dir)).returncode == 1
    with psycopg.connect(pg_dsn) as conn:  # the session's server is untouched
        assert conn.execute("SELECT 1").fetchone() == (1,)

    again = script("start", "--data-dir", str(data_dir))
    assert again.returncode == 0, again.stderr
    monkeypatch.setenv("SURGE_RESTART_DSN", again.stdout.strip())
    store = open_vector_store(settings, 3)
    hits = store.search([0.0, 1.0, 0.0], 1)
    store.close()
    assert [(hit.doc_id, hit.text) for hit in hits] == [("kept", "survives a restart")]
    # The pool notices its connections died with the old server and opens new ones: no error reaches callers.
    assert [hit.doc_id for hit in survivor.search([0.0, 1.0, 0.0], 1)] == ["kept"]
    survivor.close()
