"""How fast surge relays streamed tokens: the LLM stage on the synthetic engine (tokens at a set rate, no
model: `deployments/engines/synthetic_engine.py`), so only the serving path is measured.

Same engine, same settings, same concurrency, interleaved rounds:
  in-process        the SyntheticEngine driven directly by asyncio in this process (the fairest baseline:
                    what the engine produces with nothing in between)
  surge coalesced   the official `openai` client streaming chats through the real gateway (Serve proxy ->
                    Gateway -> LLMServer), the LLM stage coalescing deltas (its defaults: 50 ms / 16 tokens)
  surge per-token   the same with coalescing off (`stream_coalesce_max_tokens: 1`): one Ray item and one SSE
                    event per token, the path before coalescing

Headline: tokens/s the clients receive through surge (coalesced) / tokens/s the engine produces in-process,
goal >= 0.9 at an offered aggregate rate (concurrency x tokens/s per sequence) >= 5,000 tokens/s. Also: time
to first token through surge / in-process (goal <= 1.1; in-process TTFT is one engine step, 1 / rate).

The client runs in this process: its CPU time (process time over the round's wall time, in cores; it includes
this driver's Ray threads, so it is an upper bound) and the whole machine's busy CPU are reported with every
figure, since on a small machine the load generator competes with the server.

    python -m benchmarks.stream_relay [--quick] [--concurrency 64] [--tokens-per-s 100] [--output-tokens 200]
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import _harness as h
from benchmarks import _surge
from benchmarks._headline import Headline

NAME = "stream_relay"
APP = "surge-stream-relay"
PREFIX = "/surge-stream-relay"
MODEL = "synthetic"
PROMPT = [{"role": "user", "content": "Stream me some tokens."}]


def main(argv: list[str] | None = None) -> Path:
    parser = h.common_parser(__doc__ or NAME)
    parser.add_argument("--concurrency", type=int, default=64, help="concurrent streams (at least 64)")
    parser.add_argument("--tokens-per-s", type=float, default=None, help="engine tokens/s per sequence")
    parser.add_argument("--output-tokens", type=int, default=None, help="tokens per stream")
    _surge.add_app_arguments(parser)  # the app's other stages as the other benchmarks deploy them
    args = parser.parse_args(argv)
    rounds = args.rounds or (1 if args.quick else 3)
    rate = args.tokens_per_s or (80.0 if args.quick else 100.0)
    output = args.output_tokens or (40 if args.quick else 200)
    requests = args.concurrency * (1 if args.quick else 2)
    started, machine = time.time(), h.machine_info()
    variants: dict[str, dict[str, Any]] = {
        "surge coalesced": {},
        "surge per-token": {"stream_coalesce_max_tokens": 1},
    }
    runs: dict[str, list[dict[str, float]]] = {}
    if args.base_url:  # a running surge, whatever it is configured with: measured "as deployed"
        variants = {"surge as deployed": {}}
    with h.local_serve() as port, tempfile.TemporaryDirectory(prefix="surge-bench-stream-") as tmp:
        for _ in h.progress(range(rounds), "stream relay rounds", rounds):
            runs.setdefault("in-process", []).append(
                asyncio.run(in_process(rate, output, args.concurrency, requests))
            )
            for label, llm in variants.items():
                if args.base_url:
                    base_url, key = args.base_url.rstrip("/"), args.api_key
                else:
                    base_url, key = deploy(port, args, Path(tmp), rate, output, llm), _surge.BENCH_KEY
                runs.setdefault(label, []).append(
                    asyncio.run(through_surge(base_url, key, args.concurrency, requests, output))
                )
        if not args.base_url:
            from ray import serve

            serve.delete(APP)
    return report(args, runs, rate, output, requests, rounds, started, machine)


def deploy(port: int, args: Any, tmp: Path, rate: float, output: int, llm: dict[str, Any]) -> str:
    """(Re)deploy the app with the synthetic LLM under its own name, so it runs beside other surge apps."""
    from ray import serve

    from deployments.app import build_app

    overrides = {
        "engine": "synthetic",
        "model": MODEL,
        "served_model_name": MODEL,
        "device": "cpu",
        "num_gpus": 0,
        "num_cpus": 0.25,
        "synthetic_tokens_per_s": rate,
        "synthetic_output_tokens": output,
        # Serve's slots equal the engine's (the LLM settings require it); the synthetic engine has no KV cache.
        "max_num_seqs": 1024,
        "max_ongoing_requests": 1024,
        "max_queued_requests": -1,
        **llm,
    }
    zero = {"autoscaling": _surge.FAST_ZERO}  # the embedder is never called here: not even loaded
    settings = _surge.bench_settings(args, tmp, embedder=zero, llm=overrides)
    serve.run(build_app(settings), name=APP, route_prefix=PREFIX, blocking=False)
    base = f"http://127.0.0.1:{port}{PREFIX}"
    h.wait_http_ok(f"{base}/readyz", 300, headers={"Authorization": f"Bearer {_surge.BENCH_KEY}"})
    return base


class Meter:
    """Client CPU (this process) and the machine's busy CPU over one measured run."""

    def __init__(self) -> None:
        import psutil

        self._psutil = psutil
        self.wall = time.perf_counter()
        self.cpu = time.process_time()
        self.machine = psutil.cpu_times()

    def done(self) -> dict[str, float]:
        wall = time.perf_counter() - self.wall
        now = self._psutil.cpu_times()
        idle = (now.idle - self.machine.idle) + (
            getattr(now, "iowait", 0) - getattr(self.machine, "iowait", 0)
        )
        total = sum(now) - sum(self.machine)
        return {
            "wall_s": wall,
            "client_cores": (time.process_time() - self.cpu) / wall,
            "machine_busy_cores": (total - idle) / total * (os.cpu_count() or 1) if total else 0.0,
        }


async def in_process(rate: float, output: int, concurrency: int, requests: int) -> dict[str, float]:
    """The engine alone: `concurrency` workers consume its streams back to back, as the clients do."""
    from deployments.engines import SamplingSettings, build_engine
    from deployments.settings import LLMSettings

    settings = LLMSettings(
        engine="synthetic", model=MODEL, synthetic_tokens_per_s=rate, synthetic_output_tokens=output
    )
    engine = build_engine(settings)
    await engine.start()
    prompt = engine.render_chat(PROMPT)
    ttfts: list[float] = []
    counter = iter(range(requests))

    async def worker() -> int:
        tokens = 0
        for i in counter:
            sent = time.perf_counter()
            last = None
            async for delta in engine.generate(prompt, SamplingSettings(max_tokens=output), f"r{i}"):
                if last is None:
                    ttfts.append(time.perf_counter() - sent)
                last = delta
            tokens += last.completion_tokens if last is not None else 0
        return tokens

    meter = Meter()
    tokens = sum(await asyncio.gather(*(worker() for _ in range(concurrency))))
    return figures(meter.done(), tokens, ttfts, requests, 0)


async def through_surge(
    base_url: str, api_key: str | None, concurrency: int, requests: int, output: int
) -> dict[str, float]:
    """The official client, `concurrency` concurrent streams; tokens counted from each stream's usage."""
    import openai

    client = openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key=api_key or "none", timeout=300)
    model = (await client.models.list()).data[0].id
    ttfts: list[float] = []
    events = 0
    counter = iter(range(requests))

    async def worker() -> int:
        nonlocal events
        tokens = 0
        for _ in counter:
            sent = time.perf_counter()
            first = True
            stream = await client.chat.completions.create(
                model=model,
                messages=PROMPT,  # type: ignore[arg-type]
                max_tokens=output,
                stream=True,
                stream_options={"include_usage": True},
            )
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    events += 1
                    if first:
                        ttfts.append(time.perf_counter() - sent)
                        first = False
                if chunk.usage is not None:
                    tokens += chunk.usage.completion_tokens
        return tokens

    await worker_warmup(client, model)
    meter = Meter()
    tokens = sum(await asyncio.gather(*(worker() for _ in range(concurrency))))
    result = figures(meter.done(), tokens, ttfts, requests, events)
    await client.close()
    return result


async def worker_warmup(client: Any, model: str) -> None:
    """One short request first, so the round does not include a connection or replica warm-up."""
    await client.chat.completions.create(model=model, messages=PROMPT, max_tokens=2)


def figures(
    meter: dict[str, float], tokens: int, ttfts: list[float], requests: int, events: int
) -> dict[str, float]:
    return {
        **meter,
        "tokens": tokens,
        "tokens_per_s": tokens / meter["wall_s"],
        "ttft_p50_ms": h.percentile(ttfts, 50) * 1000 if ttfts else float("nan"),
        "ttft_p99_ms": h.percentile(ttfts, 99) * 1000 if ttfts else float("nan"),
        "streams": requests,
        "events_per_stream": events / requests if events else 0.0,
    }


def report(
    args: Any,
    runs: dict[str, list[dict[str, float]]],
    rate: float,
    output: int,
    requests: int,
    rounds: int,
    started: float,
    machine: dict[str, Any],
) -> Path:
    def median(label: str, key: str) -> float:
        return float(h.across_rounds([r[key] for r in runs[label]])["median"])

    base_tps, base_ttft = median("in-process", "tokens_per_s"), median("in-process", "ttft_p50_ms")
    rows: list[list[Any]] = []
    figures_: dict[str, Any] = {}
    for label, per_round in runs.items():
        tps, ttft = median(label, "tokens_per_s"), median(label, "ttft_p50_ms")
        figures_[label] = {
            key: h.across_rounds([r[key] for r in per_round]) for key in per_round[0] if key != "streams"
        }
        figures_[label]["throughput_ratio"] = h.ratio(tps, base_tps)
        figures_[label]["ttft_ratio"] = h.ratio(ttft, base_ttft)
        rows.append(
            [
                label,
                round(tps),
                h.ratio(tps, base_tps),
                round(ttft, 1),
                h.ratio(ttft, base_ttft),
                round(median(label, "events_per_stream"), 1),
                round(median(label, "client_cores"), 2),
                round(median(label, "machine_busy_cores"), 2),
            ]
        )
    headline_label = "surge coalesced" if "surge coalesced" in runs else "surge as deployed"
    offered = args.concurrency * rate
    headline = Headline(
        metric=f"client tokens/s through surge ({headline_label}) / engine tokens/s in-process, "
        f"{args.concurrency} streams, offered {offered:,.0f} tokens/s",
        value=figures_.get(headline_label, {}).get("throughput_ratio"),
        goal=0.9,
        better="higher",
        baseline="the same SyntheticEngine driven in-process (same concurrency and settings)",
    )
    results = h.Results(
        name=NAME,
        description=f"Streamed tokens relayed by surge vs produced in-process: synthetic engine, "
        f"{args.concurrency} concurrent streams x {rate:g} tokens/s (offered {offered:,.0f} tokens/s), "
        f"{output} tokens each, {requests} streams a round, {rounds} round(s).",
        parameters={
            "concurrency": args.concurrency,
            "tokens_per_s_per_sequence": rate,
            "offered_tokens_per_s": offered,
            "output_tokens": output,
            "streams_per_round": requests,
            "rounds": rounds,
            "base_url": args.base_url,
            "env": {k: v for k, v in os.environ.items() if k.startswith("RAY_SERVE_")},
        },
        figures=figures_,
        table_headers=[
            "variant",
            "tokens/s",
            "x in-process",
            "TTFT p50 ms",
            "TTFT x in-process",
            "events/stream",
            "client cores",
            "machine busy cores",
        ],
        table_rows=rows,
        headline=headline,
        notes=[
            "client cores: this process's CPU time / wall time (the openai client, plus this driver's Ray "
            "threads: an upper bound); machine busy cores: all processes, other users' included.",
            "in-process TTFT is one engine step (1 / rate); through surge it adds the HTTP, proxy, gateway "
            "and Ray hops.",
        ],
    )
    return h.write_results(results, args.out, started, machine)


if __name__ == "__main__":
    main()
