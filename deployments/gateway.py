"""The Gateway: the ingress deployment, the HTTP/OpenAI edge in front of the Embedder, Retriever and LLM.

Routes: GET /v1/models, POST /v1/embeddings, POST /v1/chat/completions (stream or not, optional RAG),
POST /v1/completions, POST /v1/documents, GET /healthz, GET /readyz.

The edge only parses, delegates and renders: each route hands its validated body to a flow
(`deployments.flows`), which calls the stages through the model router and the stage clients, and the
result is rendered by `deployments.openai_render`. Auth, the body limit and error mapping sit in front of
every route (`deployments.http_guards`).

Scale to zero: a request to a stage with no replica waits (up to `cold_start_timeout_s`) while Serve starts
one, and gets a 503 naming the stage and its error at once if it cannot start (`deployments.stage_client`).
For RAG, the LLM is woken at the same moment as the Embedder ("chain wake"). /healthz and /readyz never call
a stage, so probes don't keep scaled-to-zero stages awake.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments import openai_render
from deployments.flows import ChatFlow, CompletionFlow, DocumentFlow, EmbeddingFlow, OutcomeRecorder
from deployments.gateway_metrics import GatewayMetrics
from deployments.http_guards import PUBLIC_PATHS, ApiKeyAuth, BodySizeLimit, app_path, install_error_handlers
from deployments.inference_logging import InferenceLogger
from deployments.model_router import ModelRouter
from deployments.openai_api import (
    ApiError,
    ChatCompletionRequest,
    CompletionRequest,
    DocumentsRequest,
    EmbeddingRequest,
)
from deployments.settings import AppSettings
from deployments.stage_client import (
    EmbedderClient,
    LLMClient,
    RetrieverClient,
    StageStatusBoard,
    serve_app_status,
)
from surge_core.feature_store import open_online_store

api = FastAPI(title="surge", version="0.1.0", docs_url=None, redoc_url=None)
install_error_handlers(api)

FAILED_STATUSES = ("DEPLOY_FAILED", "UNHEALTHY")


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
        self.auth = ApiKeyAuth(gateway)
        self.metrics = GatewayMetrics()
        app_name = serve.get_replica_context().app_name
        self.stage_status = StageStatusBoard(lambda: serve_app_status(app_name))
        board, timeout_s = self.stage_status, gateway.cold_start_timeout_s
        embedder_client = EmbedderClient("embedder", "Embedder", embedder, board, timeout_s)
        retriever_client = RetrieverClient("retriever", "Retriever", retriever, board, timeout_s)
        llm_client = LLMClient(
            "llm",
            "LLMServer",
            llm,
            board,
            timeout_s,
            autoscaling=settings.llm.autoscaling,
            chain_wake=gateway.chain_wake,
        )
        llm_name = settings.llm.served_model_name
        self.router = ModelRouter(llm_name, llm_client, settings.embedder.model)
        outcomes = OutcomeRecorder(InferenceLogger(gateway.inference_log, llm_name), self.metrics, llm_name)
        features = open_online_store(gateway.online_features) if gateway.online_features else None
        self.chat = ChatFlow(settings, self.router, embedder_client, retriever_client, features, outcomes)
        self.completion = CompletionFlow(gateway, self.router, outcomes)
        self.embedding = EmbeddingFlow(self.router, embedder_client, settings.embedder)
        self.documents_flow = DocumentFlow(gateway, embedder_client, retriever_client)
        api.state.gateway = self
        api.add_middleware(BodySizeLimit, max_bytes=gateway.max_body_bytes)

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
            d["status"] in FAILED_STATUSES for d in status.get("deployments", {}).values()
        )
        return JSONResponse(status, status_code=200 if ready else 503)

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
    async def embeddings(self, body: EmbeddingRequest) -> dict[str, Any]:
        result = await self.embedding.run(body)
        return openai_render.embeddings_response(result, body.model, body.encoding_format)

    @api.post("/v1/documents")
    async def documents(self, body: DocumentsRequest) -> dict[str, Any]:
        """Synchronous upsert (chunk, embed, index) and delete; returns what changed."""
        return await self.documents_flow.run(body)

    @api.post("/v1/chat/completions")
    async def chat_completions(self, body: ChatCompletionRequest) -> Any:
        generation = await self.chat.start(body)
        if body.stream:
            events = openai_render.chat_events(generation, body.include_usage_in_stream)
            return StreamingResponse(events, media_type="text/event-stream")
        return await openai_render.chat_response(generation)

    @api.post("/v1/completions")
    async def completions(self, body: CompletionRequest) -> Any:
        generation = await self.completion.start(body)
        if body.stream:
            events = openai_render.completion_events(generation, body.include_usage_in_stream)
            return StreamingResponse(events, media_type="text/event-stream")
        return await openai_render.completion_response(generation)
