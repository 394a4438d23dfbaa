"""The gateway's admission guard (`http_guards.AdmissionGuard`, pure ASGI): the same behaviour the
`@app.middleware("http")` version had, on a plain FastAPI app with the real key check and limiter."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

from deployments.api_keys import ApiKeyAuth
from deployments.http_guards import AdmissionGuard, install_error_handlers
from deployments.inference_logging import InferenceLogger
from deployments.principal import ANONYMOUS
from deployments.rate_limits import RateLimiter
from deployments.settings import GatewaySettings, RateLimitSettings
from surge_core.inference_log import InferenceLogSettings


class Metrics:
    def __init__(self) -> None:
        self.seen: list[tuple[str, int]] = []

    def observe(self, route: str, status: int, seconds: float) -> None:
        assert seconds >= 0
        self.seen.append((route, status))


def guarded_app(monkeypatch: pytest.MonkeyPatch, max_concurrent: int = 1) -> tuple[FastAPI, Any]:
    monkeypatch.setenv("SURGE_API_KEYS", "k1")
    app = FastAPI()
    install_error_handlers(app)
    limits = RateLimitSettings.model_validate(
        {"default": {"max_concurrent": max_concurrent, "requests_per_minute": 600}}
    )
    gateway = SimpleNamespace(
        auth=ApiKeyAuth(GatewaySettings()),
        limiter=RateLimiter(limits),
        metrics=Metrics(),
        inference_log=InferenceLogger(InferenceLogSettings(enabled=False), "test"),  # logs nowhere
    )
    app.state.gateway = gateway

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, str]:
        caller = getattr(request.state, "caller", ANONYMOUS)
        return {"principal": caller.principal.name}

    @app.post("/v1/completions")
    async def stream() -> StreamingResponse:
        async def body() -> AsyncIterator[str]:
            for i in range(3):
                await asyncio.sleep(0.01)
                yield f"data: {i}\n\n"

        return StreamingResponse(body(), media_type="text/event-stream")

    app.add_middleware(AdmissionGuard)
    return app, gateway


async def call(app: FastAPI, method: str, path: str, key: str | None = "k1") -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.request(method, path, headers=headers)


def test_a_request_without_a_key_gets_openais_401_and_is_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    app, gateway = guarded_app(monkeypatch)
    response = asyncio.run(call(app, "GET", "/v1/models", key=None))
    assert response.status_code == 401 and response.json()["error"]["type"]
    assert gateway.metrics.seen == [("/v1/models", 401)]


def test_health_is_public(monkeypatch: pytest.MonkeyPatch) -> None:
    app, _ = guarded_app(monkeypatch)
    assert asyncio.run(call(app, "GET", "/healthz", key=None)).status_code == 200


def test_an_admitted_request_sees_its_caller_and_gets_the_limit_headers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app, gateway = guarded_app(monkeypatch)
    response = asyncio.run(call(app, "GET", "/v1/models"))
    assert response.status_code == 200
    assert response.json()["principal"] != ANONYMOUS.principal.name
    assert response.headers["x-ratelimit-limit-requests"] == "600"
    assert gateway.metrics.seen == [("/v1/models", 200)]


def test_a_streams_concurrency_slot_is_freed_only_after_its_last_chunk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app, _ = guarded_app(monkeypatch, max_concurrent=1)

    async def scenario() -> tuple[httpx.Response, httpx.Response, httpx.Response]:
        first = asyncio.ensure_future(call(app, "POST", "/v1/completions"))
        await asyncio.sleep(0.015)  # the first stream is running: its slot is taken
        second = await call(app, "POST", "/v1/completions")
        done = await first
        third = await call(app, "POST", "/v1/completions")  # after it ended: the slot is free again
        return done, second, third

    done, second, third = asyncio.run(scenario())
    assert done.status_code == 200 and done.text == "data: 0\n\ndata: 1\n\ndata: 2\n\n"
    assert second.status_code == 429
    assert third.status_code == 200
