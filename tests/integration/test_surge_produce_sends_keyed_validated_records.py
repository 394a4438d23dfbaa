"""`surge produce` / `surge topics` against the real broker, with both producer clients."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from surge_core.kafka_settings import KafkaSettings
from surge_core.records import DOCUMENT_RECORD, DocumentUpsert, EventRecord
from tests.kafka_helpers import REPO_ROOT, read_topic

pytestmark = pytest.mark.integration


def _surge(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipelines.cli", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("client", ["confluent", "kafka-python"])
def test_a_folder_is_produced_one_document_per_file_keyed_by_path(
    kafka_settings: KafkaSettings, topic_prefix: str, tmp_path: Path, client: str
) -> None:
    (tmp_path / "guides").mkdir()
    (tmp_path / "guides" / "setup.md").write_text("# Setup\nRun surge broker start.")
    (tmp_path / "faq.txt").write_text("Q: does it scale to zero?\nA: yes.")
    common = ["--bootstrap-servers", kafka_settings.bootstrap_servers, "--topic-prefix", topic_prefix]
    result = _surge("produce", "documents", str(tmp_path), "--client", client, *common)
    assert result.returncode == 0, result.stderr
    assert f"produced 2 records to {topic_prefix}documents" in result.stdout

    messages = read_topic(kafka_settings, f"{topic_prefix}documents")
    by_key = {m.key: DOCUMENT_RECORD.validate_json(m.value) for m in messages}
    assert by_key == {
        b"faq.txt": DocumentUpsert(
            doc_id="faq.txt", text="Q: does it scale to zero?\nA: yes.", metadata={"path": "faq.txt"}
        ),
        b"guides/setup.md": DocumentUpsert(
            doc_id="guides/setup.md",
            text="# Setup\nRun surge broker start.",
            metadata={"path": "guides/setup.md"},
        ),
    }


def test_events_keep_each_entitys_order_in_one_partition(
    kafka_settings: KafkaSettings, topic_prefix: str, tmp_path: Path
) -> None:
    path = tmp_path / "events.jsonl"
    now = datetime.now(UTC).isoformat()
    lines = [
        {
            "event_id": f"e{i}",
            "entity_id": f"user-{i % 3}",
            "event_type": "click",
            "timestamp": now,
            "value": i,
        }
        for i in range(300)
    ]
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    common = ["--bootstrap-servers", kafka_settings.bootstrap_servers, "--topic-prefix", topic_prefix]
    result = _surge("produce", "events", str(path), *common)
    assert result.returncode == 0, result.stderr

    messages = read_topic(kafka_settings, f"{topic_prefix}events")
    assert len(messages) == 300
    partitions: dict[bytes, set[int]] = {}
    order: dict[bytes, list[int]] = {}
    for m in sorted(messages, key=lambda m: (m.partition, m.offset)):
        record = EventRecord.model_validate_json(m.value)
        assert m.key == record.entity_id.encode()
        partitions.setdefault(m.key, set()).add(m.partition)
        order.setdefault(m.key, []).append(int(record.event_id[1:]))
    assert all(len(p) == 1 for p in partitions.values()), "one entity's events must share a partition"
    assert all(ids == sorted(ids) for ids in order.values()), "one entity's events must stay in order"


def test_topics_create_is_idempotent_and_list_shows_partitions(
    kafka_settings: KafkaSettings, topic_prefix: str
) -> None:
    common = ["--bootstrap-servers", kafka_settings.bootstrap_servers, "--topic-prefix", topic_prefix]
    first = _surge("topics", "create", *common)
    again = _surge("topics", "create", *common)
    assert first.returncode == again.returncode == 0, first.stderr + again.stderr
    assert f"{topic_prefix}documents.dlq" in first.stdout
    assert "nothing (all topics exist)" in again.stdout
    listing = dict(line.split("\t") for line in _surge("topics", "list", *common).stdout.splitlines())
    assert listing[f"{topic_prefix}documents"] == "4"
    assert listing[f"{topic_prefix}documents.dlq"] == "1"
    assert listing[f"{topic_prefix}inference-log"] == "2"
    assert f"{topic_prefix}drift-alerts.dlq" not in listing  # not consumed: no dead-letter topic
