"""The inference log never gets in a request's way: with the broker down, requests still succeed (a warning
is logged), and when the broker returns the queued records are delivered."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from kafka import KafkaConsumer

from surge_core.topics import INFERENCE_LOG
from tests.fixtures_serve import SurgeApp

pytestmark = pytest.mark.integration


def complete(app: SurgeApp) -> httpx.Response:
    return httpx.post(
        f"{app.base_url}/v1/completions",
        json={"model": "tiny-llama", "prompt": "secret prompt text", "max_tokens": 2},
        headers=app.headers(),
        timeout=300,
    )


def logged_records(bootstrap: str, at_least: int, timeout_s: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    records: dict[str, dict[str, Any]] = {}
    while time.monotonic() < deadline and len(records) < at_least:
        consumer = KafkaConsumer(
            INFERENCE_LOG.name,
            bootstrap_servers=bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            consumer_timeout_ms=2000,
        )
        for message in consumer:
            record = json.loads(message.value)
            records[record["request_id"]] = record
        consumer.close()
    return list(records.values())


def ray_logs_mention(text: str) -> bool:
    import ray

    session_dir = Path(ray._private.worker._global_node.get_session_dir_path())
    return any(text in path.read_text(errors="ignore") for path in (session_dir / "logs").rglob("worker-*"))


def test_requests_succeed_while_the_broker_is_down_and_records_flow_again_after(
    surge_app: SurgeApp, app_broker: Any
) -> None:
    assert complete(surge_app).status_code == 200
    before = logged_records(app_broker.bootstrap_servers, at_least=1, timeout_s=60)
    assert before, "no inference-log record arrived while the broker was up"
    sample = next(r for r in before if r["route"] == "/v1/completions")
    assert sample["model"] == "tiny-llama" and sample["status_code"] == 200
    assert sample["prompt"] is None, "raw prompts stay out of the log unless include_prompt is on"
    assert sample["completion_tokens"] > 0 and sample["latency_s"] > 0

    app_broker.stop()
    try:
        for _ in range(3):
            started = time.monotonic()
            assert complete(surge_app).status_code == 200
            assert time.monotonic() - started < 10, "a request waited on the dead broker"
        deadline = time.monotonic() + 30
        while not ray_logs_mention("inference-log: cannot deliver") and time.monotonic() < deadline:
            time.sleep(1)
        assert ray_logs_mention("inference-log: cannot deliver")
    finally:
        app_broker.start()

    assert complete(surge_app).status_code == 200
    after = logged_records(app_broker.bootstrap_servers, at_least=len(before) + 4, timeout_s=90)
    assert len(after) >= len(before) + 4, "records queued during the outage were not delivered"
