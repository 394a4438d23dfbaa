"""Back-pressure: beyond max_ongoing + max_queued, requests get a fast 503 with Retry-After, not a hang."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from tests.fixtures_serve import SurgeApp

pytestmark = pytest.mark.integration


async def one_slow_request(client: httpx.AsyncClient, app: SurgeApp) -> tuple[int, float, str | None, str]:
    started = time.perf_counter()
    body = {
        "model": "tiny-llama",
        "prompt": "Once upon a time",
        "max_tokens": 200,
        "temperature": 1.0,
        "stream": True,
    }
    async with client.stream(
        "POST", f"{app.base_url}/v1/completions", json=body, headers=app.headers()
    ) as response:
        body = b"".join([chunk async for chunk in response.aiter_bytes()])
        return (
            response.status_code,
            time.perf_counter() - started,
            response.headers.get("retry-after"),
            body[:200].decode(errors="replace") if response.status_code != 200 else "",
        )


def test_excess_concurrent_requests_are_rejected_fast_and_the_rest_succeed(surge_app: SurgeApp) -> None:
    # Warm the LLM first so the burst measures back-pressure, not a cold start.
    httpx.post(
        f"{surge_app.base_url}/v1/completions",
        headers=surge_app.headers(),
        timeout=300,
        json={"model": "tiny-llama", "prompt": "hi", "max_tokens": 1},
    )
    gateway = surge_app.settings.gateway
    capacity = gateway.max_ongoing_requests + gateway.max_queued_requests

    async def burst() -> list[tuple[int, float, str | None, str]]:
        async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=100)) as client:
            return await asyncio.gather(*(one_slow_request(client, surge_app) for _ in range(capacity * 3)))

    results = asyncio.run(burst())
    statuses = [status for status, _, _, _ in results]
    rejected = [(seconds, retry) for status, seconds, retry, _ in results if status == 503]
    reasons = sorted({body for _, _, _, body in results if body})
    # "The rest succeed": every request not dropped by back-pressure got its answer. How many get through
    # depends on timing (a loaded machine admitted 5 of the 6 running slots plus 4 queued in two runs).
    assert statuses.count(200) >= 1, (statuses, reasons)
    assert all("backpressure" in reason for reason in reasons), reasons
    assert rejected, f"no request was rejected: {statuses}"
    assert set(statuses) <= {200, 503}, statuses
    assert all(retry is not None and int(retry) >= 1 for _, retry in rejected)
    assert max(seconds for seconds, _ in rejected) < 5.0, "rejections must be fast, not queued"
