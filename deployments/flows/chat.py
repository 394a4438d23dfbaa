"""`/v1/chat/completions`, with RAG: features -> retrieve -> prompt -> generate.

1. Resolve the model (`rag/<model>` or a `retrieval` option asks for RAG) and apply the request limits.
2. Chain wake: when the LLM may be at zero, start waking it now, so its load overlaps steps 3-4.
3. Features: the online feature store's row for `user` of the caller's tenant (when a store is set; a
   read slower than `feature_timeout_s` is dropped and the request answered without features).
4. Retrieve: embed the last user message, search the caller's tenant's documents, and put the passages in
   a delimited context block inside the last user message (never the system role: retrieved text is data).
5. Generate: send the messages to the LLM and return once its first delta is there. The LLM stage
   neutralises the model's special tokens in every message, so no text can become a control token.
"""

from __future__ import annotations

import asyncio
import logging
from functools import partial
from typing import Any

from deployments import rag
from deployments.flows.embeddings import check_texts
from deployments.flows.generation import Generation, OutcomeRecorder, llm_request, started
from deployments.flows.shadow import ShadowMirror, mirror, mirrored_when_done
from deployments.flows.system_prompts import with_system_prompt
from deployments.model_router import ModelRouter
from deployments.openai_api import ApiError, ChatCompletionRequest, check_limits
from deployments.principal import ANONYMOUS, Caller
from deployments.query_embedding import QueryEmbedder
from deployments.query_retrieval import QueryRetriever
from deployments.request_timeline import Timeline
from deployments.settings import AppSettings
from surge_core.feature_store import OnlineFeatureStore
from surge_core.tenancy import DEFAULT_TENANT

logger = logging.getLogger("ray.serve")

ROUTE = "/v1/chat/completions"


class ChatFlow:
    def __init__(
        self,
        settings: AppSettings,
        router: ModelRouter,
        embedder: QueryEmbedder,
        retriever: QueryRetriever,
        features: OnlineFeatureStore | None,
        outcomes: OutcomeRecorder,
        shadows: ShadowMirror | None = None,
    ) -> None:
        self.settings = settings
        self.router = router
        self.embedder = embedder
        self.retriever = retriever
        self.features = features
        self.outcomes = outcomes
        self.shadows = shadows

    async def start(
        self,
        body: ChatCompletionRequest,
        caller: Caller = ANONYMOUS,
        pinned: str | None = None,
        session: str | None = None,
    ) -> Generation:
        route = self.router.llm_route(body.model, sticky_key=session or body.user, pinned=pinned)
        wants_rag = route.rag or body.retrieval is not None
        if wants_rag:
            caller.principal.require("documents:read", param="retrieval")
        max_tokens = check_limits(body, self.settings.gateway)
        timeline = Timeline()
        wake = route.llm.maybe_wake(timeline)
        messages = [{"role": m.role, "content": m.text()} for m in body.messages]
        extra: dict[str, Any] = {}
        features = await self._user_features(body.user, caller.principal.tenant, timeline)
        hits: list[dict[str, Any]] = []
        if wants_rag:
            hits = await self._retrieve(body, caller.principal.tenant, timeline)
            extra["sources"] = rag.sources(hits)
        if features is not None:
            extra["features"] = rag.prompt_features(features)
        if wants_rag or features is not None:
            context_budget = max(400, (route.max_model_len - max_tokens) * 2)
            context = rag.context_block(hits if wants_rag else None, features, body.user, context_budget)
            messages = rag.with_context(messages, context)
        prompt = "\n".join(m.text() for m in body.messages)
        request = llm_request(body, max_tokens, messages=messages, lora_adapter=route.lora_adapter)
        # The shadow gets the request without the primary's template and applies its own.
        send_mirror = partial(mirror, self.shadows, route, request, ROUTE, prompt, caller)
        try:
            recorded = await started(
                route.llm.generate(with_system_prompt(request, route.system_prompt), wake, timeline),
                self.outcomes,
                route=ROUTE,
                prompt=prompt,
                timeline=timeline,
                hits=hits,
                caller=caller,
                version=route.version,
                alias=route.alias,
                request_id=request.request_id,  # a shadow record names it (`shadow_of`)
                prompt_version=route.prompt_version,
            )
        except ApiError:
            send_mirror()  # the shadow sees failed requests too
            raise
        if route.shadow is not None:
            recorded = mirrored_when_done(recorded, send_mirror)
        return Generation(
            model=body.model,
            deltas=recorded,
            timeline=timeline,
            extra=extra,
            version=route.version,
            prompt_version=route.prompt_version,
        )

    async def _user_features(
        self, user: str | None, tenant: str, timeline: Timeline
    ) -> dict[str, Any] | None:
        """The user's online features, when a store is configured and the request names a user.

        Users are the caller's tenant's: the store key is `tenant/user` (the bare `user` for the default
        tenant, whose `user` may then not contain `/`, or it could name another tenant's user). A read that
        takes longer than `feature_timeout_s` (the store is slow or gone) is dropped: the answer goes on
        without features.
        """
        if self.features is None or not user:
            return None
        key = feature_key(tenant, user)
        timeout_s = self.settings.gateway.feature_timeout_s
        try:
            features = await asyncio.wait_for(asyncio.to_thread(self.features.get, key), timeout_s)
        except TimeoutError:
            logger.warning("online features for a user took over %.2f s; answering without them", timeout_s)
            timeline.mark("features_timed_out")
            return None
        except Exception:
            logger.warning("online feature read failed; answering without features", exc_info=True)
            return None
        timeline.mark("features")
        return features

    async def _retrieve(
        self, body: ChatCompletionRequest, tenant: str, timeline: Timeline
    ) -> list[dict[str, Any]]:
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
        # The index searched is the one of the version the question was embedded for (same vector space).
        version = embedded.get("embedding_version")
        return await self.retriever.search(timeline.query_embedding, top_k, where, tenant, timeline, version)


def feature_key(tenant: str, user: str) -> str:
    """The online-store key of `user` of `tenant`: `acme` + `alice` -> `acme/alice`; default: `alice`."""
    if tenant == DEFAULT_TENANT:
        if "/" in user:
            raise ApiError(400, "user must not contain '/'", param="user")
        return user
    return f"{tenant}/{user}"
