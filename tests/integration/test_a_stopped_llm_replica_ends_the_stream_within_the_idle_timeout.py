"""A hung LLM replica mid-stream: the LLM replica's process is SIGSTOPped after the first streamed token;
the client still gets an error event and `data: [DONE]` within the gateway's stream idle timeout (15 s in
the test app), instead of a connection that hangs forever. The replica is resumed (SIGCONT) afterwards."""

from __future__ import annotations

import json
import os
import signal
import time

import httpx
import pytest

from tests.fixtures_serve import SurgeApp

pytestmark = pytest.mark.integration


def llm_replica_pids() -> list[int]:
    """The LLM replica's process (the test app runs at most one LLM replica)."""
    from ray import serve

    info = serve.get_deployment_handle("LLMServer", app_name="surge").wake.remote().result(timeout_s=300)
    return [int(info["pid"])]


def test_a_sigstopped_llm_replica_gives_an_error_event_and_done_within_the_idle_timeout(
    surge_app: SurgeApp,
) -> None:
    idle_s = surge_app.settings.gateway.stream_idle_timeout_s
    warm = {"model": "tiny-llama", "prompt": "warm", "max_tokens": 1}
    assert httpx.post(f"{surge_app.base_url}/v1/completions", json=warm, headers=surge_app.headers(),
                      timeout=300).status_code == 200  # fmt: skip
    pids = llm_replica_pids()
    assert pids, "no running LLMServer replica found"
    body = {
        "model": "tiny-llama",
        "messages": [{"role": "user", "content": "Tell me a very long story."}],
        "max_tokens": 250,
        "temperature": 1.0,
        "seed": 7,
        "stream": True,
    }
    events: list[str] = []
    stopped_at: float | None = None
    try:
        with httpx.stream("POST", f"{surge_app.base_url}/v1/chat/completions", json=body,
                          headers=surge_app.headers(), timeout=120) as response:  # fmt: skip
            assert response.status_code == 200
            for line in response.iter_lines():
                if not line.startswith("data: "):
                    continue
                events.append(line[len("data: ") :])
                if stopped_at is None and len(events) >= 2:
                    for pid in pids:
                        os.kill(pid, signal.SIGSTOP)
                    stopped_at = time.monotonic()
        ended_at = time.monotonic()
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    assert stopped_at is not None
    assert events[-1] == "[DONE]"
    finished = [
        json.loads(e) for e in events[:-1] if json.loads(e).get("choices", [{}])[0].get("finish_reason")
    ]
    if finished:
        pytest.skip("the generation finished before the replica was stopped")
    error = json.loads(events[-2])
    print(f"\nstopped -> [DONE] in {ended_at - stopped_at:.1f} s (idle timeout {idle_s:g} s): {error}")
    assert error["error"]["type"] == "server_error" and "sent nothing" in error["error"]["message"]
    assert ended_at - stopped_at < idle_s + 5
