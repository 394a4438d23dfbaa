"""Stage clients: every call from the gateway to a stage (Embedder, Retriever, LLM) goes through one.

A client wraps the stage's DeploymentHandle and owns what each call needs: a bounded wait, failing fast when
the stage cannot start, cold-start and chain-wake accounting, and the translation of the stage's errors into
the API's. Flows (`deployments.flows`) call clients; clients never call flows.

Waiting on a stage: bounded by the cold-start timeout, and failing fast when the stage cannot come up.

A request that finds a stage at zero waits while Serve starts a replica; that is scale to zero working. But
a stage whose replicas cannot start (a KV cache that does not fit, missing weights) would keep every waiting
request for the whole cold-start timeout (600 s on a laptop) and then answer a vague 503. So while a request
waits, the gateway looks at Serve's own view of the stage, at most once a second and shared by every waiter
(one `serve.status()` call, whatever the number of requests): when the deployment is `DEPLOY_FAILED` or
`UNHEALTHY`, the wait ends at once with a 503 that names the stage and the last start error. A cold start
that is still progressing (`UPDATING`, `UPSCALING`) keeps waiting, up to the timeout. Measured here: the
tiny LLM configured with a KV cache that cannot fit answered 503 in about 12 s from zero (the replica gets
that far before the memory check fails), where it used to wait the whole timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from opentelemetry.trace import INVALID_SPAN, Span, SpanKind, Status, StatusCode
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError
from ray.serve.handle import DeploymentHandle, DeploymentResponseGenerator

from deployments.engines.base import InvalidRequestError
from deployments.observability import record_cold_start
from deployments.openai_api import ApiError
from deployments.request_timeline import Timeline
from deployments.settings import AutoscalingSettings
from surge_core import tracing

if TYPE_CHECKING:
    from deployments.llm import GenerateRequest

FAILED_STATUSES = frozenset({"DEPLOY_FAILED", "UNHEALTHY"})
# A failed stage needs a config change and a redeploy (or a replica replaced by Serve): not seconds.
FAILED_RETRY_AFTER_S = 30
MAX_ERROR_CHARS = 600


def summarize_failure(message: str) -> str:
    """Serve's first sentence plus the exception's last line; the traceback in between stays in the logs.

    e.g. "The deployment failed to start 1 times in a row. ... Error:\\n<traceback>\\nKVCacheDoesNotFit: ..."
    -> "The deployment failed to start 1 times in a row. (KVCacheDoesNotFit: ...)"
    """
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    if not lines:
        return "no error message"
    first = lines[0].split(". ")[0].rstrip(".") + "."
    last = lines[-1]
    text = first if last == lines[0] else f"{first} ({last})"
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."


class StageStatusBoard:
    """One cached view of Serve's status for the whole app, shared by readiness probes and waiting requests.

    `max_age_s` bounds how stale an answer may be; concurrent callers within that window share one call
    (single flight), so a burst of probes or waiting requests costs one `serve.status()`.
    """

    def __init__(self, fetch: Callable[[], dict[str, Any]], max_age_s: float = 1.0) -> None:
        self._fetch = fetch
        self._max_age_s = max_age_s
        self._cached: tuple[float, dict[str, Any]] | None = None
        self._lock = asyncio.Lock()

    async def snapshot(self) -> dict[str, Any]:
        """`{"status": APP_STATUS, "deployments": {name: {"status", "replicas", "message"}}}`."""
        async with self._lock:
            if self._cached is not None and time.monotonic() - self._cached[0] < self._max_age_s:
                return self._cached[1]
            result = await asyncio.to_thread(self._fetch)
            self._cached = (time.monotonic(), result)
            return result

    async def starting(self, deployment: str) -> bool:
        """True while the deployment has no running replica yet (a cold start in progress)."""
        info = (await self.snapshot()).get("deployments", {}).get(deployment)
        if info is None:
            return True
        return int(info.get("replicas", {}).get("RUNNING", 0)) == 0

    async def failure(self, deployment: str) -> str | None:
        """Why `deployment` cannot serve (its status and last error), or None while it is fine or starting.

        Failing means Serve gave up starting it: DEPLOY_FAILED, or UNHEALTHY because its replicas failed to
        start (trigger REPLICA_STARTUP_FAILED: a stage at zero whose first replica fails turns UNHEALTHY, not
        DEPLOY_FAILED). An UNHEALTHY with another trigger (a failed health check) is Serve replacing a
        replica: requests keep waiting for it.
        """
        info = (await self.snapshot()).get("deployments", {}).get(deployment)
        if info is None or info.get("status") not in FAILED_STATUSES:
            return None
        if info["status"] == "UNHEALTHY" and info.get("trigger") != "REPLICA_STARTUP_FAILED":
            return None
        return f"{info['status']}: {summarize_failure(info.get('message') or '')}"


def serve_app_status(app_name: str) -> dict[str, Any]:
    """Serve's status of one application, as plain data (runs in a thread: `serve.status()` blocks)."""
    from ray import serve

    app = serve.status().applications.get(app_name)
    if app is None:
        return {"status": "NOT_STARTED", "deployments": {}}
    return {
        "status": str(getattr(app.status, "value", app.status)),
        "deployments": {
            name: {
                "status": str(getattr(d.status, "value", d.status)),
                "trigger": str(getattr(d.status_trigger, "value", d.status_trigger)),
                "replicas": {str(getattr(k, "value", k)): v for k, v in d.replica_states.items()},
                "message": d.message,
            }
            for name, d in app.deployments.items()
        },
    }


def stage_failed(stage: str, reason: str) -> ApiError:
    return ApiError(
        503,
        f"the {stage} stage cannot start: {reason}",
        error_type="stage_unavailable",
        headers={"Retry-After": str(FAILED_RETRY_AFTER_S)},
    )


@dataclass(frozen=True)
class StageWaits:
    """How long a call may wait for a stage: `warm_s` when the stage has a running replica, up to `cold_s`
    while it is still starting (scale from zero, a model loading).

    The warm deadline is checked first; when it passes, Serve's status (`StageStatusBoard.starting`) decides:
    a stage with no running replica keeps waiting until `cold_s` after the call, a warm one that did not
    answer is given up on. E.g. warm 60 s, cold 600 s: a hung warm replica -> 503 after 60 s; a stage at
    zero whose model loads in 200 s -> answered at 200 s.
    """

    warm_s: float
    cold_s: float


async def wait_for_stage(
    call: Callable[[], Awaitable[Any]],
    *,
    stage: str,
    deployment: str,
    board: StageStatusBoard,
    waits: StageWaits,
    poll_s: float = 1.0,
) -> Any:
    """Make a call to a stage and await it; 503 at once if the stage is failing, or after the warm or cold
    wait if it never answers. `call` (e.g. `handle.method.remote`) is made here, since Ray may raise from it
    directly."""
    started = time.monotonic()
    deadline = started + waits.warm_s
    task: asyncio.Future[Any] | None = None
    try:
        task = asyncio.ensure_future(call())
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 and deadline < started + waits.cold_s and await board.starting(deployment):
                deadline = started + waits.cold_s
                continue
            if remaining <= 0:
                waited = time.monotonic() - started
                raise ApiError(
                    503,
                    f"the {stage} stage did not answer within {waited:.0f} s (it may still be starting); "
                    "retry shortly",
                    error_type="overloaded_error",
                    headers={"Retry-After": "5"},
                )
            done, _ = await asyncio.wait({task}, timeout=min(poll_s, remaining))
            if done:
                return task.result()
            reason = await board.failure(deployment)
            if reason is not None:
                raise stage_failed(stage, reason)
    except DeploymentUnavailableError as error:
        # Serve gave up starting it (DEPLOY_FAILED): new calls fail here at once, without waiting.
        reason = await board.failure(deployment)
        raise stage_failed(stage, reason or error.message) from error
    except BackPressureError as error:
        # The stage's queue is full: a fast 503 the client can retry (OpenAI's error object, not Serve's text).
        raise ApiError(
            503,
            f"the {stage} stage is at its queue limit; retry shortly",
            error_type="overloaded_error",
            headers={"Retry-After": str(max(1, round(error.retry_after_s or 1)))},
        ) from error
    finally:
        if task is not None and not task.done():
            task.cancel()


# ------------------------------------------------------------------------------------------ stage clients


class StageClient:
    """One stage behind its DeploymentHandle; `call` is bounded and fails fast (see `wait_for_stage`).

    `stage` is the kind (`embedder`, `retriever`, `llm`): the key of its seconds, cold-start marks, metrics
    and span attributes, which prices and dashboards look up; `label` names this client in errors (e.g.
    `llm smollm2@2`, one of several LLM versions), the stage kind when not given."""

    def __init__(
        self,
        stage: str,
        deployment: str,
        handle: DeploymentHandle,
        board: StageStatusBoard,
        waits: StageWaits,
        label: str | None = None,
    ) -> None:
        self.stage = stage
        self.label = label or stage
        self.deployment = deployment
        self.handle = handle
        self.board = board
        self.waits = waits

    async def call(self, method: str, *args: Any) -> Any:
        return await self.bounded(lambda: getattr(self.handle, method).remote(*args))

    async def bounded(self, call: Callable[[], Awaitable[Any]]) -> Any:
        return await wait_for_stage(
            call, stage=self.label, deployment=self.deployment, board=self.board, waits=self.waits
        )

    def account_cold_start(
        self, timeline: Timeline, ready_at: float | None, span: Span = INVALID_SPAN
    ) -> None:
        """A replica that became ready after the request arrived means the request waited for a cold start."""
        cold = ready_at is not None and ready_at > timeline.arrived
        if cold and ready_at is not None:
            record_cold_start(self.stage, timeline.arrived, ready_at)
            timeline.since_arrival(f"{self.stage}_cold_start_s", ready_at)
        seconds = round(ready_at - timeline.arrived, 4) if cold and ready_at is not None else None
        tracing.set_attributes(span, **{tracing.COLD_START: cold, tracing.COLD_START_S: seconds})

    def traced(self, method: str) -> AbstractContextManager[Span]:
        """The gateway-side span of one stage call (its wait, a cold start included); the replica's span
        is its child through the carrier (`tracing.carrier()` inside the block)."""
        return tracing.span(
            f"{self.stage}.call {method}",
            kind=SpanKind.CLIENT,
            attributes={tracing.STAGE: self.stage, "surge.deployment": self.deployment},
        )


class EmbedderClient(StageClient):
    async def embed(self, texts: list[str], timeline: Timeline) -> dict[str, Any]:
        """`{"embeddings": ndarray, "tokens": int, "ready_at": float}` for `texts`."""
        started = time.monotonic()
        with self.traced("embed") as span:
            result: dict[str, Any] = await self.call("embed", texts, tracing.carrier())
            self.account_cold_start(timeline, result.get("ready_at"), span)
        timeline.add_stage_seconds(self.stage, time.monotonic() - started)
        timeline.mark("embedded")
        return result


class RetrieverClient(StageClient):
    """Every call names the caller's tenant: the Retriever reads and writes only that tenant's documents."""

    async def search(
        self,
        vector: list[float],
        top_k: int,
        where: dict[str, Any] | None,
        tenant: str,
        timeline: Timeline,
        embedding_version: str | None = None,
    ) -> list[dict[str, Any]]:
        """`embedding_version`: the version the Embedder named for `vector` (searched in that index)."""
        started = time.monotonic()
        with self.traced("search"):
            hits: list[dict[str, Any]] = await self.call(
                "search", vector, top_k, where, tenant, embedding_version, tracing.carrier()
            )
        timeline.add_stage_seconds(self.stage, time.monotonic() - started)
        timeline.mark("retrieved")
        return hits

    async def replace_documents(
        self,
        grouped: dict[str, list[dict[str, Any]]],
        versions: dict[str, tuple[int, int]],
        tenant: str,
        embedding_version: str | None = None,
    ) -> dict[str, int]:
        with self.traced("replace_documents"):
            result: dict[str, int] = await self.call(
                "replace_documents", grouped, versions, tenant, embedding_version, tracing.carrier()
            )
        return result

    async def delete_documents(
        self, doc_ids: list[str], versions: dict[str, tuple[int, int]], tenant: str
    ) -> int:
        with self.traced("delete_documents"):
            return int(await self.call("delete_documents", doc_ids, versions, tenant, tracing.carrier()))


def idle_to_zero_seconds(scaling: AutoscalingSettings) -> float:
    """How long after its last answer a stage is certainly still up (infinite when kept warm).

    `downscale_to_zero_delay_s` (or `downscale_delay_s`) minus the autoscaler's look-back window as a margin;
    e.g. 300 s to zero with a 10 s look-back -> 290 s.
    """
    if scaling.effective_min_replicas > 0:
        return float("inf")
    delay = scaling.downscale_to_zero_delay_s
    if delay is None:
        delay = scaling.downscale_delay_s
    return max(0.0, delay - scaling.look_back_period_s)


def model_error(exc: Exception) -> ApiError:
    """Map an engine failure: a request the engine can't serve (prompt too long) is the client's 400."""
    # Ray re-raises a replica's exception as a subclass of the original type, so isinstance works.
    if isinstance(exc, InvalidRequestError):
        cause = getattr(exc, "cause", exc)
        return ApiError(400, f"the model cannot serve this request: {cause}", param="messages")
    if isinstance(exc, ApiError):
        return exc
    return ApiError(502, "the model failed to generate a response", error_type="server_error")


def _cancel_quietly(generator: DeploymentResponseGenerator) -> None:
    """Cancel a streamed call; `cancel()` re-raises the call's own error (e.g. DeploymentUnavailableError),
    which the caller has already translated."""
    with contextlib.suppress(Exception):
        generator.cancel()


class LLMClient(StageClient):
    """The LLM stage: chain wake (start the LLM while embedding and retrieval run) and streamed generation."""

    def __init__(
        self,
        *args: Any,
        autoscaling: AutoscalingSettings,
        chain_wake: bool,
        idle_timeout_s: float = 30.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._chain_wake = chain_wake
        self.idle_timeout_s = idle_timeout_s
        # When did the LLM last answer? Within its idle-to-zero delay it is surely up, so no wake is sent.
        self._last_seen = 0.0
        self._idle_to_zero_s = idle_to_zero_seconds(autoscaling)

    def maybe_wake(self, timeline: Timeline) -> asyncio.Task[None] | None:
        """Chain wake: if the LLM may be at zero, start bringing it up now, in parallel with the rest."""
        if not self._chain_wake or time.time() - self._last_seen < self._idle_to_zero_s:
            return None
        return asyncio.ensure_future(self._wake(timeline))

    async def _wake(self, timeline: Timeline) -> None:
        timeline.mark("llm_wake_sent")
        with self.traced("wake") as span:
            info: dict[str, Any] = await self.call("wake")
            self.account_cold_start(timeline, info.get("ready_at"), span)
        timeline.since_arrival("llm_replica_started", info["replica_started_at"])
        timeline.mark("llm_ready")

    async def generate(
        self, request: GenerateRequest, wake: asyncio.Task[None] | None, timeline: Timeline
    ) -> AsyncIterator[dict[str, Any]]:
        """Send the request and wait (bounded) for the first delta, so errors surface before a 200; returns
        the stream of deltas, the first included."""
        called = time.monotonic()
        started: list[DeploymentResponseGenerator] = []
        # The call's span lasts until the stream ends (`_rest`), so it is ended by hand, not by a block.
        span = tracing.start_span(
            f"{self.stage}.call generate", kind=SpanKind.CLIENT, attributes={tracing.STAGE: self.stage}
        )
        if span.is_recording():
            request = request.model_copy(update={"trace_context": tracing.carrier(span)})

        def first_delta() -> Awaitable[dict[str, Any]]:
            # Ray answers a call to a deployment it gave up on with DeploymentUnavailableError, sometimes
            # from `.remote()` itself: the call is made inside the bounded wait so it is translated too.
            started.append(self.handle.options(stream=True).generate.remote(request))
            return started[0].__anext__()

        try:
            first = await self.bounded(first_delta)
        except StopAsyncIteration as exc:
            span.end()
            timeline.add_stage_seconds(self.stage, time.monotonic() - called)
            raise ApiError(500, "the model returned no output", error_type="server_error") from exc
        except BaseException as exc:
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            span.end()
            timeline.add_stage_seconds(self.stage, time.monotonic() - called)
            for generator in started:
                _cancel_quietly(generator)
            if isinstance(exc, ApiError) or not isinstance(exc, Exception):
                raise
            raise model_error(exc) from exc
        finally:
            if wake is not None:
                await asyncio.gather(wake, return_exceptions=True)
        timeline.mark("first_token")
        self._last_seen = time.time()
        return self._rest(first, started[0], span, timeline, called)

    async def _rest(
        self,
        first: dict[str, Any],
        generator: DeploymentResponseGenerator,
        span: Span = INVALID_SPAN,
        timeline: Timeline | None = None,
        called: float = 0.0,
    ) -> AsyncIterator[dict[str, Any]]:
        yield first
        try:
            while True:
                # A hung replica (stopped, deadlocked, its node gone quiet) sends nothing: give up after
                # the idle timeout instead of holding the client and the slot forever. asyncio.timeout, not
                # wait_for: on Python 3.11 wait_for wraps every item of every stream in a new task.
                try:
                    async with asyncio.timeout(self.idle_timeout_s):
                        delta = await generator.__anext__()
                except StopAsyncIteration:
                    break
                except TimeoutError as exc:
                    raise ApiError(
                        504,
                        f"the model sent nothing for {self.idle_timeout_s:g} s; the generation was abandoned",
                        error_type="server_error",
                    ) from exc
                yield delta
        except Exception as exc:
            raise model_error(exc) from exc
        finally:
            span.end()
            if timeline is not None:  # the LLM is charged from the call to the stream's end
                timeline.add_stage_seconds(self.stage, time.monotonic() - called)
            _cancel_quietly(generator)
            self._last_seen = time.time()
