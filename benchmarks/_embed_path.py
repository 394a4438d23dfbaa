"""Server CPU per request on the embed path, surge against a default Ray Serve composition of the same work.

`hop_overhead`'s headline. Both sides embed one query sentence per HTTP request with the same MiniLM and
answer the float32 vector as base64:
  surge      POST /v1/embeddings through the Serve proxy, the Gateway (auth, limits, metrics, flow) and the
             Embedder stage (one DeploymentHandle hop, `@serve.batch`); with `--embed-queries gateway`
             the one text is embedded in the Gateway replica (no hop: `gateway.embed_queries`)
  baseline   the textbook composition: Serve proxy -> a FastAPI ingress deployment -> one DeploymentHandle
             hop to a plain embedding deployment (`PlainEmbedder`), no batching
Access logs are off on both (surge's default, set explicitly on the baseline). Requests go one at a time so
both run the model on one sentence per request; CPU is the user + system seconds of the proxy and the app's
replicas (`benchmarks._cpu`), so the load generator is charged to neither. The model's own CPU per sentence
is measured in this process in the same run and subtracted from both, leaving the serving cost:

    ratio = (surge CPU-ms per request - model CPU-ms) / (baseline CPU-ms per request - model CPU-ms)

Worked example: surge 30 ms, baseline 28 ms, model 10 ms -> (30 - 10) / (28 - 10) = 1.11.
Retrieval is not part of this path (surge has no HTTP route that embeds and searches without generating).
"""

from __future__ import annotations

import base64
import time
from typing import Any

from fastapi import FastAPI
from ray import serve
from ray.serve.handle import DeploymentHandle

from benchmarks import _cpu
from benchmarks import _harness as h

BASELINE_APP = "embed-baseline"
BASELINE_PREFIX = "/embed-baseline"
OPTIONS: dict[str, Any] = {
    "max_ongoing_requests": 64,
    "ray_actor_options": {"num_cpus": 0.05},
    "logging_config": {"enable_access_log": False},
}
api = FastAPI()


@serve.deployment(**OPTIONS)
class PlainEmbedder:
    """One embedding call per request: no batching, the model in the replica."""

    def __init__(self) -> None:
        from surge_core.embedding import EmbeddingModelSettings, TextEmbedder

        self.model = TextEmbedder(EmbeddingModelSettings())

    def embed(self, texts: list[str]) -> Any:
        return self.model.embed(texts)


@serve.deployment(**OPTIONS)
@serve.ingress(api)
class EmbedIngress:
    def __init__(self, embedder: DeploymentHandle) -> None:
        self.embedder = embedder

    @api.post("/v1/embeddings")
    async def embeddings(self, body: dict[str, Any]) -> dict[str, Any]:
        vectors = await self.embedder.embed.remote([body["input"]])
        encoded = base64.b64encode(vectors[0].astype("float32").tobytes()).decode()
        return {"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": encoded}]}


def deploy_baseline(port: int) -> str:
    """Deploy the baseline app on the local Serve; returns its embeddings URL."""
    app = EmbedIngress.bind(PlainEmbedder.bind())  # type: ignore[attr-defined]
    serve.run(app, name=BASELINE_APP, route_prefix=BASELINE_PREFIX, blocking=False)
    return f"http://127.0.0.1:{port}{BASELINE_PREFIX}/v1/embeddings"


def model_cpu_ms(texts: list[str]) -> float:
    """CPU-ms per one-sentence `embed` call in this process (the same model and thread count)."""
    from surge_core.embedding import EmbeddingModelSettings, TextEmbedder

    model = TextEmbedder(EmbeddingModelSettings())
    model.embed(texts[:2])
    started = time.process_time()
    for text in texts:
        model.embed([text])
    return (time.process_time() - started) * 1000 / len(texts)


async def cpu_per_request(
    url: str,
    body: dict[str, Any],
    headers: dict[str, str],
    app: str,
    deployments: tuple[str, ...],
    requests: int,
) -> float | None:
    """Server CPU-ms per request over `requests` sequential requests (None when no server is visible)."""
    import httpx

    async with httpx.AsyncClient(timeout=300, headers=headers) as client:
        for _ in range(5):  # warm (and wake a stage that scaled to zero) before the window opens
            h.check_status(await client.post(url, json=body))
        pids = _cpu.serve_pids(app, deployments)
        # The ingress must be visible; a stage with no replica (at zero: surge's Embedder when the one text
        # is embedded in the gateway) costs no CPU.
        if deployments[0] not in pids:
            return None
        window = _cpu.CpuWindow(pids).start()
        for _ in range(requests):
            h.check_status(await client.post(url, json=body))
        window.stop()
    return None if window.total_s is None else window.total_s * 1000 / requests


def measure(
    port: int, gateway: h.ServeTarget, rounds: int, requests: int, texts: list[str]
) -> dict[str, Any]:
    """Interleaved rounds of baseline and surge CPU-ms per request, with the model's CPU-ms per sentence."""
    import asyncio

    import httpx

    from benchmarks import _surge

    url = deploy_baseline(port)
    try:
        deadline = time.monotonic() + 300
        while True:  # the baseline's ingress answers once both replicas run
            try:
                if httpx.post(url, json={"input": "ready?"}, timeout=30).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not answer within 300 s")
            time.sleep(0.5)
        models = httpx.get(f"{gateway.base_url}/v1/models", headers=gateway.headers(), timeout=30).json()
        model = str(models["data"][-1]["id"])
        text = texts[0]
        samples: dict[str, list[float]] = {"baseline": [], "surge": [], "model": []}
        for _ in range(rounds):
            samples["model"].append(model_cpu_ms(texts))
            base = asyncio.run(
                cpu_per_request(
                    url, {"input": text}, {}, BASELINE_APP, ("EmbedIngress", "PlainEmbedder"), requests
                )
            )
            surge = asyncio.run(
                cpu_per_request(
                    f"{gateway.base_url}/v1/embeddings",
                    {"model": model, "input": text, "encoding_format": "base64"},
                    gateway.headers(),
                    _surge.BENCH_APP,
                    ("Gateway", "Embedder"),
                    requests,
                )
            )
            if base is None or surge is None:
                return {"visible": False}
            samples["baseline"].append(base)
            samples["surge"].append(surge)
    finally:
        serve.delete(BASELINE_APP)
    ratios = [
        (s - m) / (b - m)
        for s, b, m in zip(samples["surge"], samples["baseline"], samples["model"], strict=True)
    ]
    return {
        "visible": True,
        "requests_per_round": requests,
        "server_cpu_ms_per_request": {k: h.across_rounds(v) for k, v in samples.items()},
        "serving_cpu_ratio": h.across_rounds(ratios),
    }
