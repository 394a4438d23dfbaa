"""The Gateway: the ingress deployment, the HTTP/OpenAI edge in front of the Embedder, Retriever and LLM.

Routes: GET /v1/models, POST /v1/embeddings, POST /v1/chat/completions (stream or not, optional RAG),
POST /v1/completions, POST /v1/documents, GET /healthz, GET /readyz.

The edge only parses, delegates and renders: each route hands its validated body to a flow
(`deployments.flows`), which calls the stages through the model router and the stage clients, and the
result is rendered by `deployments.openai_render`. Auth, the body limit and error mapping sit in front of
every route (`deployments.http_guards`): each API key is a principal (name, tenant, scopes,
`deployments.api_keys`) with per-principal limits (`deployments.rate_limits`), and the flows act within the
principal's tenant.

Scale to zero: a request to a stage with no replica waits (up to `cold_start_timeout_s`) while Serve starts
one, and gets a 503 naming the stage and its error at once if it cannot start (`deployments.stage_client`).
For RAG, the LLM is woken at the same moment as the Embedder ("chain wake"). /healthz and /readyz never call
a stage, so probes don't keep scaled-to-zero stages awake.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments import openai_render
from deployments.api_keys import ApiKeyAuth
from deployments.flows import ChatFlow, CompletionFlow, DocumentFlow, EmbeddingFlow, OutcomeRecorder
from deployments.gateway_metrics import GatewayMetrics
from deployments.http_guards import (
    PUBLIC_PATHS,
    Admitted,
    BodySizeLimit,
    admit,
    app_path,
    install_error_handlers,
)
from deployments.inference_logging import InferenceLogger
from deployments.model_router import ModelRouter
from deployments.openai_api import (
    ApiError,
    ChatCompletionRequest,
    CompletionRequest,
    DocumentsRequest,
    EmbeddingRequest,
)
from deployments.principal import ANONYMOUS, Caller
from deployments.rate_limits import RateLimiter
from deployments.request_tracing import RequestSpan
from deployments.settings import AppSettings
from deployments.stage_client import (
    FAILED_STATUSES,
    EmbedderClient,
    LLMClient,
    RetrieverClient,
    StageStatusBoard,
    StageWaits,
    serve_app_status,
)
from deployments.usage_recording import UsageRecorder
from surge_core.feature_store import open_online_store
from surge_core.tracing import configure_tracing

logger = logging.getLogger("ray.serve")

api = FastAPI(title="surge", version="0.1.0", docs_url=None, redoc_url=None)
install_error_handlers(api)


@api.middleware("http")
async def _guard(request: Request, call_next: Any) -> Any:
    """Auth, scopes, per-principal limits and per-request metrics for every route (health is public)."""
    gateway: Gateway = request.app.state.gateway
    started = time.perf_counter()
    route = app_path(request.scope)
    admitted: Admitted | None = None
    # Probes are not traced: a trace per request, not per health check.
    span = RequestSpan(request.method, route, request.headers, traced=route not in PUBLIC_PATHS)
    try:
        if route not in PUBLIC_PATHS:
            admitted = admit(gateway.auth, gateway.limiter, route, request.headers.get("authorization"))
            request.state.caller = admitted.caller
            span.admitted(admitted.caller.principal.tenant, admitted.caller.principal.name)
        response = await call_next(request)
    except ApiError as error:
        if error.status_code in (403, 429):
            # Name the principal, never the key.
            logger.info("%s %s -> %d: %s", request.method, route, error.status_code, error.message)
        response = JSONResponse(error.body(), status_code=error.status_code, headers=error.headers)
    except BaseException as error:
        span.failed(error)
        if admitted is not None:
            admitted.limits.release()
        raise
    span.detach()
    if admitted is not None:
        response.headers.update(admitted.limits.headers)
        body = getattr(response, "body_iterator", None)
        if body is None:
            admitted.limits.release()
        else:
            # A stream is still running when call_next returns: the concurrency slot is freed at its end.
            response.body_iterator = _released_at_end(body, admitted.limits.release)
    body = getattr(response, "body_iterator", None)
    if body is None:
        span.finish(response.status_code)
    else:
        response.body_iterator = span.finished_at_end(body, response.status_code)
    gateway.metrics.observe(route, response.status_code, time.perf_counter() - started)
    return response


async def _released_at_end(body: AsyncIterator[Any], release: Callable[[], None]) -> AsyncIterator[Any]:
    try:
        async for chunk in body:
            yield chunk
    finally:
        release()


def caller(request: Request) -> Caller:
    return getattr(request.state, "caller", ANONYMOUS)


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
        gateway = settings.gateway
        configure_tracing("surge")
        self.auth = ApiKeyAuth(gateway)
        self.limiter = RateLimiter(gateway.rate_limits)
        self.metrics = GatewayMetrics()
        app_name = serve.get_replica_context().app_name
        self.stage_status = StageStatusBoard(lambda: serve_app_status(app_name))
        board = self.stage_status
        waits = StageWaits(warm_s=gateway.stage_timeout_s, cold_s=gateway.cold_start_timeout_s)
        embedder_client = EmbedderClient("embedder", "Embedder", embedder, board, waits)
        retriever_client = RetrieverClient("retriever", "Retriever", retriever, board, waits)
        llm_client = LLMClient(
            "llm",
            "LLMServer",
            llm,
            board,
            waits,
            autoscaling=settings.llm.autoscaling,
            chain_wake=gateway.chain_wake,
            idle_timeout_s=gateway.stream_idle_timeout_s,
        )
        llm_name = settings.llm.served_model_name
        self.router = ModelRouter(llm_name, llm_client, settings.embedder.model)
        usage = UsageRecorder(settings, llm_name)
        outcomes = OutcomeRecorder(
            InferenceLogger(gateway.inference_log, llm_name), self.metrics, llm_name, usage
        )
        features = open_online_store(gateway.online_features) if gateway.online_features else None
        self.chat = ChatFlow(settings, self.router, embedder_client, retriever_client, features, outcomes)
        self.completion = CompletionFlow(gateway, self.router, outcomes)
        self.embedding = EmbeddingFlow(self.router, embedder_client, settings.embedder, usage)
        self.documents_flow = DocumentFlow(gateway, embedder_client, retriever_client)
        api.state.gateway = self
        api.add_middleware(BodySizeLimit, max_bytes=gateway.max_body_bytes)

    # ---------------------------------------------------------------- health

    @api.get("/healthz")
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/readyz")
    async def readyz(self, request: Request) -> JSONResponse:
        """Ready when every deployment of the app is healthy; reads Serve's status, never calls a stage.

        Anyone gets `{"status": "ready" | "not_ready"}`; a valid API key also gets the per-stage detail (a
        stage that cannot start, DEPLOY_FAILED or UNHEALTHY, says why). Concurrent probes share one status
        call (`StageStatusBoard`).
        """
        status = await self.stage_status.snapshot()
        ready = status.get("status") == "RUNNING" and not any(
            d["status"] in FAILED_STATUSES for d in status.get("deployments", {}).values()
        )
        body: dict[str, Any] = {"status": "ready" if ready else "not_ready"}
        if self.auth.principal(request.headers.get("authorization")) is not None:
            body.update(app_status=status.get("status"), deployments=status.get("deployments", {}))
        return JSONResponse(body, status_code=200 if ready else 503)

    # ---------------------------------------------------------------- API

    @api.get("/v1/models")
    async def models(self) -> dict[str, Any]:
        created = int(time.time())
        return {
            "object": "list",
            "data": [
                {"id": name, "object": "model", "created": created, "owned_by": "surge"}
                for name in self.router.model_ids()
            ],
        }

    @api.post("/v1/embeddings")
    async def embeddings(self, body: EmbeddingRequest, request: Request) -> dict[str, Any]:
        result = await self.embedding.run(body, caller(request))
        return openai_render.embeddings_response(result, body.model, body.encoding_format)

    @api.post("/v1/documents")
    async def documents(self, body: DocumentsRequest, request: Request) -> dict[str, Any]:
        """Synchronous upsert (chunk, embed, index) and delete within the caller's tenant; returns what
        changed."""
        return await self.documents_flow.run(body, caller(request))

    @api.post("/v1/chat/completions")
    async def chat_completions(self, body: ChatCompletionRequest, request: Request) -> Any:
        generation = await self.chat.start(body, caller(request))
        if body.stream:
            events = openai_render.chat_events(generation, body.include_usage_in_stream)
            return StreamingResponse(events, media_type="text/event-stream")
        return await openai_render.chat_response(generation)

    @api.post("/v1/completions")
    async def completions(self, body: CompletionRequest, request: Request) -> Any:
        generation = await self.completion.start(body, caller(request))
        if body.stream:
            events = openai_render.completion_events(generation, body.include_usage_in_stream)
            return StreamingResponse(events, media_type="text/event-stream")
        return await openai_render.completion_response(generation)
