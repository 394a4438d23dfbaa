"""`/v1/chat/completions`, with RAG: features -> retrieve -> prompt -> generate.

1. Resolve the model (`rag/<model>` or a `retrieval` option asks for RAG) and apply the request limits.
2. Chain wake: when the LLM may be at zero, start waking it now, so its load overlaps steps 3-4.
3. Features: the online feature store's row for `user`, as a short system note (when a store is set).
4. Retrieve: embed the last user message, search the index, put the passages into a context message.
5. Generate: send the messages to the LLM and return once its first delta is there.
"""

from __future__ import annotations

import asyncio
from typing import Any

from deployments import rag
from deployments.flows.embeddings import check_texts
from deployments.flows.generation import Generation, OutcomeRecorder, llm_request
from deployments.model_router import ModelRouter
from deployments.openai_api import ApiError, ChatCompletionRequest, check_limits
from deployments.request_timeline import Timeline
from deployments.settings import AppSettings
from deployments.stage_client import EmbedderClient, RetrieverClient
from surge_core.feature_store import OnlineFeatureStore

ROUTE = "/v1/chat/completions"


class ChatFlow:
    def __init__(
        self,
        settings: AppSettings,
        router: ModelRouter,
        embedder: EmbedderClient,
        retriever: RetrieverClient,
        features: OnlineFeatureStore | None,
        outcomes: OutcomeRecorder,
    ) -> None:
        self.settings = settings
        self.router = router
        self.embedder = embedder
        self.retriever = retriever
        self.features = features
        self.outcomes = outcomes

    async def start(self, body: ChatCompletionRequest) -> Generation:
        route = self.router.llm_route(body.model)
        max_tokens = check_limits(body, self.settings.gateway)
        timeline = Timeline()
        wake = route.llm.maybe_wake(timeline)
        messages = [{"role": m.role, "content": m.text()} for m in body.messages]
        extra: dict[str, Any] = {}
        features = await self._user_features(body.user, timeline)
        if features is not None and body.user is not None:
            messages = [rag.features_message(body.user, features), *messages]
            extra["features"] = rag.prompt_features(features)
        hits: list[dict[str, Any]] = []
        if route.rag or body.retrieval is not None:
            hits = await self._retrieve(body, timeline)
            context_budget = max(400, (self.settings.llm.max_model_len - max_tokens) * 2)
            messages = [rag.context_message(hits, context_budget), *messages]
            extra["sources"] = rag.sources(hits)
        deltas = await route.llm.generate(llm_request(body, max_tokens, messages=messages), wake, timeline)
        prompt = "\n".join(m.text() for m in body.messages)
        recorded = self.outcomes.recorded(deltas, route=ROUTE, prompt=prompt, timeline=timeline, hits=hits)
        return Generation(model=body.model, deltas=recorded, timeline=timeline, extra=extra)

    async def _user_features(self, user: str | None, timeline: Timeline) -> dict[str, Any] | None:
        """The user's online features, when a store is configured and the request names a user."""
        if self.features is None or not user:
            return None
        features = await asyncio.to_thread(self.features.get, user)
        timeline.mark("features")
        return features

    async def _retrieve(self, body: ChatCompletionRequest, timeline: Timeline) -> list[dict[str, Any]]:
        question = body.last_user_text()
        check_texts([question], "messages", self.settings.embedder)
        options = body.retrieval
        top_k = (options.top_k if options and options.top_k else None) or self.settings.gateway.rag_top_k
        if top_k > self.settings.retriever.max_top_k:
            raise ApiError(
                400,
                f"retrieval.top_k {top_k} exceeds {self.settings.retriever.max_top_k}",
                param="retrieval.top_k",
            )
        embedded = await self.embedder.embed([question], timeline)
        timeline.query_embedding = embedded["embeddings"][0].tolist()
        where = options.filter if options else None
        return await self.retriever.search(timeline.query_embedding, top_k, where, timeline)
