"""Session fixtures: a real Kafka-protocol broker (noida-db), started once per test session.

- `kafka_broker`: the shared broker (a free port on 127.0.0.1, data in a session tmp dir). Tests isolate
  themselves with `topic_prefix` (unique topic names) and unique group ids, never by restarting it.
- `kafka_settings`: `KafkaSettings` pointing at it.
- `topic_prefix`: a fresh prefix per test.
- `private_kafka_broker`: a broker of the test's own, for tests that stop and restart the broker.
- `kafka_topic`: creates a topic under the test's prefix (`kafka_topic(DOCUMENTS)` -> the prefixed spec).
- `kafka_producer`: the project's kafka-python producer (acks=all, idempotent), closed at teardown.
- `spawn_ingestion`: starts `python -m pipelines.ingestion ...` subprocesses, killed at teardown.

Every broker is stopped by PID with SIGTERM at teardown.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kafka import KafkaProducer

from pipelines.broker import LocalBroker, free_port
from pipelines.producer import open_producer
from surge_core.kafka_admin import ensure_topics
from surge_core.kafka_settings import KafkaSettings
from surge_core.topics import TopicSpec
from tests.kafka_helpers import IngestionProcess


def _start(data_dir: Path) -> LocalBroker:
    # Another process on this machine may grab the port between the probe and the bind: try a few.
    last_error: Exception | None = None
    for _ in range(5):
        broker = LocalBroker(data_dir=data_dir, port=free_port())
        try:
            broker.start()
            return broker
        except Exception as error:
            last_error = error
            broker.stop()
    raise RuntimeError(f"could not start the test broker: {last_error}")


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    broker = _start(tmp_path_factory.mktemp("kafka"))
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def kafka_settings(kafka_broker: LocalBroker) -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=kafka_broker.bootstrap_servers)


@pytest.fixture
def topic_prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}."


@pytest.fixture
def kafka_topic(kafka_settings: KafkaSettings, topic_prefix: str) -> Callable[[TopicSpec], TopicSpec]:
    """Create `spec` (and its dead-letter topic) under this test's prefix; returns the prefixed spec."""

    def create(spec: TopicSpec) -> TopicSpec:
        prefixed = spec.with_prefix(topic_prefix)
        ensure_topics(kafka_settings, [prefixed])
        return prefixed

    return create


@pytest.fixture
def kafka_producer(kafka_settings: KafkaSettings) -> Iterator[KafkaProducer]:
    """The project's producer (`pipelines.producer.open_producer`: acks=all, idempotent)."""
    producer = open_producer(kafka_settings)
    try:
        yield producer
    finally:
        producer.close()


@pytest.fixture
def private_kafka_broker(tmp_path: Path) -> Iterator[LocalBroker]:
    broker = _start(tmp_path / "private-kafka")
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def spawn_ingestion(tmp_path: Path) -> Iterator[Callable[..., IngestionProcess]]:
    started: list[IngestionProcess] = []

    def spawn(name: str, *args: str, env: dict[str, str] | None = None) -> IngestionProcess:
        process = IngestionProcess(tmp_path / f"{name}.log", *args, env=env)
        started.append(process)
        return process

    yield spawn
    for process in started:
        if process.process.poll() is None:
            process.kill()
