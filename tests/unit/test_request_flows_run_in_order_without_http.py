"""Each capability is a small flow that runs without HTTP: chat with RAG goes features -> retrieve -> prompt
-> generate, records its outcome once when the stream ends, and unknown models get a 404 from the router."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest

from deployments.flows import ChatFlow, CompletionFlow, DocumentFlow, EmbeddingFlow, OutcomeRecorder
from deployments.llm import GenerateRequest
from deployments.model_router import ModelRouter
from deployments.openai_api import (
    ApiError,
    ChatCompletionRequest,
    CompletionRequest,
    DocumentsRequest,
    EmbeddingRequest,
)
from deployments.request_timeline import Timeline
from deployments.settings import AppSettings

SETTINGS = AppSettings.model_validate({"llm": {"served_model_name": "m"}})


class Calls(list[str]):
    pass


class FakeEmbedder:
    def __init__(self, calls: Calls) -> None:
        self.calls = calls

    async def embed(self, texts: list[str], timeline: Timeline) -> dict[str, Any]:
        self.calls.append(f"embed:{len(texts)}")
        return {"embeddings": np.ones((len(texts), 4), dtype=np.float32), "tokens": 3 * len(texts)}


class FakeRetriever:
    def __init__(self, calls: Calls) -> None:
        self.calls = calls

    async def search(
        self,
        vector: list[float],
        top_k: int,
        where: Any,
        tenant: str,
        timeline: Timeline,
        embedding_version: str | None = None,
    ) -> list[dict[str, Any]]:
        self.calls.append(f"search:{top_k}")
        return [{"doc_id": "kb/etna", "chunk_index": 0, "text": "Etna is in Sicily.", "score": 0.9}]

    async def replace_documents(
        self,
        grouped: dict[str, list[dict[str, Any]]],
        versions: Any,
        tenant: str,
        embedding_version: str | None = None,
    ) -> dict[str, int]:
        self.calls.append(f"replace:{sorted(grouped)}:{versions}")
        return {"written": sum(len(v) for v in grouped.values()), "unchanged": 0, "deleted": 0, "fenced": 0}

    async def delete_documents(self, ids: list[str], versions: Any, tenant: str) -> int:
        self.calls.append(f"delete:{ids}:{versions}")
        return len(ids)


class FakeLLM:
    def __init__(self, calls: Calls) -> None:
        self.calls = calls
        self.requests: list[dict[str, Any]] = []

    def maybe_wake(self, timeline: Timeline) -> None:
        self.calls.append("wake")

    async def generate(
        self, request: GenerateRequest, wake: Any, timeline: Timeline
    ) -> AsyncIterator[dict[str, Any]]:
        self.calls.append("generate")
        # The flow sends a validated GenerateRequest (validated once, never again by the stage).
        self.requests.append(request.model_dump())

        async def deltas() -> AsyncIterator[dict[str, Any]]:
            for i, word in enumerate(["Sic", "ily"]):
                last = i == 1
                yield {
                    "text": word,
                    "finish_reason": "stop" if last else None,
                    "prompt_tokens": 7,
                    "completion_tokens": i + 1,
                }

        return deltas()


class FakeFeatures:
    def __init__(self, calls: Calls) -> None:
        self.calls = calls

    def get(self, user: str) -> dict[str, Any]:
        self.calls.append(f"features:{user}")
        return {"purchases": 3}


class Recorded:
    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.tokens: list[tuple[str, int, int]] = []

    def record(self, **fields: Any) -> None:
        self.records.append(fields)

    def tokens_for(self, *args: Any) -> None:
        self.tokens.append(args)


def _flows(calls: Calls, recorded: Recorded) -> tuple[ChatFlow, CompletionFlow, FakeLLM]:
    llm = FakeLLM(calls)
    router = ModelRouter.single("m", llm, "all-MiniLM-L6-v2")  # type: ignore[arg-type]
    metrics = type("M", (), {"tokens": lambda self, *a: recorded.tokens_for(*a)})()
    outcomes = OutcomeRecorder(recorded, metrics, "m")  # type: ignore[arg-type]
    chat = ChatFlow(
        SETTINGS, router, FakeEmbedder(calls), FakeRetriever(calls), FakeFeatures(calls), outcomes
    )  # type: ignore[arg-type]
    return chat, CompletionFlow(SETTINGS.gateway, router, outcomes), llm


def test_a_rag_chat_wakes_then_reads_features_then_retrieves_then_generates_with_the_context() -> None:
    calls, recorded = Calls(), Recorded()
    chat, _, llm = _flows(calls, recorded)
    body = ChatCompletionRequest.model_validate(
        {"model": "rag/m", "user": "u1", "messages": [{"role": "user", "content": "Where is Etna?"}]}
    )

    async def run() -> tuple[str, dict[str, Any], dict[str, Any]]:
        generation = await chat.start(body)
        text, last = await generation.collect()
        return text, last, generation.extra

    text, last, extra = asyncio.run(run())
    assert calls == ["wake", "features:u1", "embed:1", "search:4", "generate"]
    assert text == "Sicily" and last["finish_reason"] == "stop"
    assert [s["doc_id"] for s in extra["sources"]] == ["kb/etna"]
    prompt = llm.requests[0]["messages"]
    # Passages and features travel in a delimited block of the user's message, never in the system role.
    assert [m["role"] for m in prompt] == ["user"]
    assert "Etna is in Sicily." in prompt[0]["content"] and '"purchases": 3' in prompt[0]["content"]
    assert prompt[0]["content"].endswith("\n\nWhere is Etna?")
    assert len(recorded.records) == 1 and recorded.records[0]["status_code"] == 200
    assert recorded.records[0]["retrieval_scores"] == [0.9]
    # The answer and its passages go to the log for the drift monitor's quality signals.
    assert recorded.records[0]["answer"] == "Sicily"
    assert recorded.records[0]["sources"] == ["Etna is in Sicily."]
    assert recorded.tokens == [("m", 7, 2)]


def test_a_stream_the_client_abandons_is_recorded_once_as_client_closed() -> None:
    calls, recorded = Calls(), Recorded()
    _, completion, _ = _flows(calls, recorded)
    body = CompletionRequest.model_validate({"model": "m", "prompt": "hi"})

    async def run() -> None:
        generation = await completion.start(body)
        deltas = generation.deltas
        await deltas.__anext__()
        await deltas.aclose()  # type: ignore[attr-defined]

    asyncio.run(run())
    assert [r["status_code"] for r in recorded.records] == [499]


def test_completions_refuse_rag_and_unknown_models_get_a_404_naming_what_is_served() -> None:
    calls, recorded = Calls(), Recorded()
    _, completion, _ = _flows(calls, recorded)
    with pytest.raises(ApiError, match="RAG is available on /v1/chat/completions"):
        asyncio.run(completion.start(CompletionRequest.model_validate({"model": "rag/m", "prompt": "hi"})))
    with pytest.raises(ApiError, match=r"model 'gpt-4' is not served here; use one of: 'm', 'm@1'") as caught:
        asyncio.run(completion.start(CompletionRequest.model_validate({"model": "gpt-4", "prompt": "hi"})))
    assert caught.value.status_code == 404
    assert calls == []  # nothing reached a stage


def test_embeddings_check_inputs_before_calling_the_embedder() -> None:
    calls = Calls()
    router = ModelRouter.single("m", FakeLLM(calls), "all-MiniLM-L6-v2")  # type: ignore[arg-type]
    flow = EmbeddingFlow(router, FakeEmbedder(calls), SETTINGS.embedder)  # type: ignore[arg-type]
    with pytest.raises(ApiError, match=r"input\[1\] is empty"):
        asyncio.run(
            flow.run(EmbeddingRequest.model_validate({"model": "all-MiniLM-L6-v2", "input": ["a", ""]}))
        )
    assert calls == []
    result = asyncio.run(
        flow.run(EmbeddingRequest.model_validate({"model": "all-MiniLM-L6-v2", "input": "a"}))
    )
    assert result.vectors.shape == (1, 4) and result.tokens == 3


def test_an_embeddings_request_of_one_text_goes_where_questions_go_and_several_go_to_the_embedder() -> None:
    stage, queries = Calls(), Calls()
    router = ModelRouter.single("m", FakeLLM(stage), "all-MiniLM-L6-v2")  # type: ignore[arg-type]
    flow = EmbeddingFlow(router, FakeEmbedder(stage), SETTINGS.embedder, None, FakeEmbedder(queries))  # type: ignore[arg-type]
    asyncio.run(flow.run(EmbeddingRequest.model_validate({"model": "all-MiniLM-L6-v2", "input": "a"})))
    assert queries == ["embed:1"] and stage == []
    asyncio.run(flow.run(EmbeddingRequest.model_validate({"model": "all-MiniLM-L6-v2", "input": ["a", "b"]})))
    assert queries == ["embed:1"] and stage == ["embed:2"]


def test_documents_are_chunked_embedded_once_and_replaced_then_deletes_follow_with_their_versions() -> None:
    calls = Calls()
    flow = DocumentFlow(SETTINGS.gateway, FakeEmbedder(calls), FakeRetriever(calls))  # type: ignore[arg-type]
    body = DocumentsRequest.model_validate(
        {
            "documents": [{"id": "a", "text": "x " * 600}, {"id": "b", "text": "short"}],
            "delete": ["c"],
            "versions": {"a": {"partition": 1, "offset": 7}, "c": {"partition": 0, "offset": 3}},
        }
    )
    result = asyncio.run(flow.run(body))
    versions = "{'a': (1, 7), 'c': (0, 3)}"
    assert calls[0].startswith("embed:") and calls[1:] == [
        f"replace:['a', 'b']:{versions}",
        f"delete:['c']:{versions}",
    ]
    assert result["upserted_documents"] == 2 and result["chunks_deleted"] == 1


def test_versions_must_name_ids_of_the_request() -> None:
    with pytest.raises(ValueError, match="neither upserted nor deleted"):
        DocumentsRequest.model_validate(
            {"documents": [{"id": "a", "text": "t"}], "versions": {"z": {"partition": 0, "offset": 1}}}
        )
