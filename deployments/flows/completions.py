"""`/v1/completions`: a raw prompt to the LLM (no RAG: that needs chat messages)."""

from __future__ import annotations

from functools import partial

from deployments.flows.generation import Generation, OutcomeRecorder, llm_request, started
from deployments.flows.shadow import ShadowMirror, mirror, mirrored_when_done
from deployments.model_router import ModelRouter
from deployments.openai_api import ApiError, CompletionRequest, check_limits
from deployments.principal import ANONYMOUS, Caller
from deployments.request_timeline import Timeline
from deployments.settings import GatewaySettings

ROUTE = "/v1/completions"


class CompletionFlow:
    def __init__(
        self,
        settings: GatewaySettings,
        router: ModelRouter,
        outcomes: OutcomeRecorder,
        shadows: ShadowMirror | None = None,
    ) -> None:
        self.settings = settings
        self.router = router
        self.outcomes = outcomes
        self.shadows = shadows

    async def start(
        self,
        body: CompletionRequest,
        caller: Caller = ANONYMOUS,
        pinned: str | None = None,
        session: str | None = None,
    ) -> Generation:
        route = self.router.llm_route(body.model, sticky_key=session or body.user, pinned=pinned)
        if route.rag or body.retrieval is not None:
            raise ApiError(400, "RAG is available on /v1/chat/completions", param="model")
        max_tokens = check_limits(body, self.settings)
        timeline = Timeline()
        wake = route.llm.maybe_wake(timeline)
        request = llm_request(body, max_tokens, prompt=body.prompt, lora_adapter=route.lora_adapter)
        send_mirror = partial(mirror, self.shadows, route, request, ROUTE, body.prompt, caller)
        try:
            recorded = await started(
                route.llm.generate(request, wake, timeline),
                self.outcomes,
                route=ROUTE,
                prompt=body.prompt,
                timeline=timeline,
                hits=[],
                caller=caller,
                version=route.version,
                alias=route.alias,
                request_id=request.request_id,  # a shadow record names it (`shadow_of`)
            )
        except ApiError:
            send_mirror()  # the shadow sees failed requests too
            raise
        if route.shadow is not None:
            recorded = mirrored_when_done(recorded, send_mirror)
        return Generation(model=body.model, deltas=recorded, timeline=timeline, version=route.version)
