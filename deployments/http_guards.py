"""What stands in front of every route: API-key auth, the body-size limit and error rendering.

Bad input always gets a 4xx with OpenAI's error object and a message naming the field; a 500 means a bug.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException

from deployments.api_keys import ApiKeyAuth
from deployments.openai_api import ApiError
from deployments.principal import Caller
from deployments.rate_limits import Admission, RateLimiter
from deployments.request_tracing import RequestSpan
from surge_core import tracing

logger = logging.getLogger("ray.serve")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

PUBLIC_PATHS = frozenset({"/healthz", "/readyz"})


@dataclass(frozen=True)
class Admitted:
    """An admitted request: the caller the flows are given, and its limiter admission (headers, release)."""

    caller: Caller
    limits: Admission


def app_path(scope: Scope) -> str:
    """The request path inside the app: without the route prefix Serve mounts it under (`root_path`)."""
    path: str = scope.get("path", "/")
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :] or "/"
    return path


# The scope each route needs (a valid key is needed by every route outside PUBLIC_PATHS); RAG also needs
# `documents:read`, checked by the chat flow since it depends on the body.
ROUTE_SCOPES: dict[str, str | None] = {
    "/v1/models": None,
    "/openapi.json": None,
    "/v1/embeddings": "embeddings",
    "/v1/chat/completions": "inference",
    "/v1/completions": "inference",
    "/v1/documents": "documents:write",
}


def admit(auth: ApiKeyAuth, limiter: RateLimiter, route: str, authorization: str | None) -> Admitted:
    """Who is calling (401), may they call this route (403), is it within their limits (429)."""
    principal = auth.check(authorization)
    scope = ROUTE_SCOPES.get(route)
    if scope is not None:
        principal.require(scope)
    admission = limiter.admit(principal)
    return Admitted(Caller(principal, admission.spend_tokens), admission)


# Generation routes: their flows log every request they start; the guard logs their admission refusals.
LOGGED_ROUTES = frozenset({"/v1/chat/completions", "/v1/completions"})


class AdmissionGuard:
    """Pure ASGI middleware: auth, scopes, per-principal limits and per-request metrics for every route
    (health is public). The app's `state.gateway` supplies `auth`, `limiter`, `metrics` and `inference_log`.

    A refused request gets OpenAI's error object (401/403/429, with the limiter's headers). An admitted one
    runs with `request.state.caller` set; its response carries the limit headers, the metrics see its
    status when the response starts, and its concurrency slot is freed when the app returns: after the
    last body chunk of a stream, or on a failure or disconnect. Decision: not `@app.middleware("http")`
    (Starlette's BaseHTTPMiddleware), which runs the app in a task group and relays the body through an
    extra memory stream per request: a cost paid on every SSE chunk of a stream.
    """

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        gateway = scope["app"].state.gateway
        started = time.perf_counter()
        route = app_path(scope)
        admitted: Admitted | None = None
        # The request's span (a no-op unless tracing is on); probes are not traced.
        span = RequestSpan(scope.get("method", ""), route, _headers(scope), traced=route not in PUBLIC_PATHS)
        if route not in PUBLIC_PATHS:
            try:
                admitted = admit(gateway.auth, gateway.limiter, route, _header(scope, b"authorization"))
            except ApiError as error:
                if error.status_code in (403, 429):
                    # Name the principal, never the key.
                    logger.info(
                        "%s %s -> %d: %s", scope.get("method"), route, error.status_code, error.message
                    )
                if route in LOGGED_ROUTES:  # refused at admission: no flow logs it
                    gateway.inference_log.record_rejection(
                        route=route,
                        status_code=error.status_code,
                        arrived_at=time.time() - (time.perf_counter() - started),
                        principal=None,
                        tenant=None,
                    )
                response = JSONResponse(error.body(), status_code=error.status_code, headers=error.headers)
                await response(scope, receive, send)
                span.finish(error.status_code)
                gateway.metrics.observe(route, error.status_code, time.perf_counter() - started)
                return
            scope.setdefault("state", {})["caller"] = admitted.caller
            span.admitted(admitted.caller.principal.tenant, admitted.caller.principal.name)
        status = 500

        async def send_with_limits(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if admitted is not None:
                    MutableHeaders(scope=message).update(admitted.limits.headers)
                gateway.metrics.observe(route, status, time.perf_counter() - started)
            await send(message)

        try:
            await self.app(scope, receive, send_with_limits)
        except BaseException as error:
            span.failed(error)
            raise
        else:
            span.finish(status)  # after the last body chunk: a stream's span covers the whole stream
        finally:
            if admitted is not None:
                admitted.limits.release()


def _headers(scope: Scope) -> dict[str, str]:
    """The request's headers as a dict, read only when tracing is on (it is per request work)."""
    if not tracing.enabled():
        return {}
    return {
        bytes(k).decode("latin-1").lower(): bytes(v).decode("latin-1") for k, v in scope.get("headers") or ()
    }


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or ():
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


class BodySizeLimit:
    """Pure ASGI middleware: 413 for bodies over `max_bytes`, whether declared (Content-Length) or streamed.

    A streamed body is cut off at the limit: the app sees an empty end of body, and whatever it answers is
    replaced by the 413 (frameworks turn exceptions raised while reading the body into a 400, so raising
    from `receive` would not work).
    """

    def __init__(self, app: Callable[..., Awaitable[None]], max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(send)
            return
        received = 0
        too_large = False

        async def counting_receive() -> Message:
            nonlocal received, too_large
            if too_large:
                return {"type": "http.request", "body": b"", "more_body": False}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    too_large = True
                    return {"type": "http.request", "body": b"", "more_body": False}
            return message

        async def guarded_send(message: Message) -> None:
            if not too_large:
                await send(message)
            elif message["type"] == "http.response.start":
                await self._reject(send)
            # else: swallow the app's own body; the 413 is already sent.

        await self.app(scope, counting_receive, guarded_send)

    async def _reject(self, send: Send) -> None:
        error = ApiError(413, f"request body exceeds {self.max_bytes} bytes", param="body")
        payload = json.dumps(error.body()).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    errors = exc.errors()
    if not errors:
        return "invalid request", None
    first = errors[0]
    if first.get("type") == "json_invalid":
        return "malformed JSON body: " + str(first.get("ctx", {}).get("error", first.get("msg"))), "body"
    location = [str(part) for part in first.get("loc", ()) if part != "body"]
    field = ".".join(location) or None
    return (f"{field}: {first.get('msg')}" if field else str(first.get("msg"))), field


def install_error_handlers(app: FastAPI) -> None:
    """Render every error as OpenAI's error object with the right status.

    Serve installs its own handlers for BackPressureError and DeploymentUnavailableError on the ingress app
    (plain-text 503s, replacing any registered here), so the stage clients translate those two themselves
    (`deployments.stage_client.wait_for_stage`)."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        message, field = _validation_message(exc)
        return JSONResponse(ApiError(400, message, param=field).body(), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        error = ApiError(exc.status_code, str(exc.detail), error_type="invalid_request_error")
        return JSONResponse(error.body(), status_code=exc.status_code)
