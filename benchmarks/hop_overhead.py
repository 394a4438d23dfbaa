"""Hop overhead: what a no-op request costs through Serve, per hop, against the same handler on bare uvicorn.

Targets, measured in interleaved rounds with one client (httpx, keep-alive):
  bare      FastAPI no-op on uvicorn (one process, no access log): the baseline
  serve-0   the same route as a Serve ingress deployment (HTTP proxy -> replica)
  serve-1..3  the ingress plus 1, 2, 3 chained DeploymentHandle hops
  gateway   surge's own GET /healthz through the real Gateway (auth middleware, metrics)

Public anchor: Ray's release microbenchmark reports an HTTP no-op p50 of 2.23 ms and p99 4.69 ms, and
about 2.2 ms per extra deployment hop (on far bigger machines).

    python -m benchmarks.hop_overhead [--quick]
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import _embed_path, _surge
from benchmarks import _harness as h

NAME = "hop_overhead"


def main(argv: list[str] | None = None) -> Path:
    parser = h.common_parser(__doc__ or NAME)
    parser.add_argument(
        "--requests", type=int, default=None, help="requests per target, round and concurrency"
    )
    parser.add_argument("--concurrency", type=int, nargs="+", default=None)
    parser.add_argument("--embed-requests", type=int, default=None, help="requests per embed-path CPU window")
    _surge.add_app_arguments(parser)
    args = parser.parse_args(argv)
    rounds = args.rounds or (2 if args.quick else 5)
    requests = args.requests or (60 if args.quick else 300)
    concurrencies = args.concurrency or ([1, 8] if args.quick else [1, 8, 32])
    started = time.time()
    machine = h.machine_info()

    targets: dict[str, str] = {}
    headers: dict[str, str] = {}
    bare = start_bare_uvicorn()
    try:
        targets["bare uvicorn"] = bare[1]
        with h.local_serve() as port, tempfile.TemporaryDirectory(prefix="surge-bench-index-") as index_dir:
            from ray import serve

            from benchmarks._noop import chain

            for hops in range(4):
                serve.run(chain(hops), name=f"hop{hops}", route_prefix=f"/hop{hops}", blocking=False)
            for hops in range(4):
                h.wait_http_ok(f"http://127.0.0.1:{port}/hop{hops}/", 300)
                targets[f"serve {hops} hop" + ("s" if hops != 1 else "")] = (
                    f"http://127.0.0.1:{port}/hop{hops}/"
                )
            gateway = gateway_target(args, port, Path(index_dir))
            targets["surge gateway /healthz"] = f"{gateway.base_url}/healthz"
            headers = gateway.headers()
            try:
                samples = asyncio.run(measure(targets, rounds, requests, concurrencies, headers))
                embed_path = _embed_path.measure(
                    port, gateway, rounds, args.embed_requests or requests, _surge.sentences(20, args.seed)
                )
            finally:
                for hops in range(4):
                    serve.delete(f"hop{hops}")
                if gateway.local:
                    _surge.undeploy()
    finally:
        bare[0].terminate()
        bare[0].wait(10)
    return report(args, samples, embed_path, targets, rounds, requests, concurrencies, started, machine)


def gateway_target(args: Any, port: int, index_dir: Path) -> h.ServeTarget:
    """surge's gateway: the one at --base-url, or a local app whose stages all sit at zero (none load)."""
    if args.base_url:
        return h.ServeTarget(args.base_url.rstrip("/"), args.api_key, local=False)
    settings = _surge.bench_settings(
        args,
        index_dir,
        embedder={"autoscaling": _surge.FAST_ZERO},
        llm={"autoscaling": _surge.FAST_ZERO},
        retriever={"autoscaling": {"min_replicas": 0, "max_replicas": 1}},
    )
    return _surge.deploy(port, settings)


def start_bare_uvicorn() -> tuple[subprocess.Popen[bytes], str]:
    port = h.free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "benchmarks._noop:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        cwd=h.REPO_ROOT,
    )
    url = f"http://127.0.0.1:{port}/"
    h.wait_http_ok(url, 60)
    return process, url


async def measure(
    targets: dict[str, str], rounds: int, requests: int, concurrencies: list[int], headers: dict[str, str]
) -> dict[tuple[str, int], list[list[float]]]:
    # Every target gets the same Authorization header, so all requests are the same size.
    """Latencies per (target, concurrency), one list per round; targets interleaved within each round."""
    import httpx

    samples: dict[tuple[str, int], list[list[float]]] = {}
    limits = httpx.Limits(
        max_connections=max(concurrencies) + 4, max_keepalive_connections=max(concurrencies) + 4
    )
    async with httpx.AsyncClient(limits=limits, timeout=60, headers=headers) as client:
        for url in targets.values():  # warm every path (connections, handles, replica code paths)
            for _ in range(20):
                (await client.get(url)).raise_for_status()
        total = rounds * len(concurrencies) * len(targets)
        bar = h.progress_bar("hop overhead", total)
        for _ in range(rounds):
            for concurrency in concurrencies:
                for label, url in targets.items():

                    async def call(_: int, url: str = url) -> int:
                        h.check_status(await client.get(url))
                        return 1

                    result = await h.closed_loop(call, requests, concurrency)
                    if result.errors:
                        raise RuntimeError(f"{label} at concurrency {concurrency}: {result.errors}")
                    samples.setdefault((label, concurrency), []).append(result.latencies)
                    bar.update(1)
        bar.close()
    return samples


HEADLINE_GOAL = 0.5


def embed_path_headline(embed_path: dict[str, Any], embed_queries: str) -> h.Headline:
    value = embed_path["serving_cpu_ratio"]["median"] if embed_path.get("visible") else None
    return h.Headline(
        metric="server CPU-ms per /v1/embeddings request outside model compute, surge / default Serve "
        f"composition (embed path only; median of rounds; surge's gateway.embed_queries: {embed_queries})",
        value=value,
        goal=HEADLINE_GOAL,
        better="lower",
        baseline="Serve proxy -> FastAPI ingress deployment -> one handle hop to a plain embedding deployment, "
        "access logs off on both, model CPU measured in-process and subtracted from both",
    )


def report(
    args: Any,
    samples: dict[tuple[str, int], list[list[float]]],
    embed_path: dict[str, Any],
    targets: dict[str, str],
    rounds: int,
    requests: int,
    concurrencies: list[int],
    started: float,
    machine: dict[str, Any],
) -> Path:
    figures: dict[str, Any] = {}
    rows: list[list[Any]] = []
    labels = list(targets)
    for concurrency in concurrencies:
        base_p50 = [h.percentile(r, 50) * 1000 for r in samples[("bare uvicorn", concurrency)]]
        previous: list[float] | None = None
        for label in labels:
            per_round = samples[(label, concurrency)]
            p50s = [h.percentile(r, 50) * 1000 for r in per_round]
            p99s = [h.percentile(r, 99) * 1000 for r in per_round]
            throughputs = [len(r) / sum(r) * concurrency for r in per_round]  # closed loop: c / mean latency
            added = [p - b for p, b in zip(p50s, base_p50, strict=True)]
            per_hop = (
                [p - q for p, q in zip(p50s, previous, strict=True)]
                if previous is not None and label.startswith("serve") and not label.startswith("serve 0")
                else None
            )
            if label.startswith("serve"):
                previous = p50s
            figures[f"{label} @c{concurrency}"] = {
                "latency_ms": h.summarize([x for r in per_round for x in r], 1000),
                "p50_ms_across_rounds": h.across_rounds(p50s),
                "p99_ms_across_rounds": h.across_rounds(p99s),
                "added_p50_ms_vs_bare": h.across_rounds(added),
                "added_p50_ms_vs_previous_hop": h.across_rounds(per_hop) if per_hop else None,
                "requests_per_s_across_rounds": h.across_rounds(throughputs, 1),
            }
            f = figures[f"{label} @c{concurrency}"]
            rows.append(
                [
                    label,
                    concurrency,
                    f["p50_ms_across_rounds"]["median"],
                    f"{f['p50_ms_across_rounds']['min']:.2f}-{f['p50_ms_across_rounds']['max']:.2f}",
                    f["p99_ms_across_rounds"]["median"],
                    f["added_p50_ms_vs_bare"]["median"],
                    per_hop and f["added_p50_ms_vs_previous_hop"]["median"],
                    f["requests_per_s_across_rounds"]["median"],
                ]
            )
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    plots = [
        h.plot_cdf(
            out / f"{NAME}_cdf_c{c}.png",
            {label: [x * 1000 for r in samples[(label, c)] for x in r] for label in labels},
            "latency (ms)",
            f"No-op latency at concurrency {c} (all rounds)",
        )
        for c in concurrencies
    ]
    figures["embed_path_cpu"] = embed_path
    notes = [
        "Client, proxy and replicas share this machine's cores; at concurrency > 1 the numbers include "
        "queueing on the CPUs."
    ]
    if embed_path.get("visible"):
        cpu = embed_path["server_cpu_ms_per_request"]
        notes.append(
            "Embed path, server CPU-ms per request (median of rounds): default Serve composition "
            f"{cpu['baseline']['median']}, surge /v1/embeddings {cpu['surge']['median']}, the model alone "
            f"{cpu['model']['median']} per sentence; serving-cost ratio "
            f"{embed_path['serving_cpu_ratio']['median']} (range {embed_path['serving_cpu_ratio']['min']}-"
            f"{embed_path['serving_cpu_ratio']['max']})."
        )
    else:
        notes.append("Embed path CPU not measured: the server processes are not visible from here.")
    results = h.Results(
        headline=embed_path_headline(embed_path, args.embed_queries if not args.base_url else "as deployed"),
        name=NAME,
        description="No-op request latency: bare uvicorn vs Serve ingress vs 1-3 handle hops vs surge /healthz "
        "(medians across interleaved rounds; range = min-max of the per-round p50).",
        parameters={
            "rounds": rounds,
            "requests_per_round": requests,
            "concurrency": concurrencies,
            "client": "httpx.AsyncClient, keep-alive, closed loop",
            "targets": targets,
            # Where a local app embeds a one-text /v1/embeddings request (issue 13's no-hop lever).
            "embed_queries": args.embed_queries if not args.base_url else "as deployed",
            "public_anchor": "Ray release microbenchmark: HTTP no-op p50 2.23 ms, p99 4.69 ms; "
            "~2.2 ms per extra hop",
        },
        figures=figures,
        table_headers=[
            "target",
            "conc.",
            "p50 ms",
            "p50 range",
            "p99 ms",
            "+p50 vs bare",
            "+p50 per hop",
            "req/s",
        ],
        table_rows=rows,
        notes=notes,
        plots=plots,
    )
    return h.write_results(results, out, started, machine)


if __name__ == "__main__":
    main()
