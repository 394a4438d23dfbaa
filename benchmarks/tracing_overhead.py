"""Tracing overhead: the same RAG request with the OTLP exporter on and off, in the same run, and the printed
trace trees of one RAG request and of one Kafka-ingested document.

Two copies of the app run side by side in one Ray and Serve, identical but for the `OTEL_*` environment
their replicas get (`build_app` passes the driver's on to every replica): `surge-bench` untraced, and
`surge-bench-traced` exporting every span over OTLP/HTTP to an in-process receiver
(`benchmarks.otlp_receiver`, what a collector would see; batched every 0.2 s). Every stage is kept warm.
In each round one block of sequential RAG chats goes to each app, the order alternating between rounds
(off-on, on-off, ...): slow drift on a shared machine hits both sides alike. Measured per request:
latency (client side), and server CPU (the CPU seconds of the app's replica processes over the block,
`benchmarks._cpu`, divided by its requests; the shared Serve proxy is left out of both).

Headline: p50 latency on / off (better lower, goal <= 1.05); the CPU ratio travels with it.

Then, on the traced app, one RAG chat with a client `traceparent` is printed as its span tree; and one
document is produced with `surge produce` (the real CLI, with the same `OTEL_*`: it sends the record
under a producer span with a `traceparent` header) to a local broker, consumed by the real ingestion
consumer (`python -m pipelines.ingestion`, same `OTEL_*`), and its trace tree printed.

    python -m benchmarks.tracing_overhead [--quick] [--rounds N] [--requests-per-round N]
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from unittest import mock

from benchmarks import _cpu, _surge
from benchmarks import _harness as h
from benchmarks.otlp_receiver import OtlpReceiver

NAME = "tracing_overhead"
TRACED_APP = "surge-bench-traced"
TRACED_PREFIX = "/surge-bench-traced"
SHOWN = (
    "surge.stage",
    "surge.tenant",
    "surge.replica",
    "surge.model",
    "surge.model_version",
    "surge.cold_start",
    "surge.tokens_in",
    "surge.tokens_out",
    "surge.retrieval.top_k",
    "surge.retrieval.scores",
    "surge.documents",
    "messaging.destination.name",
    "http.response.status_code",
)
RAG_SPANS = (
    "POST /v1/chat/completions",
    "embedder.call embed",
    "embedder.embed",
    "retriever.call search",
    "retriever.search",
    "llm.call generate",
    "llm.generate",
)
INGESTION = [sys.executable, "-m", "pipelines.ingestion", "--group-id", "bench-tracing"]
INGEST_SPANS = ("documents publish", "ingestion.process", "ingestion.embed", "ingestion.index_write")


def main(argv: list[str] | None = None) -> Path:
    parser = h.common_parser(__doc__ or NAME)
    parser.add_argument("--requests-per-round", type=int, default=None, help="sequential requests per block")
    _surge.add_app_arguments(parser)
    args = parser.parse_args(argv)
    if args.base_url:
        parser.error(
            "tracing_overhead deploys its traced and untraced apps itself: --base-url is not supported"
        )
    rounds = args.rounds or (4 if args.quick else 10)
    per_round = args.requests_per_round or (6 if args.quick else 20)
    started = time.time()
    machine = h.machine_info()
    receiver = OtlpReceiver()
    otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "200"}
    try:
        with tempfile.TemporaryDirectory(prefix="surge-bench-tracing-") as tmp, h.local_serve() as port:
            warm = {"autoscaling": _surge.ALWAYS_ON}
            off = _surge.deploy(port, _surge.bench_settings(args, Path(tmp) / "off", embedder=warm, llm=warm))
            on = deploy_traced(
                port, _surge.bench_settings(args, Path(tmp) / "on", embedder=warm, llm=warm), otel
            )
            try:
                for target in (off, on):
                    _surge.wait_ready(target, 600)
                    _surge.seed_documents(target, 6, args.seed)
                    rag_chat(target)  # every stage up and warm before measuring
                blocks = measure(off, on, rounds, per_round)
                rag_trace = traced_rag_tree(on, receiver)
            finally:
                from ray import serve

                serve.delete(TRACED_APP)
                _surge.undeploy()
            document_trace = traced_document_tree(Path(tmp), otel, receiver)
    finally:
        receiver.close()
    return report(args, rounds, per_round, blocks, rag_trace, document_trace, started, machine)


def deploy_traced(port: int, settings: Any, otel: dict[str, str]) -> h.ServeTarget:
    """The same app as `_surge.deploy`, its replicas given `otel` (read by `build_app` while building)."""
    from ray import serve

    from deployments.app import build_app

    with mock.patch.dict(os.environ, otel):
        app = build_app(settings)
    serve.run(app, name=TRACED_APP, route_prefix=TRACED_PREFIX, blocking=False)
    target = h.ServeTarget(f"http://127.0.0.1:{port}{TRACED_PREFIX}", _surge.BENCH_KEY, True)
    h.wait_http_ok(f"{target.base_url}/healthz", 120, headers=target.headers())
    return target


def rag_chat(target: h.ServeTarget, headers: dict[str, str] | None = None) -> dict[str, Any]:
    import httpx

    response = httpx.post(
        f"{target.base_url}/v1/chat/completions",
        json={
            "model": "rag/" + _surge.llm_name(target),
            "messages": [{"role": "user", "content": "What do the notes say about glacier ice?"}],
            "max_tokens": 4,
            "temperature": 0,
        },
        headers={**target.headers(), **(headers or {})},
        timeout=600,
    )
    h.check_status(response)
    body: dict[str, Any] = response.json()
    return body


def measure(off: h.ServeTarget, on: h.ServeTarget, rounds: int, per_round: int) -> list[dict[str, Any]]:
    """Blocks of `per_round` sequential RAG chats, alternating which side goes first each round."""
    apps = {"off": (off, _surge.BENCH_APP), "on": (on, TRACED_APP)}
    blocks = []
    for r in h.progress(range(rounds), "tracing on/off rounds"):
        for label in ("off", "on") if r % 2 == 0 else ("on", "off"):
            target, app = apps[label]
            window = _cpu.CpuWindow(_cpu.serve_pids(app, proxy=False)).start()
            latencies, cold = [], 0
            for _ in range(per_round):
                t0 = time.perf_counter()
                body = rag_chat(target)
                elapsed = time.perf_counter() - t0
                if any(k.endswith("_cold_start_s") for k in body.get("surge", {}).get("timings", {})):
                    cold += 1  # measures a replica start, not tracing
                    continue
                latencies.append(elapsed)
            window.stop()
            blocks.append(
                {"round": r, "side": label, "latencies_s": latencies, "cold": cold, "cpu": window.as_dict()}
            )
    return blocks


def overhead(blocks: list[dict[str, Any]]) -> dict[str, Any]:
    """Latency p50 per side and on/off ratio (overall and per round), server CPU per request per side."""
    sides: dict[str, dict[str, Any]] = {}
    for side in ("off", "on"):
        mine = [b for b in blocks if b["side"] == side]
        latencies = [t for b in mine for t in b["latencies_s"]]
        cpu = [b["cpu"]["total_cpu_s"] for b in mine]
        requests = sum(len(b["latencies_s"]) + b["cold"] for b in mine)
        sides[side] = {
            "latency_ms": h.summarize(latencies, 1000),
            "cpu_ms_per_request": round(1000 * sum(cpu) / requests, 2)
            if requests and all(c is not None for c in cpu)
            else None,
            "requests": requests,
            "left_out_cold": sum(b["cold"] for b in mine),
        }
    per_round = []
    for r in sorted({b["round"] for b in blocks}):
        pair = {b["side"]: b["latencies_s"] for b in blocks if b["round"] == r}
        if pair.get("off") and pair.get("on"):
            per_round.append(statistics.median(pair["on"]) / statistics.median(pair["off"]))
    off_p50, on_p50 = sides["off"]["latency_ms"].get("p50"), sides["on"]["latency_ms"].get("p50")
    return {
        "sides": sides,
        "latency_p50_ratio": h.ratio(on_p50, off_p50) if off_p50 and on_p50 else None,
        "latency_p50_ratio_per_round": h.across_rounds(per_round),
        "cpu_per_request_ratio": h.ratio(
            sides["on"]["cpu_ms_per_request"], sides["off"]["cpu_ms_per_request"]
        )
        if sides["on"]["cpu_ms_per_request"] and sides["off"]["cpu_ms_per_request"]
        else None,
    }


def traced_rag_tree(target: h.ServeTarget, receiver: OtlpReceiver) -> dict[str, Any]:
    """One RAG chat continuing a client's traceparent, and the tree the receiver got for it."""
    trace_id, parent = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    rag_chat(target, {"traceparent": f"00-{trace_id}-{parent}-01"})
    receiver.wait_for_trace(trace_id, RAG_SPANS, timeout_s=60)
    time.sleep(0.5)  # late siblings (the inference-log publish) of the same batch
    return {"trace_id": trace_id, "client_parent": parent, "tree": receiver.tree(trace_id, SHOWN)}


def traced_document_tree(tmp: Path, otel: dict[str, str], receiver: OtlpReceiver) -> dict[str, Any]:
    """`surge produce documents` one file (traced) to a local broker, the ingestion consumer indexes it."""
    from pipelines.broker import LocalBroker

    broker = LocalBroker(data_dir=tmp / "broker", port=h.free_port())
    broker.start()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **otel}
    docs = tmp / "docs"
    docs.mkdir()
    (docs / "stromboli.txt").write_text(
        "Stromboli is an island volcano north of Sicily, active for millennia."
    )
    log = (tmp / "ingestion.log").open("wb")
    consumer = None
    try:
        cli = [sys.executable, "-m", "pipelines.cli"]
        produced = subprocess.run(
            [*cli, "produce", "documents", str(docs), "--bootstrap-servers", broker.bootstrap_servers],
            cwd=h.REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if produced.returncode != 0:
            raise RuntimeError(f"surge produce failed: {produced.stderr[-500:]}")
        consumer = subprocess.Popen(
            [*INGESTION, "--bootstrap-servers", broker.bootstrap_servers, "--index-path", str(tmp / "index")],
            cwd=h.REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        published = wait_for_span(receiver, "documents publish", 60)
        deadline = time.monotonic() + 300
        while {s.name for s in receiver.trace(published)} < set(INGEST_SPANS):
            if consumer.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"the ingestion spans never arrived: {(tmp / 'ingestion.log').read_text()[-2000:]}"
                )
            time.sleep(0.5)
        return {
            "trace_id": published,
            "tree": receiver.tree(published, SHOWN),
            "produce_stdout": produced.stdout,
        }
    finally:
        if consumer is not None and consumer.poll() is None:
            consumer.terminate()
            consumer.wait(60)
        log.close()
        broker.stop()


def wait_for_span(receiver: OtlpReceiver, name: str, timeout_s: float) -> str:
    """The trace id of the first received span named `name`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = receiver.named(name)
        if found:
            return found[0].trace_id
        time.sleep(0.2)
    raise RuntimeError(f"no span named {name!r} arrived within {timeout_s:g} s")


def report(
    args: Any,
    rounds: int,
    per_round: int,
    blocks: list[dict[str, Any]],
    rag_trace: dict[str, Any],
    document_trace: dict[str, Any],
    started: float,
    machine: dict[str, Any],
) -> Path:
    figures = overhead(blocks)
    print(f"\nRAG request, trace {rag_trace['trace_id']}:\n{rag_trace['tree']}")
    print(f"\nKafka-ingested document, trace {document_trace['trace_id']}:\n{document_trace['tree']}")
    headline = h.Headline(
        metric="RAG request latency p50, OTLP exporter on / off",
        value=figures["latency_p50_ratio"],
        goal=1.05,
        better="lower",
        baseline="the same app with tracing off, interleaved blocks in the same run",
        details={"cpu_per_request_ratio": figures["cpu_per_request_ratio"]},
    )
    sides = figures["sides"]
    rows = [
        [
            side,
            sides[side]["requests"],
            sides[side]["latency_ms"].get("p50"),
            sides[side]["latency_ms"].get("p90"),
            sides[side]["cpu_ms_per_request"],
            sides[side]["left_out_cold"],
        ]
        for side in ("off", "on")
    ]
    results = h.Results(
        headline=headline,
        name=NAME,
        description="Tracing overhead per RAG request (OTLP exporter on vs off, interleaved, same run), and the "
        "printed trace trees of one RAG request and one Kafka-ingested document.",
        parameters={
            "rounds": rounds,
            "requests_per_round": per_round,
            "llm_model": _surge.llm_model(args),
            "request": "RAG chat (rag/<model>), max_tokens 4, sequential",
            "exporter": "OTLP/HTTP protobuf to an in-process receiver, BatchSpanProcessor every 0.2 s",
        },
        figures={**figures, "blocks": blocks, "rag_trace": rag_trace, "document_trace": document_trace},
        table_headers=[
            "tracing",
            "requests",
            "latency p50 ms",
            "latency p90 ms",
            "server CPU ms/request",
            "cold left out",
        ],
        table_rows=rows,
        notes=[
            "Server CPU: the app's replica processes (gateway, embedder, retriever, LLM), proxy excluded; the "
            "receiver runs in the benchmark's process and is not counted (a collector's CPU is elsewhere).",
            f"Per-round latency ratio (median, min, max): {figures['latency_p50_ratio_per_round']}.",
        ],
    )
    return h.write_results(results, args.out, started, machine)


if __name__ == "__main__":
    main()
