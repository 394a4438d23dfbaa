"""A stage whose replica cannot start (here: an LLM whose KV cache cannot fit the machine) fails once, and the
requests that need it get a 503 naming the stage and the error within seconds, not after the cold-start
timeout; /readyz says why. Other stages of the same app keep answering."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures_serve import SurgeApp, app_settings_for_tests

pytestmark = pytest.mark.integration

PREFIX = "/broken"
COLD_START_TIMEOUT_S = 300
CHAT = {"model": "tiny-llama", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


@pytest.fixture(scope="module")
def broken_app(
    surge_app: SurgeApp, tiny_llm_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SurgeApp]:
    """A second copy of the app whose LLM asks for a KV cache no machine has (10 TiB)."""
    from ray import serve

    from deployments.app import build_app

    base = app_settings_for_tests(tmp_path_factory.mktemp("broken-data"), tiny_llm_dir)
    settings = base.model_copy(
        update={
            "llm": base.llm.model_copy(update={"kv_cache_memory_mib": 10 * 1024 * 1024}),
            "gateway": base.gateway.model_copy(update={"cold_start_timeout_s": COLD_START_TIMEOUT_S}),
        }
    )
    serve.run(build_app(settings), name="surge-broken", route_prefix=PREFIX)
    yield SurgeApp(base_url=surge_app.base_url + PREFIX, api_key=surge_app.api_key, settings=settings)
    serve.delete("surge-broken")


def _chat(app: SurgeApp) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = httpx.post(
        f"{app.base_url}/v1/chat/completions",
        json=CHAT,
        headers=app.headers(),
        timeout=COLD_START_TIMEOUT_S + 30,
    )
    return response, time.monotonic() - started


def test_a_request_waiting_on_a_failing_stage_gets_a_503_naming_it_long_before_the_timeout(
    broken_app: SurgeApp,
) -> None:
    response, seconds = _chat(broken_app)
    assert response.status_code == 503, response.text
    assert int(response.headers["retry-after"]) >= 1
    message = response.json()["error"]["message"]
    assert "the llm stage cannot start" in message
    assert "llm.kv_cache_memory_mib" in message and "MiB" in message, message
    # The replica gets as far as importing vLLM before the memory check refuses; far from the 300 s timeout.
    assert seconds < 120, f"took {seconds:.1f} s"
    print(
        f"\nfirst request on a failing LLM: 503 after {seconds:.1f} s (cold-start timeout {COLD_START_TIMEOUT_S} s)"
    )


def test_later_requests_on_the_failed_stage_are_answered_at_once(broken_app: SurgeApp) -> None:
    _chat(broken_app)  # make sure the failure has happened
    response, seconds = _chat(broken_app)
    assert response.status_code == 503
    assert "llm.kv_cache_memory_mib" in response.json()["error"]["message"]
    assert seconds < 5, f"took {seconds:.1f} s"


def test_the_llm_failed_to_start_exactly_once_and_readyz_says_why(broken_app: SurgeApp) -> None:
    from ray import serve

    _chat(broken_app)
    ready = httpx.get(f"{broken_app.base_url}/readyz", headers=broken_app.headers(), timeout=30)
    assert ready.status_code == 503
    llm: dict[str, Any] = ready.json()["deployments"]["LLMServer"]
    # DEPLOY_FAILED when it never ran; UNHEALTHY when it had been healthy (at zero replicas) before.
    assert llm["status"] in ("DEPLOY_FAILED", "UNHEALTHY")
    assert "llm.kv_cache_memory_mib" in llm["message"]
    status = serve.status().applications["surge-broken"].deployments["LLMServer"]
    assert "failed to start 1 times in a row" in status.message, status.message


def test_stages_that_can_start_keep_answering_beside_the_failed_one(broken_app: SurgeApp) -> None:
    response = httpx.post(
        f"{broken_app.base_url}/v1/embeddings",
        json={"model": "all-MiniLM-L6-v2", "input": ["still here"]},
        headers=broken_app.headers(),
        timeout=COLD_START_TIMEOUT_S,
    )
    assert response.status_code == 200, response.text
