"""Waiting on a stage: bounded by the cold-start timeout, and failing fast when the stage cannot come up.

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
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ray.serve.exceptions import DeploymentUnavailableError

from deployments.openai_api import ApiError

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

    async def failure(self, deployment: str) -> str | None:
        """Why `deployment` cannot serve (its status and last error), or None while it is fine or starting."""
        info = (await self.snapshot()).get("deployments", {}).get(deployment)
        if info is None or info.get("status") not in FAILED_STATUSES:
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


async def wait_for_stage(
    call: Callable[[], Awaitable[Any]],
    *,
    stage: str,
    deployment: str,
    board: StageStatusBoard,
    timeout_s: float,
    poll_s: float = 1.0,
) -> Any:
    """Make a call to a stage and await it; 503 at once if the stage is failing, or after `timeout_s` if it
    never answers. `call` (e.g. `handle.method.remote`) is made here, since Ray may raise from it directly."""
    deadline = time.monotonic() + timeout_s
    task: asyncio.Future[Any] | None = None
    try:
        task = asyncio.ensure_future(call())
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ApiError(
                    503,
                    f"the {stage} stage did not answer within {timeout_s:.0f} s (it may still be starting); "
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
    finally:
        if task is not None and not task.done():
            task.cancel()
