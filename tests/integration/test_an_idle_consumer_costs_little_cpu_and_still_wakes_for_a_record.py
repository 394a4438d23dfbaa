"""An idle ingestion consumer does not spin on a broker that answers empty fetches at once (the local one
does: a plain long poll cost ~40 % of a core), joins its group with short polls, and still picks up a record
produced after a quiet spell. The same consumer without the idle pause is the baseline of the same run."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from kafka import KafkaProducer

from surge_core.kafka_settings import KafkaSettings
from surge_core.records import DocumentUpsert
from surge_core.topics import DOCUMENTS, TopicSpec
from tests.kafka_helpers import IngestionProcess, group_committed, ingestion_args, wait_for

pytestmark = pytest.mark.integration

IDLE_S = 8.0


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _send(producer: KafkaProducer, spec: TopicSpec, doc_id: str) -> None:
    record = DocumentUpsert(doc_id=doc_id, text=f"A note called {doc_id}.")
    producer.send(spec.name, key=doc_id.encode(), value=record.model_dump_json().encode()).get(timeout=30)


def _idle_share(
    kafka: KafkaSettings,
    topic_prefix: str,
    tmp_path: Path,
    spawn_ingestion: Callable[..., IngestionProcess],
    spec: TopicSpec,
    producer: KafkaProducer,
    name: str,
    *extra: str,
) -> float:
    """Share of a core the consumer used while idle; asserts it consumes before and after the quiet spell."""
    group = f"{topic_prefix}{name}"
    consumer = spawn_ingestion(
        name, *extra, *ingestion_args(kafka, topic_prefix, group, index_path=tmp_path / name)
    )
    committed = lambda: group_committed(kafka, group, spec.name)[0]  # noqa: E731
    already = committed()
    _send(producer, spec, f"{name}-first")
    wait_for(lambda: consumer.assert_running() and committed() > already, 120, "the first record")
    before, started = _cpu_seconds(consumer.process.pid), time.monotonic()
    time.sleep(IDLE_S)
    share = (_cpu_seconds(consumer.process.pid) - before) / (time.monotonic() - started)
    _send(producer, spec, f"{name}-later")
    assert wait_for(lambda: committed() > already + 1, 60, "the record produced after a quiet spell") < 30
    consumer.terminate()
    return share


@pytest.mark.timeout(300)
def test_an_idle_consumer_uses_a_small_share_of_a_core_and_consumes_the_next_record(
    kafka_settings: KafkaSettings,
    topic_prefix: str,
    tmp_path: Path,
    spawn_ingestion: Callable[..., IngestionProcess],
    kafka_topic: Callable[[TopicSpec], TopicSpec],
    kafka_producer: KafkaProducer,
) -> None:
    spec = kafka_topic(DOCUMENTS)
    common = (kafka_settings, topic_prefix, tmp_path, spawn_ingestion, spec, kafka_producer)
    idle = _idle_share(*common, "idle")
    config = tmp_path / "no-idle-pause.yaml"
    config.write_text("idle_poll_interval_s: 0\n")
    busy = _idle_share(*common, "busy", "--config", str(config))
    print(f"\nidle ingestion consumer: {idle:.1%} of a core; {busy:.1%} without the idle pause")
    assert idle < 0.25, f"an idle consumer used {idle:.0%} of a core"
    assert idle < busy / 2, (idle, busy)
