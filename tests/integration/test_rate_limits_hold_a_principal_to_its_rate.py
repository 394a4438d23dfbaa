"""Per-principal rate limit through the real app: the `limited` tenant may make 10 requests/s (600 per
minute, a one-second bucket); offered 50 requests/s for 20 s, the gateway accepts 10/s within +-10 %, and
every refusal is a 429 with Retry-After and the x-ratelimit-* headers. Limits hold per gateway replica; the
test app runs one."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from tests.fixtures_serve import LIMITED_RPS, SurgeApp

pytestmark = pytest.mark.integration

OFFERED_RPS = 50
DURATION_S = 20.0


async def _offer(app: SurgeApp) -> list[httpx.Response]:
    headers = {"Authorization": "Bearer sk-limited"}
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
    async with httpx.AsyncClient(base_url=app.base_url, headers=headers, timeout=60, limits=limits) as client:
        started = time.monotonic()
        tasks = []
        for i in range(int(OFFERED_RPS * DURATION_S)):
            # Open loop: each request leaves on its schedule, whatever the others are doing.
            await asyncio.sleep(max(0.0, started + i / OFFERED_RPS - time.monotonic()))
            tasks.append(asyncio.create_task(client.get("/v1/models")))
        return list(await asyncio.gather(*tasks))


def test_offered_five_times_the_rate_the_gateway_accepts_the_rate_and_says_when_to_retry(
    surge_app: SurgeApp,
) -> None:
    time.sleep(1.5)  # a full bucket
    responses = asyncio.run(_offer(surge_app))
    statuses = [r.status_code for r in responses]
    accepted, refused = statuses.count(200), [r for r in responses if r.status_code == 429]
    expected = LIMITED_RPS * DURATION_S
    print(
        f"\nrate limit: offered {len(responses)} in {DURATION_S:.0f} s, accepted {accepted} "
        f"(limit {expected:.0f}, ratio {accepted / expected:.3f}), 429: {len(refused)}, "
        f"other: {sorted((s, statuses.count(s)) for s in set(statuses) - {200, 429})}"
    )
    # Anything not accepted is a refusal that says when to retry: 429 from the limiter, or, when the busy
    # 2-core machine stalls the test app's small gateway queue (max 6 running + 4 queued), Serve's
    # back-pressure 503 (seen: 0 and 24 of 1000 in two runs).
    rejected = [r for r in responses if r.status_code != 200]
    assert {r.status_code for r in rejected} <= {429, 503}
    assert len(rejected) - len(refused) <= 0.05 * len(responses)
    assert abs(accepted - expected) <= 0.1 * expected
    assert all(r.headers.get("Retry-After", "").isdigit() for r in rejected)
    assert all("x-ratelimit-limit-requests" in r.headers for r in refused)
    assert responses[0].headers["x-ratelimit-limit-requests"] == str(LIMITED_RPS * 60)
