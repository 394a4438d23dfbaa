"""The real gateway writes what the drift monitor's quality signals need into the inference log: a RAG
answer with its text and its retrieved passages (redacted), and a request refused at admission (401)."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from surge_core.kafka_settings import KafkaSettings
from surge_core.redaction import PROMPT_REDACTION
from tests.fixtures_serve import SurgeApp
from tests.kafka_helpers import read_topic, wait_for

pytestmark = pytest.mark.integration
ROUTE = "/v1/chat/completions"


def test_a_rag_answer_and_a_refused_request_reach_the_inference_log(
    surge_app: SurgeApp, app_broker: Any
) -> None:
    kafka = KafkaSettings(bootstrap_servers=app_broker.bootstrap_servers)

    def chat_records() -> list[dict[str, Any]]:
        return [r for m in read_topic(kafka, "inference-log") if (r := json.loads(m.value))["route"] == ROUTE]

    refused_before = sum(r["status_code"] == 401 for r in chat_records())
    body = {
        "model": "rag/tiny-llama",
        "messages": [{"role": "user", "content": "What is surge?"}],
        "max_tokens": 8,
    }
    refused = httpx.post(f"{surge_app.base_url}{ROUTE}", json=body, headers={"Authorization": "Bearer nope"})
    assert refused.status_code == 401
    # The stages may be at zero: a 503 with Retry-After while they start is the documented answer, so retry.
    deadline = time.monotonic() + 600
    while True:
        answered = httpx.post(
            f"{surge_app.base_url}{ROUTE}", json=body, headers=surge_app.headers(), timeout=600
        )
        if answered.status_code != 503 or time.monotonic() > deadline:
            break
        time.sleep(float(answered.headers.get("retry-after", "2")))
    assert answered.status_code == 200, answered.text
    answer = PROMPT_REDACTION.apply(answered.json()["choices"][0]["message"]["content"])

    def logged() -> bool:
        records = chat_records()
        return sum(r["status_code"] == 401 for r in records) > refused_before and any(
            r["status_code"] == 200 and r.get("answer") == answer for r in records
        )

    wait_for(logged, 60, "the answer and the refusal in the inference log", interval_s=1)
    record = next(r for r in chat_records() if r["status_code"] == 200 and r.get("answer") == answer)
    assert isinstance(record["sources"], list)  # a RAG request: [] when nothing matched, passages otherwise
    assert len(record["sources"]) == len(answered.json().get("sources", []))
    refusal = [r for r in chat_records() if r["status_code"] == 401][-1]
    assert refusal["principal"] is None and refusal["answer"] is None
