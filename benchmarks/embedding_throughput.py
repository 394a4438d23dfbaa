"""Embedding throughput: sentences/s through surge's /v1/embeddings (Serve dynamic batching) against
sentence-transformers called directly in this process on the same cores.

Baselines (same model, same thread count as one Embedder replica):
  direct batch     `TextEmbedder.embed` on batches of `max_batch_size` sentences: the model's ceiling
  direct single    one sentence per call: what a naive service without batching does
surge: `--inputs-per-request` sentences per HTTP request (16: the headline) and one sentence per request,
`concurrency` requests in flight, merged by `@serve.batch`.

The load generator (this process's HTTP client) is charged to neither side: on a local Ray the CPU seconds
of the server processes (Serve proxy, Gateway, Embedder; `benchmarks._cpu`) are counted, and surge's figure
is sentences per server CPU-second against the ceiling's sentences per CPU-second of this process. The
client's own CPU seconds are recorded beside them. Against `--base-url` the server is not visible and the
ratios are wall-clock (the metric says so).

    python -m benchmarks.embedding_throughput [--quick]
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from benchmarks import _cpu, _surge
from benchmarks import _harness as h

NAME = "embedding_throughput"


HEADLINE_GOAL = 0.9  # 16 inputs per request: near the in-process batched ceiling
SINGLE_GOAL = 0.96  # one sentence per request: at least double the 0.48x measured before issue 13


def main(argv: list[str] | None = None) -> Path:
    parser = h.common_parser(__doc__ or NAME)
    parser.add_argument("--sentences", type=int, default=None, help="sentences per measurement")
    parser.add_argument("--concurrency", type=int, nargs="+", default=None, help="one-sentence requests")
    parser.add_argument(
        "--batch-concurrency", type=int, nargs="+", default=None, help="concurrency of multi-input requests"
    )
    parser.add_argument("--inputs-per-request", type=int, default=16)
    parser.add_argument("--torch-threads", type=int, default=1, help="threads for the in-process baseline")
    _surge.add_app_arguments(parser)
    args = parser.parse_args(argv)
    rounds = args.rounds or (1 if args.quick else 3)
    count = args.sentences or (64 if args.quick else 512)
    concurrencies = args.concurrency or ([1, 8] if args.quick else [1, 4, 16, 64])
    batch_concurrencies = args.batch_concurrency or ([2] if args.quick else [1, 2, 4])
    per_request = args.inputs_per_request
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
    runs: dict[str, list[dict[str, float]]] = {}
    latencies: dict[str, list[float]] = {}
    plan = [(f"surge c={c}", 1, c) for c in concurrencies] + [
        (f"surge {per_request}/request c={c}", per_request, c) for c in batch_concurrencies
    ]
    with _surge.surge_target(args, **overrides) as target:
        model = _embedding_model(target)
        asyncio.run(_surge_rate(target, model, texts[:16], 1, 4))  # warm the path and the replica
        # Visible when this process runs the Ray node (a local run, or the smoke tests' session).
        pids = _cpu.serve_pids(_surge.BENCH_APP, ("Gateway", "Embedder"))
        if not any(role != "proxy" for role in pids):
            pids = {}
        bar = h.progress_bar("embedding", rounds * (2 + len(plan)))
        for _ in range(rounds):
            runs.setdefault("direct batch", []).append(_direct(local, texts, settings.max_batch_size))
            bar.update(1)
            singles: list[float] = []
            runs.setdefault("direct single", []).append(_direct(local, texts, 1, singles))
            latencies.setdefault("direct single", []).extend(singles)
            bar.update(1)
            for label, inputs, concurrency in plan:
                window = _cpu.CpuWindow(pids).start()
                client_cpu = time.process_time()
                result = asyncio.run(_surge_rate(target, model, texts, inputs, concurrency))
                client_cpu = time.process_time() - client_cpu
                window.stop()
                if result.errors:
                    raise RuntimeError(f"/v1/embeddings ({label}): {result.errors}")
                server_cpu = window.total_s
                runs.setdefault(label, []).append(
                    {
                        "per_s": result.throughput,
                        "per_cpu_s": result.items / server_cpu if server_cpu else 0.0,
                        "server_cpu_s": server_cpu or 0.0,
                        "client_cpu_s": client_cpu,
                    }
                )
                latencies.setdefault(label, []).extend(result.latencies)
                bar.update(1)
        bar.close()
    return report(args, runs, latencies, rounds, count, plan, bool(pids), started, machine, target)


def _direct(
    local: Any, texts: list[str], batch: int, latencies: list[float] | None = None
) -> dict[str, float]:
    """In-process embedding in slices of `batch`: sentences per wall second and per CPU second."""
    t0, c0 = time.perf_counter(), time.process_time()
    for start in range(0, len(texts), batch):
        t1 = time.perf_counter()
        local.embed(texts[start : start + batch])
        if latencies is not None:
            latencies.append(time.perf_counter() - t1)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"per_s": len(texts) / wall, "per_cpu_s": len(texts) / cpu, "server_cpu_s": cpu, "client_cpu_s": 0}


def _embedding_model(target: h.ServeTarget) -> str:
    import httpx

    models = httpx.get(f"{target.base_url}/v1/models", headers=target.headers(), timeout=30).json()["data"]
    return str(models[-1]["id"])


async def _surge_rate(
    target: h.ServeTarget, model: str, texts: list[str], per_request: int, concurrency: int
) -> h.LoadResult:
    """POST `texts` to /v1/embeddings, `per_request` inputs per request; LoadResult items = sentences."""
    import httpx

    limits = httpx.Limits(max_connections=concurrency + 2, max_keepalive_connections=concurrency + 2)
    requests = [texts[i : i + per_request] for i in range(0, len(texts), per_request)]
    async with httpx.AsyncClient(limits=limits, timeout=300, headers=target.headers()) as client:

        async def call(i: int) -> int:
            inputs = requests[i]
            response = await client.post(
                f"{target.base_url}/v1/embeddings",
                json={
                    "model": model,
                    "input": inputs[0] if per_request == 1 else inputs,
                    "encoding_format": "base64",
                },
            )
            h.check_status(response)
            return len(inputs)

        return await h.closed_loop(call, len(requests), concurrency)


def report(
    args: Any,
    runs: dict[str, list[dict[str, float]]],
    latencies: dict[str, list[float]],
    rounds: int,
    count: int,
    plan: list[tuple[str, int, int]],
    cpu_visible: bool,
    started: float,
    machine: dict[str, Any],
    target: h.ServeTarget,
) -> Path:
    from deployments.settings import EmbedderSettings

    # Per server CPU-second when the server processes were visible (the client charged to no one), else wall.
    basis = "per_cpu_s" if cpu_visible else "per_s"
    ceiling = runs["direct batch"]
    figures: dict[str, Any] = {"ratio_basis": basis}
    rows = []
    for label, per_round in runs.items():
        rates = [r["per_s"] for r in per_round]
        versus = [r[basis] / c[basis] for r, c in zip(per_round, ceiling, strict=True)]
        wall_versus = [r["per_s"] / c["per_s"] for r, c in zip(per_round, ceiling, strict=True)]
        counted = cpu_visible or label.startswith("direct")
        figures[label] = {
            "sentences_per_s": h.across_rounds(rates, 1),
            "sentences_per_server_cpu_s": h.across_rounds([r["per_cpu_s"] for r in per_round], 1)
            if counted
            else None,
            "server_cpu_s": h.across_rounds([r["server_cpu_s"] for r in per_round]) if counted else None,
            "client_cpu_s": h.across_rounds([r["client_cpu_s"] for r in per_round]),
            "ratio_to_direct_batch": h.across_rounds(versus),
            "wall_ratio_to_direct_batch": h.across_rounds(wall_versus),
            "latency_ms": h.summarize(latencies.get(label, []), 1000),
        }
        f = figures[label]
        rows.append(
            [
                label,
                f["sentences_per_s"]["median"],
                f"{min(rates):.1f}-{max(rates):.1f}",
                f["wall_ratio_to_direct_batch"]["median"],
                (f["sentences_per_server_cpu_s"] or {}).get("median"),
                f["ratio_to_direct_batch"]["median"] if cpu_visible else None,
                f["client_cpu_s"]["median"],
                f["latency_ms"].get("p50"),
                f["latency_ms"].get("p99"),
            ]
        )

    def best(inputs: int) -> float | None:
        values = [figures[label]["ratio_to_direct_batch"]["median"] for label, n, _ in plan if n == inputs]
        return max(values) if values else None

    per_request = max(n for _, n, _ in plan)
    figures["single_sentence_ratio"] = {"value": best(1), "goal": SINGLE_GOAL, "better": "higher"}
    how = "per server CPU-second" if cpu_visible else "per wall second (server not visible)"
    headline = h.Headline(
        metric=f"sentences {how}, /v1/embeddings with {per_request} inputs per request / in-process batched "
        "(best concurrency)",
        value=best(per_request),
        goal=HEADLINE_GOAL,
        better="higher",
        baseline=f"TextEmbedder.embed in this process, batches of {EmbedderSettings().max_batch_size}, "
        f"{args.torch_threads} torch thread (same rounds)",
    )
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    plots = [
        h.plot_bars(
            out / f"{NAME}.png",
            {
                label: {"sentences/s (median of rounds)": figures[label]["sentences_per_s"]["median"]}
                for label in runs
            },
            "sentences/s",
            "Embedding throughput: surge /v1/embeddings vs direct sentence-transformers",
        )
    ]
    results = h.Results(
        headline=headline,
        name=NAME,
        description="Sentences/s through /v1/embeddings (one and several sentences per request, dynamic "
        "batching) vs sentence-transformers in-process, interleaved rounds; server CPU counted apart from "
        "the load generator's.",
        parameters={
            "rounds": rounds,
            "sentences": count,
            "plan": [{"label": label, "inputs_per_request": n, "concurrency": c} for label, n, c in plan],
            "model": "all-MiniLM-L6-v2",
            "baseline_torch_threads": args.torch_threads,
            "target": target.base_url,
            "local": target.local,
        },
        figures=figures,
        table_headers=[
            "path",
            "sentences/s",
            "range",
            "x direct batch (wall)",
            "sentences per server CPU-s",
            "x direct batch (CPU)",
            "client CPU s",
            "p50 ms",
            "p99 ms",
        ],
        table_rows=rows,
        notes=[
            "The replica and the in-process baseline use 1 torch thread each; the HTTP client, proxy, "
            "gateway and replica share the same cores. Server CPU = Serve proxy + Gateway + Embedder "
            "processes (benchmarks._cpu); the client's CPU (this process) is counted apart.",
            f"One sentence per request, best concurrency: {figures['single_sentence_ratio']['value']} of the "
            f"ceiling (goal >= {SINGLE_GOAL}).",
        ],
        plots=plots,
    )
    return h.write_results(results, out, started, machine)


if __name__ == "__main__":
    main()
