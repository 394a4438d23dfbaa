"""A replica that dies in the middle of a non-streamed generation: the client gets a clean OpenAI error
(502, `server_error`), and the request is still in the inference log, named by its principal and tenant
(never its key). The LLM replica is SIGKILLed while it runs the generation; the test waits for Serve to
answer again (after Serve replaced the replica; 503s with Retry-After meanwhile)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from typing import Any

import httpx
import pytest

from surge_core.kafka_settings import KafkaSettings
from tests.fixtures_serve import SurgeApp
from tests.kafka_helpers import read_topic, wait_for

pytestmark = pytest.mark.integration


def test_a_replica_killed_mid_generation_gives_a_502_and_the_request_is_logged(
    surge_app: SurgeApp, app_broker: Any
) -> None:
    from ray import serve

    llm = serve.get_deployment_handle("LLMServer", app_name="surge")
    pid = int(llm.wake.remote().result(timeout_s=300)["pid"])
    body = {"model": "tiny-llama", "prompt": "Once upon a time", "max_tokens": 250, "temperature": 1.0}
    result: dict[str, httpx.Response] = {}

    def post() -> None:
        result["response"] = httpx.post(
            f"{surge_app.base_url}/v1/completions",
            json=body,
            headers={"Authorization": "Bearer sk-acme-all"},
            timeout=300,
        )

    sender = threading.Thread(target=post)
    sender.start()
    deadline = time.monotonic() + 60
    while llm.wake.remote().result(timeout_s=30)["running_requests"] == 0:
        assert time.monotonic() < deadline and sender.is_alive(), "the generation never started"
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    sender.join(300)
    response = result["response"]
    print(f"\nreplica killed mid-generation -> {response.status_code} {response.text}")
    try:
        assert response.status_code in (502, 503), response.text
        assert response.json()["error"]["type"] in ("server_error", "overloaded_error")
        kafka = KafkaSettings(bootstrap_servers=app_broker.bootstrap_servers)

        def logged() -> list[dict[str, Any]]:
            records = [json.loads(m.value) for m in read_topic(kafka, "inference-log")]
            return [
                r for r in records if r.get("principal") == "acme-all" and r["route"] == "/v1/completions"
            ]

        wait_for(lambda: any(r["status_code"] == response.status_code for r in logged()), 60, "the record")
        record = next(r for r in logged() if r["status_code"] == response.status_code)
        assert record["tenant"] == "acme" and "sk-acme-all" not in json.dumps(record)
    finally:
        # Serve reports the stage UNHEALTHY until it has replaced the replica (the gateway answers 503 with
        # Retry-After meanwhile); within a few minutes requests succeed again.
        def answers() -> bool:
            again = httpx.post(f"{surge_app.base_url}/v1/completions", json={**body, "max_tokens": 1},
                               headers=surge_app.headers(), timeout=300)  # fmt: skip
            return again.status_code == 200

        wait_for(answers, 300, "the LLM stage to answer again", interval_s=5)
