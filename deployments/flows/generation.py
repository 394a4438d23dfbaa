"""What a generating flow returns (`Generation`), and how its outcome is recorded once it ends."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from pydantic import ValidationError

from deployments.inference_logging import InferenceLogger
from deployments.llm import GenerateRequest
from deployments.openai_api import ApiError, new_id
from deployments.principal import ANONYMOUS, Caller
from deployments.request_timeline import Timeline
from deployments.usage_recording import UsageRecorder
from surge_core import tracing
from surge_core.model_version import model_and_version

# Status recorded for a stream the client stopped reading (nginx's "client closed request").
CLIENT_CLOSED = 499


@dataclass
class Generation:
    """A started generation: the LLM has produced its first delta, so the request will get a 200.

    `deltas` yields `{"text", "finish_reason", "prompt_tokens", "completion_tokens"}` dicts; token counts
    are cumulative. `extra` holds what the response carries besides the choices (`sources`, `features`).
    """

    model: str
    deltas: AsyncIterator[dict[str, Any]]
    timeline: Timeline
    extra: dict[str, Any] = field(default_factory=dict)
    # The `name@version` that answered (the `x-surge-model-version` header and `surge.version`).
    version: str = ""
    # Its system-prompt template version (`surge.prompt_version`), None when it used none.
    prompt_version: str | None = None

    async def collect(self) -> tuple[str, dict[str, Any]]:
        """The whole text and the last delta (finish reason and token counts)."""
        parts: list[str] = []
        last: dict[str, Any] = {}
        async for delta in self.deltas:
            parts.append(delta["text"])
            last = delta
        return "".join(parts), last


class OutcomeRecorder:
    """Records each finished generation: one inference-log record and the token counters."""

    def __init__(
        self,
        inference_log: InferenceLogger,
        metrics: Any,
        model: str,
        observer: Callable[[str, int, float | None], None] | None = None,
        usage: UsageRecorder | None = None,
    ) -> None:
        self.inference_log = inference_log
        self.metrics = metrics
        self.model = model
        # Told (version, status, ttft_s) of every finished generation: the rollback guard.
        self.observer = observer
        self.usage = usage

    async def recorded(
        self,
        deltas: AsyncIterator[dict[str, Any]],
        *,
        route: str,
        prompt: str,
        timeline: Timeline,
        hits: list[dict[str, Any]],
        caller: Caller = ANONYMOUS,
        version: str = "",
        alias: str | None = None,
        request_id: str | None = None,
        prompt_version: str | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """Pass the deltas through; when the stream ends (done, failed or abandoned) record its outcome,
        named by the caller's principal, and charge its tokens to the principal's token bucket."""
        last: dict[str, Any] = {}
        parts: list[str] = []  # the answer, for the log's quality signals (bounded by max_tokens)
        status = 500
        try:
            async for delta in deltas:
                last = delta
                parts.append(delta.get("text") or "")
                yield delta
            timeline.mark("generated")
            status = 200
        except GeneratorExit:
            status = CLIENT_CLOSED
            raise
        except ApiError as error:
            status = error.status_code  # e.g. 502 (replica failed) or 504 (replica went quiet)
            raise
        finally:
            caller.spend_tokens(last.get("prompt_tokens", 0) + last.get("completion_tokens", 0))
            # The version that answered (`name@version`), else the stage's one model.
            answered_model, answered_version = model_and_version(version or self.model)
            tracing.set_attributes(
                timeline.span,
                **{
                    tracing.MODEL: answered_model,
                    tracing.VERSION: answered_version,
                    tracing.TOKENS_IN: last.get("prompt_tokens", 0),
                    tracing.TOKENS_OUT: last.get("completion_tokens", 0),
                    "surge.retrieval.hits": len(hits) if hits else None,
                },
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
                principal=caller.principal.name,
                tenant=caller.principal.tenant,
                model=answered_model,
                model_version=answered_version,
                alias=alias,
                answer="".join(parts),
                # None when the request did no retrieval, [] when it found nothing.
                sources=[str(h["text"]) for h in hits] if timeline.query_embedding is not None else None,
                trace_headers=tracing.kafka_headers(timeline.span),
                request_id=request_id,
                prompt_version=prompt_version,
            )
            if self.observer is not None:
                # A request that waited for a replica to start says nothing about the version's TTFT (the
                # cold start is the autoscaler's): the guard counts its outcome, not its TTFT.
                waited = any(mark.endswith("_cold_start_s") for mark in timeline.marks)
                self.observer(version, status, None if waited else timeline.marks.get("first_token"))
            self.metrics.tokens(self.model, last.get("prompt_tokens", 0), last.get("completion_tokens", 0))
            if self.usage is not None:
                self.usage.record(
                    route=route,
                    status_code=status,
                    timeline=timeline,
                    tokens_in=last.get("prompt_tokens", 0),
                    tokens_out=last.get("completion_tokens", 0),
                    principal=caller.principal.name,
                    tenant=caller.principal.tenant,
                    served_model=f"{answered_model}@{answered_version}",
                )


async def started(
    start: Awaitable[AsyncIterator[dict[str, Any]]],
    outcomes: OutcomeRecorder,
    *,
    route: str,
    prompt: str,
    timeline: Timeline,
    hits: list[dict[str, Any]],
    caller: Caller,
    version: str = "",
    alias: str | None = None,
    request_id: str | None = None,
    prompt_version: str | None = None,
) -> AsyncIterator[dict[str, Any]]:
    """Await the start of a generation (its first delta); a failure before it (the replica died, the
    prompt does not fit) is recorded like one during the stream, then raised: every request is logged."""
    record = partial(
        outcomes.recorded,
        route=route,
        prompt=prompt,
        timeline=timeline,
        hits=hits,
        caller=caller,
        version=version,
        alias=alias,
        request_id=request_id,
        prompt_version=prompt_version,
    )
    try:
        deltas = await start
    except ApiError as error:
        async for _ in record(_failing(error)):
            pass
        raise
    return record(deltas)


async def _failing(error: ApiError) -> AsyncIterator[dict[str, Any]]:
    raise error
    yield {}  # pragma: no cover - makes this an async generator


def llm_request(body: Any, max_tokens: int, **prompt: Any) -> GenerateRequest:
    """The LLM stage's request: sampling from the body, plus exactly one of `messages=` or `prompt=`.

    Validated here, once: the stage takes a `GenerateRequest` as it is (it validates only dicts), and a
    value it would refuse is a 400 naming the field before anything is sent."""
    try:
        return GenerateRequest.model_validate(
            {
                "max_tokens": max_tokens,
                "temperature": body.temperature,
                "top_p": body.top_p,
                "stop": body.stop_list,
                "seed": body.seed,
                "request_id": new_id("req"),
                **prompt,
            }
        )
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first.get("loc", ())) or None
        raise ApiError(
            400, f"{field}: {first.get('msg')}" if field else str(first.get("msg")), param=field
        ) from None
