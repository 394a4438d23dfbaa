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
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments import openai_render
from deployments.api_keys import ApiKeyAuth
from deployments.flows import ChatFlow, CompletionFlow, DocumentFlow, EmbeddingFlow, OutcomeRecorder
from deployments.flows.shadow import ShadowMirror
from deployments.gateway_metering import BusyWhileServing, start_gateway_meter
from deployments.gateway_metrics import GatewayMetrics
from deployments.http_guards import AdmissionGuard, BodySizeLimit, install_error_handlers
from deployments.inference_logging import InferenceLogger
from deployments.model_events import ModelEventLog
from deployments.model_registry import AliasSettings, SurgeAppSettings
from deployments.model_router import PIN_HEADER, VERSION_HEADER, ModelRouter, ServedVersion
from deployments.openai_api import (
    ChatCompletionRequest,
    CompletionRequest,
    DocumentsRequest,
    EmbeddingRequest,
)
from deployments.principal import ANONYMOUS, Caller
from deployments.query_embedding import build_query_embedder
from deployments.query_retrieval import build_query_retriever
from deployments.rate_limits import RateLimiter
from deployments.rollback_guard import RollbackGuard
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


# Auth, scopes, limits and metrics in front of every route (pure ASGI: see AdmissionGuard); the body-size
# limit is added outside it when the Gateway starts.
api.add_middleware(AdmissionGuard)


SESSION_HEADER = "x-surge-session"


def caller(request: Request) -> Caller:
    return getattr(request.state, "caller", ANONYMOUS)


def version_choice(request: Request) -> dict[str, str | None]:
    """The operator's pinned version and the session key for stickiness (the body's `user` otherwise)."""
    return {"pinned": request.headers.get(PIN_HEADER), "session": request.headers.get(SESSION_HEADER)}


@serve.deployment
@serve.ingress(api)
class Gateway:
    def __init__(
        self,
        settings: SurgeAppSettings,
        embedder: DeploymentHandle,
        retriever: DeploymentHandle,
        llms: dict[str, DeploymentHandle],
    ) -> None:
        started_at = time.time()
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
        versions = [
            ServedVersion(
                key=version.key,
                name=version.name,
                llm=LLMClient(
                    "llm",
                    settings.deployment_of(version),
                    llms[version.key],
                    board,
                    waits,
                    label="llm" if settings.legacy else f"llm {version.key}",
                    autoscaling=version.autoscaling,
                    chain_wake=gateway.chain_wake,
                    idle_timeout_s=gateway.stream_idle_timeout_s,
                ),
                max_model_len=version.max_model_len,
                lora_adapters=tuple(a.name for a in version.lora_adapters),
                prompt_version=version.system_prompt_template_version,
                system_prompt=settings.system_prompt(version),
            )
            for version in settings.model_versions()
        ]
        self.router = ModelRouter(versions, settings.embedder.model)
        self.model_events = ModelEventLog(gateway.inference_log, source=f"gateway:{app_name}")
        self._deployed = False
        self.guard = RollbackGuard(self.router, self.model_events, settings.rollback_guard)
        llm_name = settings.model_versions()[0].name
        self.inference_log = InferenceLogger(gateway.inference_log, llm_name)
        usage = UsageRecorder(settings, llm_name, {v.key: v for v in settings.model_versions()})
        outcomes = OutcomeRecorder(
            self.inference_log, self.metrics, llm_name, observer=self.guard.observe, usage=usage
        )
        self.shadows = ShadowMirror(
            self.inference_log, settings.shadow_queue_size, settings.shadow_concurrency
        )
        features = open_online_store(gateway.online_features) if gateway.online_features else None
        # A RAG question is embedded through the Embedder or in this replica (gateway.embed_queries).
        questions = build_query_embedder(gateway.embed_queries, settings.embedder, embedder_client)
        # ... and searched through the Retriever or in this replica (gateway.retrieve_queries).
        searches = build_query_retriever(gateway.retrieve_queries, settings.retriever, retriever_client)
        self.chat = ChatFlow(settings, self.router, questions, searches, features, outcomes, self.shadows)
        self.completion = CompletionFlow(gateway, self.router, outcomes, self.shadows)
        self.embedding = EmbeddingFlow(self.router, embedder_client, settings.embedder, usage, questions)
        self.documents_flow = DocumentFlow(
            gateway, embedder_client, retriever_client, usage, settings.embedder.model
        )
        api.state.gateway = self
        api.add_middleware(BodySizeLimit, max_bytes=gateway.max_body_bytes)
        # The gateway replica's replica-, GPU- and idle-warm seconds, like every stage's.
        self.meter = start_gateway_meter(llm_name, gateway.num_gpus, started_at, on_tick=usage.publish_prices)
        api.add_middleware(BusyWhileServing, meter=self.meter)

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Alias weights and shadows, applied in place by Serve (`user_config`): no replica restarts.

        A table naming an unregistered version raises (Serve reports it on the Gateway) and the table in
        force stays."""
        aliases = {
            name: AliasSettings.model_validate(spec)
            for name, spec in (user_config.get("aliases") or {}).items()
        }
        before = {name: dict(route.weights.weights) for name, route in self.router.aliases.items()}
        self.router.set_aliases(aliases)
        after = {name: dict(spec.weights) for name, spec in aliases.items()}
        actor = str(user_config.get("changed_by") or "serve-config")
        if not self._deployed:
            # The first configuration of this replica: a deploy (one record per gateway replica).
            self._deployed = True
            versions = ", ".join(self.router.versions)
            self.model_events.publish(
                "deployed", actor=actor, reason=f"gateway serving {versions}", weights=after
            )
        elif after != before:
            self.model_events.publish(
                "weights_changed",
                actor=actor,
                reason=str(user_config.get("reason") or "aliases in the Gateway's user_config changed"),
                weights=after,
            )

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
        generation = await self.chat.start(body, caller(request), **version_choice(request))
        headers = {VERSION_HEADER: generation.version}
        if body.stream:
            events = openai_render.chat_events(generation, body.include_usage_in_stream)
            return StreamingResponse(events, media_type="text/event-stream", headers=headers)
        return JSONResponse(await openai_render.chat_response(generation), headers=headers)

    @api.post("/v1/completions")
    async def completions(self, body: CompletionRequest, request: Request) -> Any:
        generation = await self.completion.start(body, caller(request), **version_choice(request))
        headers = {VERSION_HEADER: generation.version}
        if body.stream:
            events = openai_render.completion_events(generation, body.include_usage_in_stream)
            return StreamingResponse(events, media_type="text/event-stream", headers=headers)
        return JSONResponse(await openai_render.completion_response(generation), headers=headers)
