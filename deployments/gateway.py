"""The Gateway: the ingress deployment, an OpenAI-compatible API in front of the Embedder, Retriever and LLM.

Routes: GET /v1/models, POST /v1/embeddings, POST /v1/chat/completions (stream or not, optional RAG),
POST /v1/completions, POST /v1/documents, GET /healthz, GET /readyz.

Scale to zero: a request to a stage with no replica waits (up to `cold_start_timeout_s`) while Serve
starts one. For RAG, the LLM is woken at the same moment as the Embedder ("chain wake"), so its model load
overlaps embedding and retrieval instead of following them. /healthz and /readyz never call a stage, so
probes don't keep scaled-to-zero stages awake.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from ray import serve
from ray.serve.handle import DeploymentHandle, DeploymentResponseGenerator

from deployments import rag
from deployments.chunking import chunk_text
from deployments.engines.base import InvalidRequestError
from deployments.gateway_metrics import GatewayMetrics
from deployments.http_guards import (
    PUBLIC_PATHS,
    ApiKeyAuth,
    BodySizeLimit,
    app_path,
    install_error_handlers,
)
from deployments.inference_logging import InferenceLogger
from deployments.openai_api import (
    ApiError,
    ChatCompletionRequest,
    CompletionRequest,
    DocumentsRequest,
    EmbeddingRequest,
    chat_chunk,
    check_limits,
    completion_chunk,
    new_id,
    usage,
)
from deployments.settings import AppSettings
from deployments.stage_client import StageStatusBoard, serve_app_status, wait_for_stage
from pipelines.feature_store import OnlineFeatureStore, open_online_store

api = FastAPI(title="surge", version="0.1.0", docs_url=None, redoc_url=None)
install_error_handlers(api)


@api.middleware("http")
async def _guard(request: Request, call_next: Any) -> Any:
    """Auth and per-request metrics for every route (health routes are public)."""
    gateway: Gateway = request.app.state.gateway
    started = time.perf_counter()
    route = app_path(request.scope)
    try:
        if route not in PUBLIC_PATHS:
            gateway.auth.check(request.headers.get("authorization"))
        response = await call_next(request)
    except ApiError as error:
        response = JSONResponse(error.body(), status_code=error.status_code, headers=error.headers)
    gateway.metrics.observe(route, response.status_code, time.perf_counter() - started)
    return response


class _Timeline:
    """Wall-clock marks of one request, returned as `surge.timings` (seconds since arrival)."""

    def __init__(self) -> None:
        self.arrived = time.time()
        self.marks: dict[str, float] = {}
        self.query_embedding: list[float] | None = None

    def mark(self, name: str) -> None:
        self.marks[name] = round(time.time() - self.arrived, 4)


# Helpers sit above the deployment class: Serve serialises the class when it is decorated, so names
# defined below it would be missing inside the replica.


def _idle_to_zero_seconds(settings: AppSettings) -> float:
    """How long after its last answer the LLM is certainly still up (infinite when kept warm)."""
    scaling = settings.llm.autoscaling
    if scaling.effective_min_replicas > 0:
        return float("inf")
    delay = scaling.downscale_to_zero_delay_s
    if delay is None:
        delay = scaling.downscale_delay_s
    # Leave a margin for the autoscaler's look-back window and clock skew.
    return max(0.0, delay - scaling.look_back_period_s)


def _model_error(exc: Exception) -> ApiError:
    """Map an engine failure: a request the engine can't serve (prompt too long) is the client's 400."""
    # Ray re-raises a replica's exception as a subclass of the original type, so isinstance works.
    if isinstance(exc, InvalidRequestError):
        cause = getattr(exc, "cause", exc)
        return ApiError(400, f"the model cannot serve this request: {cause}", param="messages")
    if isinstance(exc, ApiError):
        return exc
    return ApiError(502, "the model failed to generate a response", error_type="server_error")


# Stage name (in messages and metrics) -> the Serve deployment behind it (see deployments.app).
STAGE_DEPLOYMENTS = {"embedder": "Embedder", "retriever": "Retriever", "llm": "LLMServer"}


def _cancel_quietly(generator: DeploymentResponseGenerator) -> None:
    """Cancel a streamed call; `cancel()` re-raises the call's own error (e.g. DeploymentUnavailableError),
    which the caller has already translated."""
    with contextlib.suppress(Exception):
        generator.cancel()


def _sse(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"


def _encode_vector(vector: np.ndarray, encoding: str) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(np.asarray(vector, dtype=np.float32).tobytes()).decode()
    return [float(x) for x in vector]


@serve.deployment
@serve.ingress(api)
class Gateway:
    def __init__(
        self,
        settings: AppSettings,
        embedder: DeploymentHandle,
        retriever: DeploymentHandle,
        llm: DeploymentHandle,
    ) -> None:
        self.settings = settings.gateway
        self.app_settings = settings
        self.auth = ApiKeyAuth(settings.gateway)
        self.metrics = GatewayMetrics()
        self.embedder = embedder
        self.retriever = retriever
        self.llm = llm
        self.llm_model = settings.llm.served_model_name
        self.embedding_model = settings.embedder.model
        self.inference_log = InferenceLogger(settings.gateway.inference_log, self.llm_model)
        self.features: OnlineFeatureStore | None = (
            open_online_store(settings.gateway.online_features) if settings.gateway.online_features else None
        )
        # When did the LLM last answer? Within its idle-to-zero delay it is surely up, so no wake is sent.
        self._llm_last_seen = 0.0
        self._llm_idle_to_zero_s = _idle_to_zero_seconds(settings)
        app_name = serve.get_replica_context().app_name
        self.stage_status = StageStatusBoard(lambda: serve_app_status(app_name))
        api.state.gateway = self
        api.add_middleware(BodySizeLimit, max_bytes=settings.gateway.max_body_bytes)

    # ---------------------------------------------------------------- health

    @api.get("/healthz")
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/readyz")
    async def readyz(self) -> JSONResponse:
        """Ready when every deployment of the app is healthy; reads Serve's status, never calls a stage.

        A stage that cannot start (DEPLOY_FAILED, UNHEALTHY) makes the app not ready, and its entry says why.
        """
        status = await self.stage_status.snapshot()
        ready = status.get("status") == "RUNNING" and not any(
            d["status"] in ("DEPLOY_FAILED", "UNHEALTHY") for d in status.get("deployments", {}).values()
        )
        return JSONResponse(status, status_code=200 if ready else 503)

    # ---------------------------------------------------------------- models

    @api.get("/v1/models")
    async def models(self) -> dict[str, Any]:
        created = int(time.time())
        names = [self.llm_model, f"rag/{self.llm_model}", self.embedding_model]
        return {
            "object": "list",
            "data": [{"id": n, "object": "model", "created": created, "owned_by": "surge"} for n in names],
        }

    def _check_llm_model(self, model: str) -> None:
        if model != self.llm_model:
            raise ApiError(
                404,
                f"model {model!r} is not served here; use {self.llm_model!r} or 'rag/{self.llm_model}'",
                param="model",
                error_type="model_not_found",
            )

    # ---------------------------------------------------------------- embeddings

    @api.post("/v1/embeddings")
    async def embeddings(self, body: EmbeddingRequest) -> dict[str, Any]:
        if body.model != self.embedding_model:
            raise ApiError(
                404,
                f"embedding model {body.model!r} is not served; use {self.embedding_model!r}",
                param="model",
                error_type="model_not_found",
            )
        texts = body.texts
        self._check_texts(texts, "input")
        timeline = _Timeline()
        result = await self._embed(texts, timeline)
        vectors: np.ndarray = result["embeddings"]
        data = [
            {"object": "embedding", "index": i, "embedding": _encode_vector(v, body.encoding_format)}
            for i, v in enumerate(vectors)
        ]
        return {
            "object": "list",
            "data": data,
            "model": self.embedding_model,
            "usage": {"prompt_tokens": result["tokens"], "total_tokens": result["tokens"]},
        }

    def _check_texts(self, texts: list[str], field: str) -> None:
        limits = self.app_settings.embedder
        if not texts:
            raise ApiError(400, f"{field} must not be empty", param=field)
        if len(texts) > limits.max_inputs_per_request:
            raise ApiError(
                400, f"{field} has {len(texts)} items; at most {limits.max_inputs_per_request}", param=field
            )
        for i, text in enumerate(texts):
            if not text:
                raise ApiError(400, f"{field}[{i}] is empty", param=field)
            if len(text) > limits.max_input_chars:
                raise ApiError(
                    400,
                    f"{field}[{i}] is {len(text)} characters; the limit is {limits.max_input_chars}",
                    param=field,
                )

    async def _embed(self, texts: list[str], timeline: _Timeline) -> dict[str, Any]:
        result: dict[str, Any] = await self._bounded(lambda: self.embedder.embed.remote(texts), "embedder")
        self._account_cold_start("embedder", timeline, result.get("ready_at"))
        timeline.mark("embedded")
        return result

    # ---------------------------------------------------------------- documents

    @api.post("/v1/documents")
    async def documents(self, body: DocumentsRequest) -> dict[str, Any]:
        """Synchronous upsert (chunk, embed, index) and delete; returns what changed."""
        total = len(body.documents) + len(body.delete)
        if total == 0:
            raise ApiError(400, "give documents to upsert and/or ids to delete", param="documents")
        if total > self.settings.max_documents_per_request:
            raise ApiError(
                400,
                f"{total} documents in one request; at most {self.settings.max_documents_per_request}",
                param="documents",
            )
        upserted: dict[str, Any] = {"written": 0, "unchanged": 0, "deleted": 0}
        if body.documents:
            chunks = [
                (doc, index, text)
                for doc in body.documents
                for index, text in enumerate(
                    chunk_text(doc.text, self.settings.chunk_chars, self.settings.chunk_overlap_chars)
                )
            ]
            result = await self._embed([text for _, _, text in chunks], _Timeline())
            grouped: dict[str, list[dict[str, Any]]] = {doc.id: [] for doc in body.documents}
            for (doc, index, text), vector in zip(chunks, result["embeddings"], strict=True):
                grouped[doc.id].append(
                    {
                        "doc_id": doc.id,
                        "chunk_index": index,
                        "text": text,
                        "embedding": vector.tolist(),
                        "metadata": doc.metadata,
                    }
                )
            upserted = await self._bounded(
                lambda: self.retriever.replace_documents.remote(grouped), "retriever"
            )
        deleted = 0
        if body.delete:
            deleted = await self._bounded(
                lambda: self.retriever.delete_documents.remote(body.delete), "retriever"
            )
        return {
            "object": "documents.result",
            "upserted_documents": len(body.documents),
            "chunks_written": upserted["written"],
            "chunks_unchanged": upserted["unchanged"],
            "chunks_deleted": upserted["deleted"] + deleted,
        }

    # ---------------------------------------------------------------- completions

    @api.post("/v1/chat/completions")
    async def chat_completions(self, body: ChatCompletionRequest) -> Any:
        self._check_llm_model(body.base_model)
        max_tokens = check_limits(body, self.settings)
        timeline = _Timeline()
        llm_wake = self._maybe_wake_llm(timeline)
        messages = [{"role": m.role, "content": m.text()} for m in body.messages]
        extra: dict[str, Any] = {}
        features = await self._user_features(body.user, timeline)
        if features is not None and body.user is not None:
            messages = [rag.features_message(body.user, features), *messages]
            extra["features"] = rag.prompt_features(features)
        hits: list[dict[str, Any]] = []
        if body.wants_rag:
            hits = await self._retrieve(body, timeline)
            context_budget = max(400, (self.app_settings.llm.max_model_len - max_tokens) * 2)
            messages = [rag.context_message(hits, context_budget), *messages]
            extra["sources"] = rag.sources(hits)
        request = self._llm_request(body, max_tokens, messages=messages)
        completion_id = new_id("chatcmpl")
        stream = await self._start_generation(request, llm_wake, timeline)
        if body.stream:
            return StreamingResponse(
                self._chat_events(stream, body, completion_id, extra, timeline, hits),
                media_type="text/event-stream",
            )
        text, last = await self._collect(stream, timeline)
        self._log_inference(body, "/v1/chat/completions", timeline, last, hits, 200)
        return {
            "id": completion_id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": last["finish_reason"],
                    "logprobs": None,
                }
            ],
            "usage": usage(last["prompt_tokens"], last["completion_tokens"]),
            **extra,
            "surge": {"timings": timeline.marks},
        }

    @api.post("/v1/completions")
    async def completions(self, body: CompletionRequest) -> Any:
        self._check_llm_model(body.base_model)
        if body.wants_rag:
            raise ApiError(400, "RAG is available on /v1/chat/completions", param="model")
        max_tokens = check_limits(body, self.settings)
        timeline = _Timeline()
        llm_wake = self._maybe_wake_llm(timeline)
        request = self._llm_request(body, max_tokens, prompt=body.prompt)
        completion_id = new_id("cmpl")
        stream = await self._start_generation(request, llm_wake, timeline)
        if body.stream:
            return StreamingResponse(
                self._completion_events(stream, body, completion_id, timeline), media_type="text/event-stream"
            )
        text, last = await self._collect(stream, timeline)
        self._log_inference(body, "/v1/completions", timeline, last, [], 200)
        return {
            "id": completion_id,
            "object": "text_completion",
            "created": int(time.time()),
            "model": body.model,
            "choices": [{"index": 0, "text": text, "finish_reason": last["finish_reason"], "logprobs": None}],
            "usage": usage(last["prompt_tokens"], last["completion_tokens"]),
            "surge": {"timings": timeline.marks},
        }

    # ---------------------------------------------------------------- orchestration

    async def _user_features(self, user: str | None, timeline: _Timeline) -> dict[str, Any] | None:
        """The user's online features, when a store is configured and the request names a user."""
        if self.features is None or not user:
            return None
        features = await asyncio.to_thread(self.features.get, user)
        timeline.mark("features")
        return features

    async def _retrieve(self, body: ChatCompletionRequest, timeline: _Timeline) -> list[dict[str, Any]]:
        question = body.last_user_text()
        self._check_texts([question], "messages")
        embedded = await self._embed([question], timeline)
        options = body.retrieval
        top_k = (options.top_k if options and options.top_k else None) or self.settings.rag_top_k
        if top_k > self.app_settings.retriever.max_top_k:
            raise ApiError(
                400,
                f"retrieval.top_k {top_k} exceeds {self.app_settings.retriever.max_top_k}",
                param="retrieval.top_k",
            )
        where = options.filter if options else None
        timeline.query_embedding = embedded["embeddings"][0].tolist()
        hits: list[dict[str, Any]] = await self._bounded(
            lambda: self.retriever.search.remote(timeline.query_embedding, top_k, where), "retriever"
        )
        timeline.mark("retrieved")
        return hits

    def _llm_request(
        self,
        body: ChatCompletionRequest | CompletionRequest,
        max_tokens: int,
        *,
        messages: list[dict[str, str]] | None = None,
        prompt: str | None = None,
    ) -> dict[str, Any]:
        request: dict[str, Any] = {
            "max_tokens": max_tokens,
            "temperature": body.temperature,
            "top_p": body.top_p,
            "stop": body.stop_list,
            "seed": body.seed,
            "request_id": new_id("req"),
        }
        if messages is not None:
            request["messages"] = messages
        else:
            request["prompt"] = prompt
        return request

    def _maybe_wake_llm(self, timeline: _Timeline) -> asyncio.Task[None] | None:
        """Chain wake: if the LLM may be at zero, start bringing it up now, in parallel with the rest."""
        if not self.settings.chain_wake:
            return None
        if time.time() - self._llm_last_seen < self._llm_idle_to_zero_s:
            return None
        return asyncio.ensure_future(self._wake_llm(timeline))

    async def _wake_llm(self, timeline: _Timeline) -> None:
        timeline.mark("llm_wake_sent")
        info: dict[str, Any] = await self._bounded(self.llm.wake.remote, "llm")
        self._account_cold_start("llm", timeline, info.get("ready_at"))
        timeline.marks["llm_replica_started"] = round(info["replica_started_at"] - timeline.arrived, 4)
        timeline.mark("llm_ready")

    async def _start_generation(
        self, request: dict[str, Any], llm_wake: asyncio.Task[None] | None, timeline: _Timeline
    ) -> AsyncIterator[dict[str, Any]]:
        """Send the request and wait (bounded) for the first delta, so errors surface before a 200."""
        started: list[DeploymentResponseGenerator] = []

        def first_delta() -> Awaitable[dict[str, Any]]:
            # Ray answers a call to a deployment it gave up on with DeploymentUnavailableError, sometimes
            # from `.remote()` itself: the call is made inside the bounded wait so it is translated too.
            started.append(self.llm.options(stream=True).generate.remote(request))
            return started[0].__anext__()

        try:
            first = await self._bounded(first_delta, "llm")
        except StopAsyncIteration as exc:
            raise ApiError(500, "the model returned no output", error_type="server_error") from exc
        except BaseException as exc:
            for generator in started:
                _cancel_quietly(generator)
            if isinstance(exc, ApiError) or not isinstance(exc, Exception):
                raise
            raise _model_error(exc) from exc
        finally:
            if llm_wake is not None:
                await asyncio.gather(llm_wake, return_exceptions=True)
        timeline.mark("first_token")
        self._llm_last_seen = time.time()
        generator = started[0]

        async def deltas() -> AsyncIterator[dict[str, Any]]:
            yield first
            try:
                async for delta in generator:
                    yield delta
            finally:
                _cancel_quietly(generator)
                self._llm_last_seen = time.time()

        return deltas()

    async def _collect(
        self, stream: AsyncIterator[dict[str, Any]], timeline: _Timeline
    ) -> tuple[str, dict[str, Any]]:
        parts: list[str] = []
        last: dict[str, Any] = {}
        async for delta in stream:
            parts.append(delta["text"])
            last = delta
        timeline.mark("generated")
        return "".join(parts), last

    async def _chat_events(
        self,
        stream: AsyncIterator[dict[str, Any]],
        body: ChatCompletionRequest,
        completion_id: str,
        extra: dict[str, Any],
        timeline: _Timeline,
        hits: list[dict[str, Any]],
    ) -> AsyncIterator[str]:
        last: dict[str, Any] = {"prompt_tokens": 0, "completion_tokens": 0, "finish_reason": None}
        status = 200
        try:
            yield _sse(
                chat_chunk(completion_id, body.model, {"role": "assistant", "content": ""}, None, **extra)
            )
            async for delta in stream:
                last = delta
                yield _sse(
                    chat_chunk(completion_id, body.model, {"content": delta["text"]}, delta["finish_reason"])
                )
            timeline.mark("generated")
            if body.include_usage_in_stream:
                final = chat_chunk(completion_id, body.model, {}, None)
                final["choices"] = []
                final["usage"] = usage(last["prompt_tokens"], last["completion_tokens"])
                final["surge"] = {"timings": timeline.marks}
                yield _sse(final)
        except Exception as exc:  # the status line is gone; report the failure in-band
            status = 500
            yield _sse(_model_error(exc).body())
        yield "data: [DONE]\n\n"
        self._log_inference(body, "/v1/chat/completions", timeline, last, hits, status)

    async def _completion_events(
        self,
        stream: AsyncIterator[dict[str, Any]],
        body: CompletionRequest,
        completion_id: str,
        timeline: _Timeline,
    ) -> AsyncIterator[str]:
        last: dict[str, Any] = {"prompt_tokens": 0, "completion_tokens": 0, "finish_reason": None}
        status = 200
        try:
            async for delta in stream:
                last = delta
                yield _sse(completion_chunk(completion_id, body.model, delta["text"], delta["finish_reason"]))
            timeline.mark("generated")
            if body.include_usage_in_stream:
                final = completion_chunk(completion_id, body.model, "", None)
                final["choices"] = []
                final["usage"] = usage(last["prompt_tokens"], last["completion_tokens"])
                yield _sse(final)
        except Exception as exc:
            status = 500
            yield _sse(_model_error(exc).body())
        yield "data: [DONE]\n\n"
        self._log_inference(body, "/v1/completions", timeline, last, [], status)

    async def _bounded(self, call: Callable[[], Awaitable[Any]], stage: str) -> Any:
        """Wait for a stage, at most `cold_start_timeout_s` (it may be starting from zero), and answer a 503
        at once when Serve reports that the stage cannot start (see `deployments.stage_client`)."""
        return await wait_for_stage(
            call,
            stage=stage,
            deployment=STAGE_DEPLOYMENTS[stage],
            board=self.stage_status,
            timeout_s=self.settings.cold_start_timeout_s,
        )

    def _account_cold_start(self, stage: str, timeline: _Timeline, ready_at: float | None) -> None:
        if ready_at is not None and ready_at > timeline.arrived:
            self.metrics.cold_start(stage, timeline.arrived, ready_at)
            timeline.marks[f"{stage}_cold_start_s"] = round(ready_at - timeline.arrived, 4)

    def _log_inference(
        self,
        body: ChatCompletionRequest | CompletionRequest,
        route: str,
        timeline: _Timeline,
        last: dict[str, Any],
        hits: list[dict[str, Any]],
        status: int,
    ) -> None:
        prompt = (
            "\n".join(m.text() for m in body.messages)
            if isinstance(body, ChatCompletionRequest)
            else body.prompt
        )
        self.inference_log.record(
            route=route,
            status_code=status,
            arrived_at=timeline.arrived,
            ttft_s=timeline.marks.get("first_token"),
            prompt_tokens=last.get("prompt_tokens", 0),
            completion_tokens=last.get("completion_tokens", 0),
            retrieval_scores=[float(h["score"]) for h in hits],
            prompt=prompt,
            prompt_embedding=timeline.query_embedding,
        )
        self.metrics.tokens(self.llm_model, last.get("prompt_tokens", 0), last.get("completion_tokens", 0))
