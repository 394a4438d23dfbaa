"""A new user's first contact: `make run` from the checkout with the default serve config, the official
`openai` client, a document and an event produced with plain kafka-python, then `make stop`.

This is the test that failed on a fresh machine before (no Ray token outside ~/.ray, an LLM whose KV cache
depended on free memory): it runs the README's commands themselves, on their fixed ports, not a test variant
of the app. It is ordered first in the session (marker `first_contact`) so the stack has the machine's cores
to itself, and stops everything it started before the rest of the suite begins.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
RUN_DIR = REPO_ROOT / ".run"
BASE_URL = "http://127.0.0.1:8000"
BOOTSTRAP = "127.0.0.1:9092"
STACK_PORTS = (8000, 9092, 6380, 8080, 9464, 9465)
MODEL = "smollm2-135m-instruct"
READY_TIMEOUT_S = 900  # SmolLM2 is converted from its wheel on a fresh clone before the stack starts

pytestmark = [pytest.mark.integration, pytest.mark.first_contact]

T = TypeVar("T")


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _eventually(probe: Callable[[], T | None], timeout_s: float, what: str, interval_s: float = 2) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout_s:.0f} s")
        time.sleep(interval_s)


@dataclass
class Stack:
    process: subprocess.Popen[str]
    log: Path
    api_key: str
    ready_after_s: float
    ray_session: str
    ray_sid: str
    component_pids: dict[str, int]

    def log_tail(self) -> str:
        return self.log.read_text()[-4000:]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    busy = [port for port in STACK_PORTS if _listening(port)]
    if busy:
        pytest.fail(f"ports {busy} are in use: stop what holds them (`make stop`) before running this test")
    log = tmp_path_factory.mktemp("make-run") / "make-run.log"
    env = {**os.environ, "SURGE_FEATURE_JOB_INTERVAL_S": "5"}
    env.pop("SURGE_API_KEYS", None)
    started = time.monotonic()
    with log.open("w") as out:
        process = subprocess.Popen(
            ["make", "run"],
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
    try:
        _eventually(
            lambda: (
                True if "surge is serving" in log.read_text() else None if process.poll() is None else False
            ),
            READY_TIMEOUT_S,
            "`make run` printing its banner",
            interval_s=1,
        )
        assert process.poll() is None, f"`make run` exited early:\n{log.read_text()[-4000:]}"
        ready_after_s = time.monotonic() - started
        pids = {
            name: int((RUN_DIR / f"{name}.pid").read_text()) for name in ("ingest", "drift", "feature-job")
        }
        yield Stack(
            process=process,
            log=log,
            api_key=(RUN_DIR / "api-key").read_text().strip(),
            ready_after_s=ready_after_s,
            ray_session=(RUN_DIR / "ray-session").read_text().strip(),
            ray_sid=(RUN_DIR / "ray.sid").read_text().strip(),
            component_pids=pids,
        )
    finally:
        if process.poll() is None:
            subprocess.run(["make", "stop"], cwd=REPO_ROOT, env=env, timeout=120, check=False)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def client(stack: Stack) -> Any:
    from openai import OpenAI

    return OpenAI(base_url=f"{BASE_URL}/v1", api_key=stack.api_key, timeout=600, max_retries=0)


def test_make_run_says_serving_only_once_readyz_answers(stack: Stack) -> None:
    import httpx

    text = stack.log.read_text()
    assert "app ready on" in text and text.index("app ready on") < text.index("surge is serving")
    assert httpx.get(f"{BASE_URL}/readyz", timeout=10).status_code == 200
    for component in ("ingestion", "drift monitor", "feature job"):
        assert component in text, f"the banner does not list the {component}"
    for port in (8080, 9464, 9465):
        assert f"http://127.0.0.1:{port}/metrics" in text
    print(f"\nmake run -> ready in {stack.ready_after_s:.1f} s")


def test_models_and_embeddings_answer_through_the_openai_client(client: Any) -> None:
    ids = {m.id for m in client.models.list().data}
    assert {MODEL, f"rag/{MODEL}", "all-MiniLM-L6-v2"} <= ids
    vectors = client.embeddings.create(model="all-MiniLM-L6-v2", input=["hello", "world"]).data
    assert len(vectors) == 2 and len(vectors[0].embedding) == 384


def test_the_first_chat_wakes_the_llm_from_zero_then_streaming_works(client: Any) -> None:
    started = time.monotonic()
    reply = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Say hello."}], max_tokens=16
    )
    first_chat_s = time.monotonic() - started
    assert reply.choices[0].message.content
    assert "llm_cold_start_s" in reply.model_extra["surge"]["timings"], "the LLM was not at zero"
    print(f"\nfirst chat from zero: {first_chat_s:.1f} s")
    stream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Count to five."}], max_tokens=16, stream=True
    )
    pieces = [chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices]
    assert "".join(pieces)


def test_a_document_produced_with_kafka_python_is_cited_by_rag(client: Any) -> None:
    from kafka import KafkaProducer

    suffix = uuid.uuid4().hex[:8]
    doc_id = f"newcomer/{suffix}"
    # A name of its own per run: a checkout that ran this before holds the same fact under older ids in
    # its index (.cache/surge), and they would fill the top-k.
    fact = f"The Zorblax-{suffix} lighthouse stands on the island of Quillon and is painted violet."
    producer = KafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all")
    record = {"op": "upsert", "doc_id": doc_id, "text": fact, "metadata": {"source": "newcomer"}}
    producer.send("documents", key=doc_id.encode(), value=json.dumps(record).encode()).get(timeout=30)
    producer.close()

    def cited() -> list[str] | None:
        reply = client.chat.completions.create(
            model=f"rag/{MODEL}",
            messages=[{"role": "user", "content": f"What colour is the Zorblax-{suffix} lighthouse?"}],
            max_tokens=24,
        )
        ids = [source["doc_id"] for source in reply.model_extra.get("sources", [])]
        return ids if doc_id in ids else None

    assert doc_id in _eventually(cited, 180, f"{doc_id} among the RAG sources")


def test_an_event_reaches_the_online_feature_store(stack: Stack) -> None:
    from kafka import KafkaProducer

    from surge_core.feature_store import SqliteOnlineStoreSettings, open_online_store

    entity = f"user-{uuid.uuid4().hex[:8]}"
    event = {
        "event_id": uuid.uuid4().hex,
        "entity_id": entity,
        "event_type": "purchase",
        "timestamp": datetime.now(UTC).isoformat(),
        "value": 12.5,
        "text": "bought a violet lamp",
    }
    producer = KafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all")
    producer.send("events", key=entity.encode(), value=json.dumps(event).encode()).get(timeout=30)
    producer.close()
    cache = Path(
        os.environ.get("SURGE_CACHE_DIR") or REPO_ROOT / ".cache" / "surge"
    )  # as the Makefile sets it
    store_path = cache / "features.sqlite"

    def features() -> dict[str, Any] | None:
        if not store_path.exists():
            return None
        store = open_online_store(SqliteOnlineStoreSettings(path=store_path))
        try:
            return store.get(entity)
        finally:
            store.close()

    row = _eventually(features, 300, f"features of {entity} in the online store", interval_s=3)
    assert row, row


def test_the_drift_monitor_consumes_the_inference_log() -> None:
    from surge_core.kafka_settings import KafkaSettings
    from tests.kafka_helpers import group_committed

    kafka = KafkaSettings(bootstrap_servers=BOOTSTRAP)

    def caught_up() -> bool | None:
        committed, produced = group_committed(kafka, "surge-drift-monitor", "inference-log")
        return True if produced > 0 and committed == produced else None

    _eventually(caught_up, 120, "the drift monitor committing every inference-log record")


def test_make_stop_ends_every_process_frees_every_port_and_returns_the_terminal(stack: Stack) -> None:
    started = time.monotonic()
    subprocess.run(["make", "stop"], cwd=REPO_ROOT, timeout=180, check=True)
    assert stack.process.wait(timeout=60) == 0, stack.log_tail()
    print(f"\nmake stop: {time.monotonic() - started:.1f} s")
    assert "surge: stopped" in stack.log.read_text()
    assert [port for port in STACK_PORTS if _listening(port)] == []
    ps = subprocess.run(["ps", "-eo", "pid=,sid=,args="], capture_output=True, text=True, check=True).stdout
    leftovers = [
        line
        for line in ps.splitlines()
        if line.split(None, 2)[1] == stack.ray_sid
        or stack.ray_session in line
        or int(line.split(None, 1)[0]) in stack.component_pids.values()
    ]
    assert leftovers == [], "\n".join(leftovers)
