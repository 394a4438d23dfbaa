"""Bursts at zero: a burst of concurrent requests that reaches a stage scaled to zero is held while the stage's
first replica starts (queued at Serve's handle, bounded by `max_queued_requests`) and every request then
succeeds: no 503 before the cold-start timeout, no request lost."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from tests.fixtures_serve import SurgeApp, replicas_running, wait_for_replicas

pytestmark = pytest.mark.integration

# The test gateway admits 6 running + 4 queued requests (small on purpose, for the overload test); 8 requests
# 0.2 s apart stay inside that, so any refusal would be the waking stage's. Sent all at once, the gateway's own
# 4-request queue refused some: Serve counts requests not yet assigned to a replica as queued, so a gateway's
# `max_queued_requests` must be sized for the bursts it should absorb (the default is 256).
BURST = 8
SPACING_S = 0.2


async def _one(client: httpx.AsyncClient, i: int) -> tuple[httpx.Response, float]:
    await asyncio.sleep(i * SPACING_S)
    started = time.monotonic()
    response = await client.post(
        "/v1/embeddings", json={"model": "all-MiniLM-L6-v2", "input": [f"burst {i}"]}
    )
    return response, time.monotonic() - started


async def _burst(app: SurgeApp) -> list[tuple[httpx.Response, float]]:
    async with httpx.AsyncClient(base_url=app.base_url, headers=app.headers(), timeout=300) as client:
        return list(await asyncio.gather(*(_one(client, i) for i in range(BURST))))


def test_a_burst_of_requests_at_a_stage_at_zero_all_get_200_once_it_is_up(surge_app: SurgeApp) -> None:
    assert wait_for_replicas("Embedder", lambda n: n == 0, timeout_s=120) == 0, "Embedder did not reach zero"
    answers = asyncio.run(_burst(surge_app))
    responses = [r for r, _ in answers]
    # The last request left while the first was still waiting for the cold start: the whole burst was held.
    assert answers[0][1] > (BURST - 1) * SPACING_S, answers
    assert [r.status_code for r in responses] == [200] * BURST, [r.text[:200] for r in responses]
    vectors = [r.json()["data"][0]["embedding"] for r in responses]
    assert all(len(v) == 384 for v in vectors)
    assert len({tuple(v) for v in vectors}) == BURST  # each answer is its own request's, none duplicated
    assert replicas_running("Embedder") >= 1
