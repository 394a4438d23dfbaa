"""What auth + scopes + per-principal rate limiting add to a gateway request, measured against the same
request without them, in the same run.

Both apps are the gateway's FastAPI edge in miniature: the same `/v1/models` handler behind an HTTP
middleware, driven in-process through httpx's ASGI transport (no network, so the difference is the
guard's own cost). "guarded" runs `deployments.http_guards.admit` (hash the key, look up its principal in
a keys file of 1,000 principals, check the route's scope, take from the principal's request bucket, with a
token bucket and a concurrency cap) and adds the x-ratelimit-* headers; "bare" skips it. Rounds
alternate between the two, and the guard's own call is also timed alone.

    python -m benchmarks.auth_overhead [--requests 3000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml
from fastapi import FastAPI, Request

from benchmarks._harness import DEFAULT_OUT, machine_info
from benchmarks._headline import Headline
from deployments.api_keys import ApiKeyAuth
from deployments.http_guards import admit
from deployments.rate_limits import RateLimiter
from deployments.settings import GatewaySettings, RateLimitSettings

KEY = "sk-bench-0500"


def _settings(folder: Path) -> GatewaySettings:
    principals = [
        {
            "name": f"p{i}",
            "tenant": f"t{i % 10}",
            "scopes": ["inference"],
            "key_sha256": hashlib.sha256(f"sk-bench-{i:04d}".encode()).hexdigest(),
        }
        for i in range(1000)
    ]
    keys = folder / "keys.yaml"
    keys.write_text(yaml.safe_dump({"principals": principals}), encoding="utf-8")
    limits = {"requests_per_minute": 10**9, "tokens_per_minute": 10**9, "max_concurrent": 1000, "burst_s": 60}
    return GatewaySettings(
        api_keys_file=str(keys),
        rate_limits=RateLimitSettings.model_validate({"default": limits}),
    )


def _app(guarded: bool, settings: GatewaySettings) -> FastAPI:
    app = FastAPI()
    auth, limiter = ApiKeyAuth(settings), RateLimiter(settings.rate_limits)

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Any:
        if not guarded:
            return await call_next(request)
        admitted = admit(auth, limiter, "/v1/models", request.headers.get("authorization"))
        request.state.caller = admitted.caller
        response = await call_next(request)
        response.headers.update(admitted.limits.headers)
        admitted.limits.release()
        return response

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": "m", "object": "model", "owned_by": "surge"}]}

    return app


async def _round(app: FastAPI, requests: int) -> list[float]:
    transport = httpx.ASGITransport(app=app)
    headers = {"Authorization": f"Bearer {KEY}"}
    samples: list[float] = []
    async with httpx.AsyncClient(transport=transport, base_url="http://bench", headers=headers) as client:
        for _ in range(requests):
            started = time.perf_counter()
            response = await client.get("/v1/models")
            samples.append(time.perf_counter() - started)
            assert response.status_code == 200
    return samples


def _summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_us": statistics.median(ordered) * 1e6,
        "p99_us": ordered[int(len(ordered) * 0.99) - 1] * 1e6,
        "mean_us": statistics.fmean(ordered) * 1e6,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for auth_overhead.json")
    parser.add_argument("--quick", action="store_true", help="300 requests x 2 rounds")
    args, _ = parser.parse_known_args(argv)  # run_all passes every benchmark the same flags
    if args.quick:
        args.requests, args.rounds = min(args.requests, 300), min(args.rounds, 2)
    machine = machine_info()
    os.environ.pop("SURGE_API_KEYS", None)
    with tempfile.TemporaryDirectory() as folder:
        settings = _settings(Path(folder))
        apps = {"bare": _app(False, settings), "guarded": _app(True, settings)}
        samples: dict[str, list[float]] = {"bare": [], "guarded": []}
        asyncio.run(_round(apps["bare"], 200))  # warm-up
        asyncio.run(_round(apps["guarded"], 200))
        for _ in range(args.rounds):
            for name, app in apps.items():
                samples[name].extend(asyncio.run(_round(app, args.requests)))
        auth, limiter = ApiKeyAuth(settings), RateLimiter(settings.rate_limits)
        direct: list[float] = []
        for _ in range(args.requests):
            started = time.perf_counter()
            admitted = admit(auth, limiter, "/v1/models", f"Bearer {KEY}")
            admitted.limits.release()
            direct.append(time.perf_counter() - started)
    result: dict[str, Any] = {
        "requests_per_variant": len(samples["bare"]),
        "bare": _summary(samples["bare"]),
        "guarded": _summary(samples["guarded"]),
        "admit_call_alone": _summary(direct),
    }
    result["added_median_us"] = result["guarded"]["median_us"] - result["bare"]["median_us"]
    result["added_mean_us"] = result["guarded"]["mean_us"] - result["bare"]["mean_us"]
    result["headline"] = Headline.ratio(
        "median request latency with auth + scopes + rate limits / without (in-process ASGI)",
        result["guarded"]["median_us"],
        result["bare"]["median_us"],
        goal=None,
        better="lower",
        baseline="the same FastAPI handler without the guard middleware (same run)",
    ).as_dict()
    result.update(
        benchmark="auth_overhead",
        git_commit=machine["git_commit"],
        machine=machine,
        load_average_at_start=machine["load_average_at_start"],
        load_average_at_end=list(os.getloadavg()),
    )
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "auth_overhead.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


if __name__ == "__main__":
    main()
