"""A re-embedding to a new embedding version, with RAG answering throughout (real broker, real Ray Serve over
HTTP). The app answers from its base index (MiniLM, 384 dimensions) while `run_reembed` rebuilds version
`v2` from the compacted `documents` topic with a different embedding space; every RAG request during the
rebuild succeeds and cites the right document, and once v2 is complete the answers come from v2 (the
Embedder switched model and the Retriever index together, never back).

Only one embedding model ships offline here (all-MiniLM-L6-v2, `scripts/prepare_models.py`), so v2 is the
same model truncated to its first 256 dimensions: a different vector space and dimension, which is what a
model change means to the index."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from kafka import KafkaProducer

from pipelines.ingestion import IngestionSettings
from pipelines.reembed import ReembedStats, run_reembed
from surge_core.embedding import EmbeddingModelSettings
from surge_core.embedding_versions import CATALOG_FILE, VERSION_KEY
from surge_core.kafka_settings import KafkaSettings
from surge_core.topics import DOCUMENTS, TopicSpec
from tests.fixtures_serve import SurgeApp

pytestmark = pytest.mark.integration

FACTS = {
    "reembed/stromboli": (
        "Stromboli, an island volcano north of Sicily, has erupted every few minutes for centuries.",
        "Which island volcano erupts every few minutes?",
    ),
    "reembed/kimchi": (
        "Kimchi is napa cabbage fermented with chili, garlic and salted shrimp for weeks.",
        "How is kimchi fermented?",
    ),
    "reembed/tcp": (
        "TCP retransmits a segment when its acknowledgement does not arrive before the timeout.",
        "When does TCP retransmit a segment?",
    ),
}
# Documents only the topic holds (bulk for the rebuild to chew on while requests keep coming).
FILLER = 240


def _filler(i: int) -> str:
    return (
        f"Warehouse ledger entry {i}: pallet {i * 7 % 97} of crate batch {i} was counted on shelf {i % 13}."
    )


def _keep_warm(app: SurgeApp, path: str, body: dict[str, Any], stop: threading.Event) -> None:
    """A cheap call every second keeps one stage up: this test is about the version switch, and the session's
    app scales idle stages to zero after 15 s (that path has its own test). One thread per stage, so a stage
    still starting does not starve the other."""
    with httpx.Client(base_url=app.base_url, headers=app.headers(), timeout=300) as client:
        while not stop.wait(1.0):
            with contextlib.suppress(httpx.HTTPError):
                client.post(path, json=body)


def _rag(app: SurgeApp, question: str) -> tuple[int, dict[str, Any]]:
    response = httpx.post(
        f"{app.base_url}/v1/chat/completions",
        json={
            "model": "rag/tiny-llama",
            "messages": [{"role": "user", "content": question}],
            "max_tokens": 2,
        },
        headers=app.headers(),
        timeout=120,
    )
    return response.status_code, response.json() if response.status_code == 200 else {"error": response.text}


@pytest.mark.timeout(600)
def test_a_reembedding_to_a_new_embedding_version_with_rag_answering_throughout(
    surge_app: SurgeApp,
    kafka_settings: KafkaSettings,
    kafka_topic: Callable[[TopicSpec], TopicSpec],
    topic_prefix: str,
) -> None:
    index = Path(surge_app.settings.retriever.store.path)
    documents = [{"id": doc_id, "text": text} for doc_id, (text, _) in FACTS.items()]
    upsert = httpx.post(
        f"{surge_app.base_url}/v1/documents",
        json={"documents": documents},
        headers=surge_app.headers(),
        timeout=300,
    )
    assert upsert.status_code == 200, upsert.text

    spec = kafka_topic(DOCUMENTS)
    producer = KafkaProducer(**kafka_settings.kafka_python_config(), acks="all")
    try:
        records = [(doc_id, text) for doc_id, (text, _) in FACTS.items()]
        records += [(f"reembed/filler-{i}", _filler(i)) for i in range(FILLER)]
        for doc_id, text in records:
            value = {"op": "upsert", "doc_id": doc_id, "text": text}
            producer.send(spec.name, key=doc_id.encode(), value=json.dumps(value).encode())
        producer.flush()
    finally:
        producer.close()

    gateway = surge_app.settings.gateway
    settings = IngestionSettings.model_validate(
        {
            "kafka": {"bootstrap_servers": kafka_settings.bootstrap_servers},
            "topic_prefix": topic_prefix,
            "group_id": f"{topic_prefix}reembed",
            "batch_size": 16,
            "sink": {
                "kind": "direct",
                "store": {"backend": "embedded", "path": str(index)},
                "chunk_chars": gateway.chunk_chars,
                "chunk_overlap_chars": gateway.chunk_overlap_chars,
            },
        }
    )
    outcome: dict[str, Any] = {}

    def rebuild() -> None:
        try:
            outcome["stats"] = run_reembed(settings, "v2", EmbeddingModelSettings(truncate_dim=256))
        except BaseException as error:  # reported by the main thread
            outcome["error"] = error

    seen: list[tuple[str | None, str, str]] = []  # (embedding version, expected doc, top doc)
    failures: list[tuple[int, dict[str, Any]]] = []
    questions = [(doc_id, question) for doc_id, (_, question) in FACTS.items()]

    def ask(n: int) -> None:
        doc_id, question = questions[n % len(questions)]
        status, body = _rag(surge_app, question)
        if status != 200:
            failures.append((status, body))
            return
        top = body["sources"][0]
        seen.append((top["metadata"].get(VERSION_KEY), doc_id, top["doc_id"]))

    stop_warming = threading.Event()
    warmers = [
        threading.Thread(target=_keep_warm, args=(surge_app, path, body, stop_warming), daemon=True)
        for path, body in [
            ("/v1/embeddings", {"model": "all-MiniLM-L6-v2", "input": "warm"}),
            ("/v1/completions", {"model": "tiny-llama", "prompt": "hi", "max_tokens": 1}),
        ]
    ]
    for warmer in warmers:
        warmer.start()
    try:
        deadline = time.monotonic() + 300  # the stages may be starting from zero
        while _rag(surge_app, questions[0][1])[0] != 200 and time.monotonic() < deadline:
            time.sleep(1)
        job = threading.Thread(target=rebuild, name="reembed", daemon=True)
        job.start()
        asked = during = 0
        while job.is_alive():
            ask(asked)
            asked += 1
            during += job.is_alive()  # started and answered while the rebuild ran
        job.join()
        assert "error" not in outcome, outcome.get("error")
        stats: ReembedStats = outcome["stats"]
        deadline = time.monotonic() + 90
        while not (seen and seen[-1][0] == "v2") and time.monotonic() < deadline:
            ask(asked)
            asked += 1
        for _ in range(len(questions)):  # every question once more, from v2
            ask(asked)
            asked += 1

        print(
            f"\nre-embedding: {stats.chunks} chunks in {stats.seconds:.1f} s = {stats.chunks_per_s:.1f} chunks/s "
            f"({stats.passes} passes); {during} RAG requests answered during the rebuild"
        )
        assert failures == [], failures[:3]
        assert during >= 2, f"only {during} requests were answered while the rebuild ran"
        assert stats.activated and stats.chunks >= len(FACTS) + FILLER
        wrong = [(version, expected, top) for version, expected, top in seen if expected != top]
        assert wrong == [], wrong[:5]
        versions = [version for version, _, _ in seen]
        switched = versions.index("v2")
        assert set(versions[:switched]) <= {None}, "answers from the old index until the switch"
        assert set(versions[switched:]) == {"v2"}, "never back to the old index once switched"
    finally:
        # Leave the session's app on its base index for the tests that follow.
        (index / CATALOG_FILE).unlink(missing_ok=True)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            status, body = _rag(surge_app, questions[0][1])
            if status == 200 and body["sources"][0]["metadata"].get(VERSION_KEY) is None:
                break
            time.sleep(0.5)
        stop_warming.set()
        for warmer in warmers:
            warmer.join(timeout=70)
