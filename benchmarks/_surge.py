"""Start surge locally for a benchmark (or point at a running one), with the settings the benchmark needs.

Locally the app is deployed as its own Serve application (`surge-bench` under `/surge-bench`), so a
benchmark can run beside another surge app in the same Ray (the smoke tests do) and redeploy variants
(scale-to-zero, keep-warm, chain wake on/off) one after another without touching anything else.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks._harness import ServeTarget, local_serve, wait_http_ok

BENCH_APP = "surge-bench"
BENCH_PREFIX = "/surge-bench"
BENCH_KEY = "sk-surge-bench"

# Scale to zero within seconds, so cold starts can be measured without long waits.
FAST_ZERO = {
    "min_replicas": 0,
    "max_replicas": 1,
    "target_ongoing_requests": 4,
    "upscale_delay_s": 0,
    "downscale_delay_s": 4,
    "downscale_to_zero_delay_s": 4,
    "look_back_period_s": 2,
    "metrics_interval_s": 0.5,
}
ALWAYS_ON = {**FAST_ZERO, "min_replicas": 1}


def add_app_arguments(parser: argparse.ArgumentParser, default_llm: str = "tiny-llama") -> None:
    parser.add_argument(
        "--llm-model",
        default=None,
        help=f"LLM for a local run: 'smollm2-135m-instruct', 'tiny-llama' or a model folder "
        f"(default: {default_llm}; --quick always uses tiny-llama)",
    )
    parser.add_argument("--llm-engine", default="vllm", choices=["vllm", "transformers"])
    parser.add_argument("--llm-device", default="cpu", choices=["cpu", "cuda"], help="cuda on a GPU node")
    parser.add_argument(
        "--embed-queries",
        default="embedder",
        choices=["embedder", "gateway"],
        help="where a local app embeds RAG questions (gateway.embed_queries; issue 13's no-hop lever)",
    )
    parser.add_argument(
        "--retrieve-queries",
        default="retriever",
        choices=["retriever", "gateway"],
        help="where a local app searches RAG questions (gateway.retrieve_queries; issue 13's no-hop lever)",
    )
    parser.set_defaults(default_llm=default_llm)


def llm_model(args: argparse.Namespace) -> str:
    if args.quick:
        return "tiny-llama"
    return str(args.llm_model or args.default_llm)


def served_name(model: str) -> str:
    return Path(model).name if "/" in model else model


def bench_settings(
    args: argparse.Namespace,
    index_dir: Path,
    *,
    embedder: dict[str, Any] | None = None,
    llm: dict[str, Any] | None = None,
    retriever: dict[str, Any] | None = None,
    gateway: dict[str, Any] | None = None,
) -> Any:
    """AppSettings for a local benchmark app; each dict overrides that stage's defaults here."""
    from deployments.settings import AppSettings

    model = llm_model(args)
    gpu = args.llm_device == "cuda"
    return AppSettings.model_validate(
        {
            "gateway": {
                "env": {"SURGE_API_KEYS": BENCH_KEY},
                "autoscaling": {"min_replicas": 1, "max_replicas": 1},
                "max_ongoing_requests": 256,
                "max_queued_requests": -1,
                "cold_start_timeout_s": 600,
                # Short context: the tiny test model's 512-token vocabulary spends a token per 2-3
                # characters, and the prompt must fit max_model_len with any model.
                "rag_top_k": 2,
                "chunk_chars": 300,
                "chunk_overlap_chars": 30,
                "embed_queries": getattr(args, "embed_queries", "embedder"),
                "retrieve_queries": getattr(args, "retrieve_queries", "retriever"),
                **(gateway or {}),
            },
            "embedder": {
                "autoscaling": ALWAYS_ON,
                "num_cpus": 0.5,
                "max_ongoing_requests": 256,
                **(embedder or {}),
            },
            "retriever": {
                "store": {"backend": "embedded", "path": str(index_dir)},
                "num_cpus": 0.25,
                **(retriever or {}),
            },
            "llm": {
                "model": model,
                "served_model_name": served_name(model),
                "engine": args.llm_engine,
                "device": args.llm_device,
                "num_gpus": 1 if gpu else 0,
                "dtype": "auto" if gpu else "float32",
                "max_model_len": 1024,
                # --quick: a small fixed KV cache skips vLLM's memory profiling, so the tiny model loads fast.
                **({"kv_cache_memory_mib": 64} if args.quick else {}),
                "num_cpus": 1,
                "autoscaling": ALWAYS_ON,
                **(llm or {}),
            },
        }
    )


@contextmanager
def surge_target(
    args: argparse.Namespace, settings: Any | None = None, **overrides: Any
) -> Iterator[ServeTarget]:
    """A running surge: the one at `--base-url`, or a local app deployed with `settings` (or overrides)."""
    if args.base_url:
        yield ServeTarget(base_url=args.base_url.rstrip("/"), api_key=args.api_key, local=False)
        return
    with local_serve() as port, tempfile.TemporaryDirectory(prefix="surge-bench-index-") as index_dir:
        yield deploy(port, settings or bench_settings(args, Path(index_dir), **overrides))


def deploy(port: int, settings: Any, timeout_s: float = 600) -> ServeTarget:
    """(Re)deploy the benchmark app with `settings` on the local Serve; waits for /healthz."""
    from ray import serve

    from deployments.app import build_app

    serve.run(build_app(settings), name=BENCH_APP, route_prefix=BENCH_PREFIX, blocking=False)
    base = f"http://127.0.0.1:{port}{BENCH_PREFIX}"
    target = ServeTarget(base_url=base, api_key=BENCH_KEY, local=True)
    # The key is sent even to /healthz: under a route prefix the gateway does not see it as a public path.
    wait_http_ok(f"{base}/healthz", min(timeout_s, 120), headers=target.headers())
    return target


def undeploy() -> None:
    from ray import serve

    serve.delete(BENCH_APP)


def wait_ready(target: ServeTarget, timeout_s: float = 600) -> float:
    """Wait until /readyz says every deployment runs (models loaded); returns seconds waited."""
    return wait_http_ok(f"{target.base_url}/readyz", timeout_s, headers=target.headers())


def replicas(target: ServeTarget) -> dict[str, int]:
    """RUNNING replicas per stage, from the gateway's /readyz (works against a cluster too)."""
    import httpx

    body = httpx.get(f"{target.base_url}/readyz", headers=target.headers(), timeout=10).json()
    return {name: int(d["replicas"].get("RUNNING", 0)) for name, d in body.get("deployments", {}).items()}


def wait_for_zero(target: ServeTarget, stages: tuple[str, ...], timeout_s: float = 120) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        counts = replicas(target)
        if all(counts.get(s, 0) == 0 for s in stages):
            return True
        time.sleep(0.5)
    return False


def llm_name(target: ServeTarget) -> str:
    """The served LLM name (first model /v1/models lists)."""
    import httpx

    models = httpx.get(f"{target.base_url}/v1/models", headers=target.headers(), timeout=10).json()["data"]
    return str(models[0]["id"])


def seed_documents(target: ServeTarget, count: int, seed: int = 0) -> list[str]:
    """Index `count` short synthetic documents through /v1/documents; returns their ids."""
    import httpx

    docs = synthetic_documents(count, seed)
    for start in range(0, len(docs), 32):
        response = httpx.post(
            f"{target.base_url}/v1/documents",
            json={"documents": docs[start : start + 32]},
            headers=target.headers(),
            timeout=600,
        )
        response.raise_for_status()
    return [d["id"] for d in docs]


TOPICS = [
    "solar panels",
    "river deltas",
    "jazz piano",
    "sourdough bread",
    "glacier ice",
    "chess openings",
    "bird migration",
    "volcanic soil",
    "tidal energy",
    "honey bees",
    "paper making",
    "lunar craters",
]


def synthetic_documents(count: int, seed: int = 0) -> list[dict[str, Any]]:
    """Deterministic short documents on a dozen topics (about 300-600 characters each)."""
    import random

    rng = random.Random(seed)
    docs = []
    for i in range(count):
        topic = TOPICS[i % len(TOPICS)]
        facts = [
            f"Note {i} about {topic}: fact {j} says the {topic} measure {rng.randint(1, 999)} units "
            f"under condition {rng.choice('ABCDEFG')}."
            for j in range(rng.randint(3, 6))
        ]
        docs.append({"id": f"bench-doc-{seed}-{i}", "text": " ".join(facts), "metadata": {"topic": topic}})
    return docs


def sentences(count: int, seed: int = 0) -> list[str]:
    """Deterministic sentences of 8-30 words, like short passages sent for embedding."""
    import random

    rng = random.Random(seed)
    words = [
        "the",
        "a",
        "model",
        "request",
        "batch",
        "token",
        "cluster",
        "replica",
        "queue",
        "latency",
        "stream",
        "vector",
        "index",
        "river",
        "engine",
        "kernel",
        "memory",
        "signal",
        "window",
        "drift",
        "event",
        "topic",
        "partition",
        "offset",
        "answer",
        "question",
    ]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(8, 30))) + "." for _ in range(count)]
