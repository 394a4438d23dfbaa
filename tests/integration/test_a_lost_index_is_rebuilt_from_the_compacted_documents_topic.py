"""Recovery path: the index is deleted while the group's offsets are committed. The restarted ingestion
consumer sees an empty index under a group that has moved on and rebuilds it by replaying the compacted
`documents` topic; `surge reindex` rebuilds the same index into a fresh directory. Both end exact: the
latest version of every document, deleted ones absent."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import ConfigResource, ConfigResourceType

from surge_core.kafka_settings import KafkaSettings
from surge_core.store_settings import EmbeddedStoreSettings
from surge_core.topics import DOCUMENTS, TopicSpec
from surge_core.vector_store import open_vector_store
from tests.kafka_helpers import REPO_ROOT, IngestionProcess, group_committed, ingestion_args, wait_for

pytestmark = pytest.mark.integration

DOCS = 30


def _expected() -> dict[str, str]:
    return {f"d{i}": f"document {i}, version 2" for i in range(DOCS) if i % 5 != 0}


def _index_texts(path: Path) -> dict[str, str]:
    with open_vector_store(EmbeddedStoreSettings(path=path), 384) as store:
        return {
            f"d{i}": " ".join(c.text for c in chunks)
            for i in range(DOCS)
            if (chunks := store.document_chunks(f"d{i}"))
        }


@pytest.mark.timeout(300)
def test_an_index_deleted_under_committed_offsets_is_rebuilt_by_replay(
    kafka_settings: KafkaSettings,
    topic_prefix: str,
    tmp_path: Path,
    spawn_ingestion: Callable[..., IngestionProcess],
    kafka_topic: Callable[[TopicSpec], TopicSpec],
) -> None:
    spec = kafka_topic(DOCUMENTS)
    admin = KafkaAdminClient(**kafka_settings.kafka_python_config())
    try:
        described = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, spec.name)])
        assert "compact" in str(described), "documents must be created compacted"
    finally:
        admin.close()

    producer = KafkaProducer(**kafka_settings.kafka_python_config(), acks="all")
    try:
        for version in (1, 2):
            for i in range(DOCS):
                value = {"op": "upsert", "doc_id": f"d{i}", "text": f"document {i}, version {version}"}
                producer.send(spec.name, key=f"d{i}".encode(), value=json.dumps(value).encode())
        for i in range(0, DOCS, 5):  # every fifth document deleted: a delete record and a tombstone
            delete = {"op": "delete", "doc_id": f"d{i}"}
            producer.send(spec.name, key=f"d{i}".encode(), value=json.dumps(delete).encode())
            producer.send(spec.name, key=f"d{i}".encode(), value=None)
        producer.flush()
    finally:
        producer.close()
    total = DOCS * 2 + 2 * len(range(0, DOCS, 5))

    index = tmp_path / "index"
    group = f"{topic_prefix}ingestion"
    args = ingestion_args(kafka_settings, topic_prefix, group, index_path=index)
    committed = lambda: group_committed(kafka_settings, group, spec.name)[0]  # noqa: E731
    first = spawn_ingestion("first", *args)
    wait_for(lambda: first.assert_running() and committed() == total, 180, "every record committed")
    assert first.terminate() == 0
    assert _index_texts(index) == _expected()

    shutil.rmtree(index)  # the index is lost; the group's offsets stay at the end

    second = spawn_ingestion("second", *args)
    wait_for(
        lambda: second.assert_running() and "replayed" in second.log(),
        180,
        "the consumer to rebuild the index",
    )
    assert second.terminate() == 0
    assert "rebuilding it by replaying" in second.log()
    assert _index_texts(index) == _expected()
    assert committed() == total

    fresh = tmp_path / "reindexed"
    reindex = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "reindex", *args[:-1], str(fresh)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert reindex.returncode == 0, reindex.stderr[-2000:]
    assert "records replayed" in reindex.stdout, reindex.stdout
    assert _index_texts(fresh) == _expected()
