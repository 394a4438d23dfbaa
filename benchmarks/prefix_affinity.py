"""Prefix-cache-affinity routing against Serve's power of two, on a shared-prefix chat workload, same run.

Workload: `--conversations` multi-turn chats run concurrently, each `--turns` turns long; every turn resends
the whole conversation (as chat clients do) and every conversation starts with one of two long system
prompts (shared by half of them). Two LLM replicas serve it, once with `llm.request_router: power_of_two`
(the baseline, Serve's default) and once with `prefix_affinity` (`deployments.prefix_affinity_router`);
rounds alternate between the two so drift on a shared machine hits both alike.

Figures per router: time to first token (TTFT, first streamed content chunk, client side) p50/p90, and the
prefix-cache hit rate = cached prompt tokens / prompt tokens, from the `usage.prompt_tokens_details.
cached_tokens` that vLLM reports per request (`num_cached_tokens`). Headline: TTFT p50 of prefix affinity
divided by power of two's (lower is better).

    python -m benchmarks.prefix_affinity [--quick] [--llm-model smollm2-135m-instruct]

Deploys its own app (`surge-prefix-bench`) on the local Serve (reusing a running one, as the smoke test does);
`--base-url` is not supported: the router is a deployment option, so each side needs its own deployment.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks import _harness as h
from benchmarks import _surge
from benchmarks._headline import Headline

NAME = "prefix_affinity"
APP, PREFIX = "surge-prefix-bench", "/surge-prefix-bench"
ROUTERS = ("power_of_two", "prefix_affinity")
SYSTEM_PROMPTS = [
    "You are the support assistant of a home-network retailer. Answer in two sentences, cite the manual "
    "section, never guess model numbers, and ask for the serial number before any warranty question. " * 3,
    "You are a travel agent for rail journeys in Europe. Prefer night trains, quote prices in euros, list "
    "changes of train with their stations, and mention seat reservations where they are compulsory. " * 3,
]
QUESTIONS = [
    "My router blinks red.",
    "It still blinks after a reboot.",
    "What does the manual say?",
    "And the warranty?",
    "Thanks, anything else?",
]


def _deploy(port: int, args: Any, index_dir: Path, router: str) -> h.ServeTarget:
    from ray import serve

    from deployments.app import build_app

    n = args.replicas
    fixed = {"min_replicas": n, "max_replicas": n, "initial_replicas": n}
    settings = _surge.bench_settings(
        args,
        index_dir,
        embedder={"num_cpus": 0.25},
        llm={"request_router": router, "num_cpus": 0.5, "autoscaling": {**_surge.ALWAYS_ON, **fixed}},
    )
    serve.run(build_app(settings), name=APP, route_prefix=PREFIX, blocking=False)
    target = h.ServeTarget(base_url=f"http://127.0.0.1:{port}{PREFIX}", api_key=_surge.BENCH_KEY, local=True)
    h.wait_http_ok(f"{target.base_url}/healthz", 300, headers=target.headers())
    _surge.wait_ready(target, 900)
    if not h.wait_until(lambda: _surge.replicas(target).get("LLMServer", 0) == n, 600):
        raise RuntimeError(f"the {n} LLM replicas did not start")
    return target


async def _turn(
    client: httpx.AsyncClient, model: str, messages: list[dict[str, str]], max_tokens: int
) -> dict[str, Any]:
    body = {
        "model": model,
        "messages": messages,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started = time.perf_counter()
    ttft: float | None = None
    text, usage = "", {}
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        h.check_status(response)
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            for choice in chunk.get("choices", []):
                if choice["delta"].get("content"):
                    ttft = ttft if ttft is not None else time.perf_counter() - started
                    text += choice["delta"]["content"]
            usage = chunk.get("usage") or usage
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
    return {
        "ttft": ttft if ttft is not None else time.perf_counter() - started,
        "prompt_tokens": usage.get("prompt_tokens", 0),
        "cached_tokens": cached,
        "text": text,
    }


async def _conversation(
    client: httpx.AsyncClient, model: str, index: int, turns: int, max_tokens: int
) -> list[dict[str, Any]]:
    messages = [{"role": "system", "content": SYSTEM_PROMPTS[index % len(SYSTEM_PROMPTS)]}]
    out = []
    for turn in range(turns):
        messages.append({"role": "user", "content": f"(chat {index}) {QUESTIONS[turn % len(QUESTIONS)]}"})
        result = await _turn(client, model, messages, max_tokens)
        messages.append({"role": "assistant", "content": result["text"] or "ok"})
        out.append(result)
    return out


async def _workload(
    target: h.ServeTarget, conversations: int, turns: int, max_tokens: int
) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=target.base_url, headers=target.headers(), timeout=600) as client:
        model = _surge.llm_name(target)
        chats = await asyncio.gather(
            *(_conversation(client, model, i, turns, max_tokens) for i in range(conversations))
        )
    return [turn for chat in chats for turn in chat]


def main(argv: list[str] | None = None) -> Path:
    parser = h.common_parser(__doc__ or NAME)
    parser.add_argument("--conversations", type=int, default=None, help="concurrent chats per round")
    parser.add_argument("--turns", type=int, default=None, help="turns per chat")
    parser.add_argument("--max-tokens", type=int, default=None)
    parser.add_argument(
        "--replicas",
        type=int,
        default=2,
        help="LLM replicas per side (2: the comparison; 1 only checks the plumbing, as the smoke test does)",
    )
    _surge.add_app_arguments(parser, default_llm="smollm2-135m-instruct")
    args = parser.parse_args(argv)
    if args.base_url:
        parser.error(
            "--base-url: the router is a deployment option; this benchmark deploys both sides itself"
        )
    rounds = args.rounds or (1 if args.quick else 3)
    conversations = args.conversations or (4 if args.quick else 8)
    turns = args.turns or (3 if args.quick else 5)
    max_tokens = args.max_tokens or (4 if args.quick else 16)
    started, machine = time.time(), h.machine_info()
    samples: dict[str, list[dict[str, Any]]] = {router: [] for router in ROUTERS}
    with h.local_serve() as port, tempfile.TemporaryDirectory(prefix="surge-prefix-bench-") as tmp:
        from ray import serve

        try:
            for _ in range(rounds):
                for router in ROUTERS:
                    target = _deploy(port, args, Path(tmp) / "index", router)
                    asyncio.run(_workload(target, 2, 1, 1))  # warm-up, not counted
                    samples[router].extend(asyncio.run(_workload(target, conversations, turns, max_tokens)))
                    serve.delete(APP)  # fresh replicas (and empty caches) for the other side
        finally:
            if APP in serve.status().applications:
                serve.delete(APP)
    return report(args, samples, rounds, conversations, turns, max_tokens, started, machine)


def _figures(turns: list[dict[str, Any]]) -> dict[str, Any]:
    ttft = [t["ttft"] for t in turns]
    prompt = sum(t["prompt_tokens"] for t in turns)
    reported = [t["cached_tokens"] for t in turns if t["cached_tokens"] is not None]
    return {
        "requests": len(turns),
        "ttft_s": h.summarize(ttft),
        "prompt_tokens": prompt,
        "cached_tokens": sum(reported) if reported else None,
        "prefix_cache_hit_rate": round(sum(reported) / prompt, 4) if reported and prompt else None,
    }


def report(
    args: Any,
    samples: dict[str, list[dict[str, Any]]],
    rounds: int,
    conversations: int,
    turns: int,
    max_tokens: int,
    started: float,
    machine: dict[str, Any],
) -> Path:
    figures = {router: _figures(turns_) for router, turns_ in samples.items()}
    base, ours = figures["power_of_two"], figures["prefix_affinity"]
    ratio = h.ratio(ours["ttft_s"]["p50"], base["ttft_s"]["p50"])
    figures["ttft_p50_ratio"] = ratio
    rows = [
        [router, f["requests"], f["ttft_s"]["p50"], f["ttft_s"]["p90"], f["prefix_cache_hit_rate"]]
        for router, f in figures.items()
        if isinstance(f, dict)
    ]
    results = h.Results(
        name=NAME,
        description="TTFT and prefix-cache hit rate of a shared-prefix chat workload on "
        f"{args.replicas} LLM replica(s): prefix-cache affinity routing vs Serve's power of two, same run.",
        parameters={
            "rounds": rounds,
            "conversations": conversations,
            "turns": turns,
            "max_tokens": max_tokens,
            "llm_model": _surge.llm_model(args),
            "llm_replicas": args.replicas,
        },
        figures=figures,
        table_headers=["router", "requests", "TTFT p50 (s)", "TTFT p90 (s)", "prefix-cache hit rate"],
        table_rows=rows,
        headline=Headline(
            metric="TTFT p50, prefix-cache affinity routing / power of two",
            value=ratio,
            goal=0.9,
            better="lower",
            baseline=f"Ray Serve power-of-two routing over the same {args.replicas} LLM replica(s), same run",
        ),
        notes=[f"TTFT p50 ratio (prefix affinity / power of two): {ratio} (lower is better)"],
    )
    return h.write_results(results, args.out, started, machine)


if __name__ == "__main__":
    main()
