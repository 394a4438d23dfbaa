"""Embedding throughput: sentences/s through surge's /v1/embeddings (Serve dynamic batching) against
sentence-transformers called directly in this process on the same cores, at several concurrency levels.

Baselines (same model, same thread count as one Embedder replica):
  direct batch     `TextEmbedder.embed` on batches of `max_batch_size` sentences: the model's ceiling
  direct single    one sentence per call: what a naive service without batching does
surge: one sentence per HTTP request, `concurrency` requests in flight, merged by `@serve.batch`.

    python -m benchmarks.embedding_throughput [--quick]
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from benchmarks import _harness as h
from benchmarks import _surge

NAME = "embedding_throughput"


def main(argv: list[str] | None = None) -> Path:
    parser = h.common_parser(__doc__ or NAME)
    parser.add_argument("--sentences", type=int, default=None, help="sentences per measurement")
    parser.add_argument("--concurrency", type=int, nargs="+", default=None)
    parser.add_argument("--torch-threads", type=int, default=1, help="threads for the in-process baseline")
    _surge.add_app_arguments(parser)
    args = parser.parse_args(argv)
    rounds = args.rounds or (1 if args.quick else 3)
    count = args.sentences or (64 if args.quick else 512)
    concurrencies = args.concurrency or ([1, 8] if args.quick else [1, 4, 16, 64])
    started = time.time()
    machine = h.machine_info()
    texts = _surge.sentences(count, args.seed)

    from deployments.settings import EmbedderSettings
    from surge_core.embedding import TextEmbedder

    settings = EmbedderSettings(torch_threads=args.torch_threads)
    local = TextEmbedder(settings)
    local.embed(texts[:8])  # warm-up
    overrides = {
        "llm": {"autoscaling": _surge.FAST_ZERO},
        "retriever": {"autoscaling": {"min_replicas": 0, "max_replicas": 1}},
    }
    per_round: dict[str, list[float]] = {}
    latencies: dict[str, list[float]] = {}
    with _surge.surge_target(args, **overrides) as target:
        model = _embedding_model(target)
        asyncio.run(_surge_rate(target, model, texts[:16], 4))  # warm the path and the replica
        bar = h.progress_bar("embedding", rounds * (2 + len(concurrencies)))
        for _ in range(rounds):
            t0 = time.perf_counter()
            for start in range(0, count, settings.max_batch_size):
                local.embed(texts[start : start + settings.max_batch_size])
            per_round.setdefault("direct batch", []).append(count / (time.perf_counter() - t0))
            bar.update(1)
            t0 = time.perf_counter()
            singles = []
            for text in texts:
                t1 = time.perf_counter()
                local.embed([text])
                singles.append(time.perf_counter() - t1)
            per_round.setdefault("direct single", []).append(count / (time.perf_counter() - t0))
            latencies.setdefault("direct single", []).extend(singles)
            bar.update(1)
            for concurrency in concurrencies:
                result = asyncio.run(_surge_rate(target, model, texts, concurrency))
                if result.errors:
                    raise RuntimeError(f"/v1/embeddings at concurrency {concurrency}: {result.errors}")
                label = f"surge c={concurrency}"
                per_round.setdefault(label, []).append(result.throughput)
                latencies.setdefault(label, []).extend(result.latencies)
                bar.update(1)
        bar.close()
    return report(args, per_round, latencies, rounds, count, concurrencies, started, machine, target)


def _embedding_model(target: h.ServeTarget) -> str:
    import httpx

    models = httpx.get(f"{target.base_url}/v1/models", headers=target.headers(), timeout=30).json()["data"]
    return str(models[-1]["id"])


async def _surge_rate(target: h.ServeTarget, model: str, texts: list[str], concurrency: int) -> h.LoadResult:
    import httpx

    limits = httpx.Limits(max_connections=concurrency + 2, max_keepalive_connections=concurrency + 2)
    async with httpx.AsyncClient(limits=limits, timeout=300, headers=target.headers()) as client:

        async def call(i: int) -> int:
            response = await client.post(
                f"{target.base_url}/v1/embeddings",
                json={"model": model, "input": texts[i], "encoding_format": "base64"},
            )
            h.check_status(response)
            return 1

        return await h.closed_loop(call, len(texts), concurrency)


def report(
    args: Any,
    per_round: dict[str, list[float]],
    latencies: dict[str, list[float]],
    rounds: int,
    count: int,
    concurrencies: list[int],
    started: float,
    machine: dict[str, Any],
    target: h.ServeTarget,
) -> Path:
    ceiling = per_round["direct batch"]
    figures: dict[str, Any] = {}
    rows = []
    for label, rates in per_round.items():
        versus = [r / c for r, c in zip(rates, ceiling, strict=True)]
        figures[label] = {
            "sentences_per_s": h.across_rounds(rates, 1),
            "ratio_to_direct_batch": h.across_rounds(versus),
            "latency_ms": h.summarize(latencies.get(label, []), 1000),
        }
        lat = figures[label]["latency_ms"]
        rows.append(
            [
                label,
                figures[label]["sentences_per_s"]["median"],
                f"{min(rates):.1f}-{max(rates):.1f}",
                figures[label]["ratio_to_direct_batch"]["median"],
                lat.get("p50"),
                lat.get("p99"),
            ]
        )
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    plots = [
        h.plot_bars(
            out / f"{NAME}.png",
            {
                label: {"sentences/s (median of rounds)": figures[label]["sentences_per_s"]["median"]}
                for label in per_round
            },
            "sentences/s",
            "Embedding throughput: surge /v1/embeddings vs direct sentence-transformers",
        )
    ]
    results = h.Results(
        name=NAME,
        description="Sentences/s through /v1/embeddings (one sentence per request, dynamic batching) vs "
        "sentence-transformers in-process, interleaved rounds.",
        parameters={
            "rounds": rounds,
            "sentences": count,
            "concurrency": concurrencies,
            "model": "all-MiniLM-L6-v2",
            "baseline_torch_threads": args.torch_threads,
            "target": target.base_url,
            "local": target.local,
        },
        figures=figures,
        table_headers=["path", "sentences/s", "range", "x direct batch", "p50 ms", "p99 ms"],
        table_rows=rows,
        notes=[
            "The replica and the in-process baseline use 1 torch thread each; the HTTP client, proxy, "
            "gateway and replica share the same cores."
        ],
        plots=plots,
    )
    return h.write_results(results, out, started, machine)


if __name__ == "__main__":
    main()
