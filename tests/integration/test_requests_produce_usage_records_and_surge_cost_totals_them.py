"""Cost attribution end to end: chat requests through the real app each publish one `usage` record (tenant,
model, version, tokens, stage seconds, priced), and `surge cost --since 1h` prints the right totals from them."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from surge_core.kafka_settings import KafkaSettings
from surge_core.records import UsageRecord
from tests.fixtures_serve import SurgeApp
from tests.kafka_helpers import REPO_ROOT, read_topic, wait_for

pytestmark = pytest.mark.integration
TENANT_KEY = "sk-globex-all"  # tenant globex


def usage_records(kafka: KafkaSettings) -> list[UsageRecord]:
    return [UsageRecord.model_validate_json(m.value) for m in read_topic(kafka, "usage")]


def surge_cost(kafka: KafkaSettings) -> str:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines.cli",
            "cost",
            "--since",
            "1h",
            "--bootstrap-servers",
            kafka.bootstrap_servers,
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def row(table: str, model: str, tenant: str) -> list[str]:
    for line in table.splitlines():
        cells = line.split()
        if cells[:1] == [model] and len(cells) == 7 and cells[2] == tenant:
            return cells
    return []


@pytest.mark.timeout(1500)
def test_each_chat_request_publishes_a_usage_record_and_surge_cost_totals_them(
    surge_app: SurgeApp, app_broker: Any
) -> None:
    kafka = KafkaSettings(bootstrap_servers=app_broker.bootstrap_servers)

    def chat(question: str) -> httpx.Response:
        return httpx.post(
            f"{surge_app.base_url}/v1/chat/completions",
            json={
                "model": "tiny-llama",
                "messages": [{"role": "user", "content": question}],
                "max_tokens": 4,
            },
            headers={"Authorization": f"Bearer {TENANT_KEY}"},
            timeout=300,
        )

    # Wake the LLM first (a loaded machine may take longer than the cold-start timeout: retry its 503s).
    deadline = time.monotonic() + 900
    while chat("Hello").status_code == 503 and time.monotonic() < deadline:
        pass
    # Records are stamped when the request ends, before its response is sent: later ones are this test's.
    started = datetime.now(UTC)
    tokens_in = tokens_out = 0
    for question in ("Where is Etna?", "What is Stromboli?", "Name a volcano."):
        answer = chat(question)
        assert answer.status_code == 200, answer.text
        tokens_in += answer.json()["usage"]["prompt_tokens"]
        tokens_out += answer.json()["usage"]["completion_tokens"]

    def mine() -> list[UsageRecord]:
        return [r for r in usage_records(kafka) if r.tenant == "globex" and r.timestamp > started]

    wait_for(lambda: len(mine()) >= 3, 60, "three new usage records of tenant globex")
    new = mine()
    assert len(new) == 3
    for record in new:
        assert (record.model, record.version, record.principal) == ("tiny-llama", "1", "globex-all")
        assert record.route == "/v1/chat/completions" and record.status_code == 200
        assert (
            record.stage_seconds["llm"] > 0 and record.stage_seconds["gateway"] >= record.stage_seconds["llm"]
        )
        assert record.cost_usd > 0
        assert set(record.stage_usd_per_hour) >= {"gateway", "llm"}
    assert sum(r.tokens_in for r in new) == tokens_in
    assert sum(r.tokens_out for r in new) == tokens_out

    table = surge_cost(kafka)
    print("\n" + table)
    everything = [r for r in usage_records(kafka) if (r.tenant, r.model) == ("globex", "tiny-llama")]
    cells = row(table, "tiny-llama", "globex")
    assert cells, table
    assert int(cells[3]) == len(everything)
    assert int(cells[4]) == sum(r.tokens_in for r in everything)
    assert int(cells[5]) == sum(r.tokens_out for r in everything)
    assert float(cells[6]) == pytest.approx(sum(r.cost_usd for r in everything), abs=2e-6)
    always_on = re.search(
        r"tiny-llama@1: charged [\d.]+ USD over 1 h; always-on .* would have cost ([\d.]+) USD", table
    )
    assert always_on is not None, table
    # One replica of every stage any of the model's requests used, for the whole hour.
    per_hour = max(
        sum(r.stage_usd_per_hour.values()) for r in usage_records(kafka) if r.model == "tiny-llama"
    )
    assert float(always_on.group(1)) == pytest.approx(per_hour, abs=1e-4)


@pytest.mark.timeout(600)
def test_a_document_write_publishes_a_usage_record_under_the_embedding_model(
    surge_app: SurgeApp, app_broker: Any
) -> None:
    kafka = KafkaSettings(bootstrap_servers=app_broker.bootstrap_servers)
    started = datetime.now(UTC)

    def write() -> httpx.Response:
        return httpx.post(
            f"{surge_app.base_url}/v1/documents",
            json={"documents": [{"id": "kb/usage-etna", "text": "Mount Etna is in Sicily."}]},
            headers={"Authorization": f"Bearer {TENANT_KEY}"},
            timeout=300,
        )

    deadline = time.monotonic() + 300  # the Embedder may be waking from zero on a loaded machine
    while (written := write()).status_code == 503 and time.monotonic() < deadline:
        pass
    assert written.status_code == 200, written.text

    def mine() -> list[UsageRecord]:
        return [
            r
            for r in usage_records(kafka)
            if r.route == "/v1/documents" and r.tenant == "globex" and r.timestamp > started
        ]

    wait_for(lambda: len(mine()) >= 1, 60, "a usage record of the document write")
    (record,) = mine()
    assert (record.model, record.principal, record.status_code) == (
        surge_app.settings.embedder.model,
        "globex-all",
        200,
    )
    assert record.tokens_in > 0 and record.tokens_out == 0
    assert record.stage_seconds["embedder"] > 0 and "retriever" in record.stage_seconds
    assert record.cost_usd > 0
