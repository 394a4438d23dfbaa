"""The embedded store on one directory, shared by processes: the Retriever replica searching while Kafka
ingestion consumers (other processes) write. Real processes, real SQLite files, real FAISS."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

import surge_core.vector_store.embedded as embedded
from surge_core.store_settings import EmbeddedStoreSettings
from surge_core.vector_store import ChunkRecord, open_vector_store

REPO = Path(__file__).resolve().parents[2]
DIMS = 4

WRITER = """
import sys
from surge_core.store_settings import EmbeddedStoreSettings
from surge_core.vector_store import ChunkRecord, open_vector_store

path, prefix, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
store = open_vector_store(EmbeddedStoreSettings(path=path), 4)
for i in range(count):  # one transaction per document, interleaving with the other writer
    doc = f"{prefix}{i}"
    vector = [1.0, (i % 7) / 7, 0.5 if prefix == "p" else 0.0, 0.5 if prefix == "q" else 0.0]
    store.replace_documents({doc: [ChunkRecord(doc, 0, f"{doc} text", vector, {"writer": prefix})]})
print("done", flush=True)
"""


def run_writer(path: Path, prefix: str, count: int) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), prefix, str(count)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str]) -> None:
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err[-3000:]
    assert out.strip() == "done"


def test_a_write_from_another_process_is_visible_to_search(tmp_path: Path) -> None:
    reader = open_vector_store(EmbeddedStoreSettings(path=tmp_path), DIMS)
    assert reader.search([1, 0, 0, 0], 5) == []
    finish(run_writer(tmp_path, "p", 3))
    hits = reader.search([1, 0, 0.5, 0], 10)
    assert sorted(hit.doc_id for hit in hits) == ["p0", "p1", "p2"]
    finish(run_writer(tmp_path, "p", 1))  # rewrites p0 with identical content: nothing changes
    assert len(reader.search([1, 0, 0.5, 0], 10)) == 3
    reader.close()


def test_two_processes_writing_at_once_lose_nothing(tmp_path: Path) -> None:
    reader = open_vector_store(EmbeddedStoreSettings(path=tmp_path), DIMS)
    writers = [run_writer(tmp_path, "p", 100), run_writer(tmp_path, "q", 100)]
    for writer in writers:
        finish(writer)
    assert reader.count_documents() == 200
    hits = reader.search([1, 0, 0, 1], 200)
    assert len(hits) == 200
    assert [hit.metadata["writer"] for hit in hits[:100]] == ["q"] * 100  # q leans towards the query
    assert len(reader.search([1, 0, 0, 1], 200, where={"writer": "p"})) == 100
    reader.close()


def test_a_write_is_on_disk_when_the_call_returns(tmp_path: Path) -> None:
    # The writer is killed with SIGKILL right after replace_documents returns: no clean close, no atexit.
    code = WRITER.replace('print("done", flush=True)', "import os; os.kill(os.getpid(), 9)")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path), "k", "5"], cwd=REPO, env=env, timeout=120, check=False
    )
    assert result.returncode == -signal.SIGKILL
    store = open_vector_store(EmbeddedStoreSettings(path=tmp_path), DIMS)
    assert store.count_chunks() == 5
    assert len(store.search([1, 0, 0, 0], 10)) == 5
    store.close()


def test_a_reader_behind_a_pruned_change_log_rebuilds_its_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(embedded, "CHANGES_KEPT", 3)
    reader = open_vector_store(EmbeddedStoreSettings(path=tmp_path), DIMS)
    writer = open_vector_store(EmbeddedStoreSettings(path=tmp_path), DIMS)
    for i in range(10):
        writer.replace_documents({f"d{i}": [ChunkRecord(f"d{i}", 0, "t", [1, i, 0, 0])]})
    writer.delete_documents(["d0", "d1"])
    hits = reader.search([1, 0, 0, 0], 20)
    assert sorted(hit.doc_id for hit in hits) == [f"d{i}" for i in range(2, 10)]
    reader.close()
    writer.close()


def test_a_home_relative_path_is_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    store = open_vector_store(EmbeddedStoreSettings(path=Path("~/surge-index")), DIMS)
    store.replace_documents({"a": [ChunkRecord("a", 0, "t", [1, 0, 0, 0])]})
    store.close()
    assert (tmp_path / "surge-index" / embedded.DB_FILE).is_file()


def test_an_index_written_before_the_metadata_table_gets_it_filled_on_open(tmp_path: Path) -> None:
    store = open_vector_store(EmbeddedStoreSettings(path=tmp_path), DIMS)
    store.replace_documents({"a": [ChunkRecord("a", 0, "t", [1, 0, 0, 0], {"lang": "en", "flag": True})]})
    store.close()
    with sqlite3.connect(tmp_path / embedded.DB_FILE) as conn:  # what an older index looks like
        conn.execute("DELETE FROM chunk_meta")
        conn.execute("DELETE FROM store_settings WHERE key = 'schema_version'")
    reopened = open_vector_store(EmbeddedStoreSettings(path=tmp_path), DIMS)
    assert [hit.doc_id for hit in reopened.search([1, 0, 0, 0], 5, where={"lang": "en", "flag": True})] == [
        "a"
    ]
    assert reopened.search([1, 0, 0, 0], 5, where={"flag": 1}) == []
    reopened.close()
