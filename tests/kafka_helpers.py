"""Small helpers the Kafka integration tests share: read a whole topic, wait for a condition, run a
consumer loop in a thread and watch its commits and dead letters."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from surge_core.kafka_settings import KafkaSettings

REPO_ROOT = Path(__file__).resolve().parents[1]


def read_topic(kafka: KafkaSettings, topic: str, timeout_s: float = 30.0) -> list[Any]:
    """Every message of `topic` from the beginning up to its current end (no group, nothing committed)."""
    consumer = KafkaConsumer(**kafka.kafka_python_config(), enable_auto_commit=False, group_id=None)
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not tps:
            return []
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        messages: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < end[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic} did not reach its end within {timeout_s} s")
            for batch in consumer.poll(timeout_ms=500).values():
                messages.extend(batch)
        return messages
    finally:
        consumer.close()


def group_committed(kafka: KafkaSettings, group_id: str, topic: str) -> tuple[int, int]:
    """(records committed by the group, records in the topic), summed over partitions."""
    # A consumer that never subscribes reads the group's offsets without joining the group.
    consumer = KafkaConsumer(**kafka.kafka_python_config(), enable_auto_commit=False, group_id=group_id)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or set())]
        committed = sum(consumer.committed(tp) or 0 for tp in tps)
        return committed, sum(consumer.end_offsets(tps).values())
    finally:
        consumer.close(autocommit=False)


def ingestion_args(kafka: KafkaSettings, topic_prefix: str, group: str, **flags: object) -> list[str]:
    """`python -m pipelines.ingestion` arguments: the broker, the test's topic prefix and group, then each
    keyword as a flag (`index_path=p` -> `--index-path p`)."""
    args = [
        "--bootstrap-servers",
        kafka.bootstrap_servers,
        "--topic-prefix",
        topic_prefix,
        "--group-id",
        group,
    ]
    for name, value in flags.items():
        args += [f"--{name.replace('_', '-')}", str(value)]
    return args


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str, interval_s: float = 0.2) -> float:
    """Poll `condition` until true; returns the seconds waited, or fails the test naming `what`."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(interval_s)
    return time.monotonic() - started


class IngestionProcess:
    """`python -m pipelines.ingestion` as a real subprocess (stdout+stderr to a log file)."""

    def __init__(self, log_path: Path, *args: str, env: dict[str, str] | None = None) -> None:
        env = {
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            **(env or {}),
        }
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.started_at = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pipelines.ingestion", *args],
            cwd=REPO_ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def assert_running(self) -> bool:
        """True while it runs; fails the test (with its log) if it exited."""
        code = self.process.poll()
        assert code is None, f"ingestion exited with {code}:\n{self.log()[-3000:]}"
        return True

    def kill(self) -> None:
        """SIGKILL: no chance to finish or commit anything."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)
        self._log.close()

    def terminate(self, timeout_s: float = 60) -> int:
        """SIGTERM and wait for the graceful exit; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout_s)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait(10)
            self._log.close()
        return code


def metric_value(port: int, name: str, **labels: str) -> float | None:
    """One sample from a consumer's /metrics endpoint (None if absent or not answering)."""
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


class LoopInThread:
    """A consumer loop (`AtLeastOnceConsumer`) running in a thread of the test, against a real broker,
    with an observer that reads the group's committed offsets and the topic's dead letters."""

    def __init__(self, loop: Any, kafka: KafkaSettings, topic: str) -> None:
        self.loop = loop
        self.kafka = kafka
        self.topic = topic
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="loop-under-test", daemon=True)
        self._observer = KafkaConsumer(
            **kafka.kafka_python_config(), enable_auto_commit=False, group_id=loop.settings.group_id
        )
        self._dlq = KafkaConsumer(**kafka.kafka_python_config(), enable_auto_commit=False, group_id=None)
        self._dlq_tp = TopicPartition(f"{topic}.dlq", 0)
        self._dlq.assign([self._dlq_tp])
        self._dlq.seek_to_beginning(self._dlq_tp)
        self.letters: dict[tuple[int, int], Any] = {}  # (source partition, source offset) -> message

    def _run(self) -> None:
        try:
            self.loop.run()
        except BaseException as error:  # recorded: the test asserts the loop never died
            self.error = error
            raise

    def __enter__(self) -> LoopInThread:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.loop.stop()
        self.thread.join(60)
        self._observer.close(autocommit=False)
        self._dlq.close()

    def alive(self) -> bool:
        return self.thread.is_alive() and self.error is None

    def loop_assignment(self) -> set[Any]:
        """The partitions the loop's consumer owns now (empty before it joined)."""
        consumer = self.loop._consumer
        return set(consumer.assignment()) if consumer is not None else set()

    def committed(self, partition: int) -> int:
        return self._observer.committed(TopicPartition(self.topic, partition)) or 0

    def wait_committed_past(self, partition: int, offset: int, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while self.committed(partition) <= offset:
            assert self.alive(), f"the consumer loop died: {self.error!r}"
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"offset {offset} of partition {partition} not committed in {timeout_s} s"
                )
            time.sleep(0.02)

    def letter(self, partition: int, offset: int, timeout_s: float = 10) -> Any | None:
        """The dead letter of that source record (None if none arrived within timeout_s)."""
        from pipelines.dlq import parse_dlq_headers

        deadline = time.monotonic() + timeout_s
        while (partition, offset) not in self.letters and time.monotonic() < deadline:
            for batch in self._dlq.poll(timeout_ms=100).values():
                for message in batch:
                    headers = parse_dlq_headers(message.headers)
                    key = (int(headers["source-partition"]), int(headers["source-offset"]))
                    self.letters[key] = message
        return self.letters.get((partition, offset))


def index_counts(index: Path) -> tuple[int, int]:
    """(documents in an embedded index, chunk rows ever inserted into it): read straight from its SQLite
    file, so it works while (or after) a consumer process writes it. Every insert is logged in the
    `changes` table, and a replayed, unchanged document inserts nothing: inserts above the number of
    chunks mean a replay wrote a document again."""
    import sqlite3

    conn = sqlite3.connect(f"file:{index / 'index.sqlite3'}?mode=ro", uri=True, timeout=30)
    try:
        documents = conn.execute("SELECT count(DISTINCT doc_id) FROM chunks").fetchone()[0]
        inserts = conn.execute("SELECT count(*) FROM changes WHERE added = 1").fetchone()[0]
        return int(documents), int(inserts)
    finally:
        conn.close()
