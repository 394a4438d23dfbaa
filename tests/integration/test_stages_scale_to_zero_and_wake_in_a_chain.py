"""Scale to zero: idle stages reach 0 replicas; a RAG request at zero succeeds and wakes LLM and Embedder
together (chain wake), which the response's timings prove; health probes don't wake anything."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.fixtures_serve import SurgeApp, replicas_running, wait_for_replicas

pytestmark = pytest.mark.integration


def test_idle_stages_reach_zero_and_a_rag_request_at_zero_succeeds_with_chain_wake(
    surge_app: SurgeApp,
) -> None:
    httpx.post(
        f"{surge_app.base_url}/v1/documents",
        json={"documents": [{"id": "wake/doc", "text": "Chain wake overlaps model loading with retrieval."}]},
        headers=surge_app.headers(),
        timeout=300,
    ).raise_for_status()

    assert wait_for_replicas("Embedder", lambda n: n == 0, timeout_s=90) == 0
    assert wait_for_replicas("LLMServer", lambda n: n == 0, timeout_s=90) == 0

    # Probes while at zero must not wake anything.
    for _ in range(3):
        assert httpx.get(f"{surge_app.base_url}/readyz", timeout=30).status_code == 200
        assert httpx.get(f"{surge_app.base_url}/healthz", timeout=30).status_code == 200
    assert replicas_running("Embedder") == 0 and replicas_running("LLMServer") == 0

    client = openai.OpenAI(base_url=f"{surge_app.base_url}/v1", api_key=surge_app.api_key, timeout=300)
    response = client.chat.completions.create(
        model="rag/tiny-llama",
        messages=[{"role": "user", "content": "What does chain wake overlap?"}],
        max_tokens=4,
    )
    assert response.model_extra["sources"][0]["doc_id"] == "wake/doc"
    timings = response.model_extra["surge"]["timings"]
    # Both stages were cold, and the request waited for them instead of failing.
    assert timings["embedder_cold_start_s"] > 0
    assert timings["llm_cold_start_s"] > 0
    # Chain wake: the LLM was asked to wake at arrival, not after retrieval ...
    assert timings["llm_wake_sent"] < timings["embedded"]
    # ... so its replica began loading before embedding and retrieval were done.
    assert timings["llm_replica_started"] < timings["retrieved"], timings
