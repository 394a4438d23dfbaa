"""`surge` reports bad input and an unreachable broker as one line on stderr with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.cli import main
from pipelines.producer import doc_id_for, read_records
from surge_core.records import DocumentUpsert
from surge_core.topics import DOCUMENTS, EVENTS

UNREACHABLE = ["--bootstrap-servers", "127.0.0.1:1", "--connect-timeout", "1"]


def _fails_with(capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert err.startswith("surge: error: ") and message in err, err


def test_missing_input_path(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    _fails_with(capsys, ["produce", "documents", str(tmp_path / "nope")], "no such file or folder")


def test_bad_jsonl_line_is_named_by_file_and_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "docs.jsonl"
    path.write_text(json.dumps({"doc_id": "a", "text": "ok"}) + "\n{broken\n")
    _fails_with(capsys, ["produce", "documents", str(path)], f"{path}:2: not JSON")


def test_schema_error_names_the_field(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text(json.dumps({"event_id": "e", "entity_id": "u", "event_type": "buy"}) + "\n")
    _fails_with(capsys, ["produce", "events", str(path)], f"{path}:1: timestamp")


def test_folder_without_documents(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "image.png").write_bytes(b"\x89PNG")
    _fails_with(capsys, ["produce", "documents", str(tmp_path)], "no non-empty .txt or .md files")


def test_unsupported_file_type(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "docs.csv"
    path.write_text("a,b\n")
    _fails_with(
        capsys, ["produce", "documents", str(path)], "expected a folder of .txt/.md files or a .jsonl"
    )


def test_unreachable_broker_when_producing(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("# hello")
    _fails_with(capsys, ["produce", "documents", str(tmp_path), *UNREACHABLE], "no Kafka broker reachable")


@pytest.mark.parametrize("command", [["topics", "list"], ["topics", "create"]])
def test_unreachable_broker_for_topic_commands(
    capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    _fails_with(capsys, [*command, *UNREACHABLE], "no Kafka broker reachable at 127.0.0.1:1")


def test_invalid_ingest_settings(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = tmp_path / "ingest.yaml"
    config.write_text("batch_size: 0\n")
    _fails_with(capsys, ["ingest", "--config", str(config)], "batch_size")


def test_the_console_entry_point_prints_no_traceback(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "produce", "documents", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"surge: error: {tmp_path / 'missing'}: no such file or folder"
    ]


def test_a_folder_becomes_one_document_per_file_keyed_by_relative_path(tmp_path: Path) -> None:
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "my file.md").write_text("# Title\nbody")
    (tmp_path / "a.txt").write_text("alpha")
    (tmp_path / "empty.txt").write_text("  \n")
    (tmp_path / "skip.pdf").write_bytes(b"%PDF")
    records = read_records(DOCUMENTS, tmp_path)
    assert records == [
        DocumentUpsert(doc_id="a.txt", text="alpha", metadata={"path": "a.txt"}),
        DocumentUpsert(
            doc_id="notes/my_file.md", text="# Title\nbody", metadata={"path": "notes/my file.md"}
        ),
    ]
    assert doc_id_for(Path("x/y z.md")) == "x/y_z.md"


def test_a_folder_cannot_be_produced_as_events(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("alpha")
    assert EVENTS.key_field == "entity_id"
    _fails_with(capsys, ["produce", "events", str(tmp_path)], "a folder can only be produced to documents")
