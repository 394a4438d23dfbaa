"""RAG latency breakdown: embed / retrieve / generate / total through surge against the same models
called in-process, plus time to first token (TTFT) and inter-token latency (ITL) of streamed answers.

surge: non-streamed RAG chat completions report `surge.timings` (seconds since the gateway received the
request: embedded, retrieved, first_token, generated); streamed ones are timed by the client (TTFT =
first content chunk, ITL = gaps between content chunks).
In-process baseline: the same MiniLM (TextEmbedder), the same embedded vector index holding the same
chunks, the same top_k, and the same LLM engine (deployments.engines, vLLM) driven directly, one request
at a time.

Paired and cache-fair: each question is asked in-process and then through surge (the pair), then a second,
distinct pair is asked in-process and streamed through surge. Every request starts with a system message
unique to the run and the request, so vLLM's prefix cache reuses nothing on either side (both engines
stay in the same state). An earlier version streamed the very question surge had just answered
non-streamed, so the streamed TTFT hit the prefix cache that the baseline never did (0.75x "faster than
in-process"). Headline: the median over pairs of surge total / in-process total (goal <= 1.10).

    python -m benchmarks.rag_latency [--quick] [--llm-model smollm2-135m-instruct]
"""

from __future__ import annotations

import asyncio
import itertools
import json
import statistics
import tempfile
import time
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks import _harness as h
from benchmarks import _surge

NAME = "rag_latency"
QUESTIONS = [f"What does the note say about {topic}?" for topic in _surge.TOPICS]
PHASES = ("embed", "retrieve", "ttft_after_retrieve", "generate", "total")


def main(argv: list[str] | None = None) -> Path:
    parser = h.common_parser(__doc__ or NAME)
    parser.add_argument("--requests", type=int, default=None, help="requests per path and round")
    parser.add_argument("--max-tokens", type=int, default=None)
    parser.add_argument("--documents", type=int, default=24)
    _surge.add_app_arguments(parser, default_llm="smollm2-135m-instruct")
    args = parser.parse_args(argv)
    rounds = args.rounds or (1 if args.quick else 3)
    requests = args.requests or (3 if args.quick else 5)
    max_tokens = args.max_tokens or (8 if args.quick else 32)
    started = time.time()
    machine = h.machine_info()
    docs = _surge.synthetic_documents(args.documents, args.seed)
    samples: dict[str, list[dict[str, float]]] = {
        "in-process": [],
        "surge": [],
        "in-process (stream pair)": [],
        "surge stream": [],
    }
    with tempfile.TemporaryDirectory(prefix="surge-bench-") as tmp, _surge.surge_target(args) as target:
        if target.local:
            _surge.wait_ready(target, 900)
        settings = _surge.bench_settings(args, Path(tmp) / "unused")
        _surge.seed_documents(target, args.documents, args.seed)
        baseline = InProcessRag(settings, Path(tmp) / "index", docs)
        model = "rag/" + _surge.llm_name(target)
        # One event loop for the whole run: vLLM's AsyncLLM is bound to the loop it started in.
        asyncio.run(measure(baseline, target, model, rounds, requests, max_tokens, samples))
    top_k = settings.gateway.rag_top_k
    return report(args, samples, rounds, requests, max_tokens, top_k, started, machine, target)


async def measure(
    baseline: InProcessRag,
    target: h.ServeTarget,
    model: str,
    rounds: int,
    requests: int,
    max_tokens: int,
    samples: dict[str, list[dict[str, float]]],
) -> None:
    await baseline.start()
    nonce = uuid.uuid4().hex[:12]
    try:
        warm = conversation(QUESTIONS[0], f"{nonce} warm-up")  # warm-up both paths
        await baseline.ask(warm, max_tokens)
        await surge_ask(target, model, warm, max_tokens)
        bar = h.progress_bar("rag latency", rounds * requests * 4)
        for r in range(rounds):
            for i in range(requests):
                question = QUESTIONS[(r * requests + i) % len(QUESTIONS)]
                pair = conversation(question, f"{nonce} r{r} q{i}")
                samples["in-process"].append(await baseline.ask(pair, max_tokens))
                samples["surge"].append(await surge_ask(target, model, pair, max_tokens))
                streamed = conversation(question, f"{nonce} r{r} q{i} streamed")
                samples["in-process (stream pair)"].append(await baseline.ask(streamed, max_tokens))
                samples["surge stream"].append(await surge_stream(target, model, streamed, max_tokens))
                bar.update(4)
        bar.close()
    finally:
        await baseline.stop()


def conversation(question: str, tag: str) -> list[dict[str, str]]:
    """The messages of one request: a system line unique to the request (its first tokens differ, so the
    prefix cache reuses nothing), then the question (what RAG embeds)."""
    return [
        {"role": "system", "content": f"Request {tag}. Answer briefly."},
        {"role": "user", "content": question},
    ]


class InProcessRag:
    """The same three models, called directly in this process (the baseline)."""

    def __init__(self, settings: Any, index_dir: Path, docs: list[dict[str, Any]]) -> None:
        self.settings = settings
        self.index_dir = index_dir
        self.docs = docs
        self.engine: Any = None

    async def start(self) -> None:
        from deployments.engines.base import build_engine
        from surge_core.chunking import chunk_text
        from surge_core.embedding import TextEmbedder
        from surge_core.store_settings import EmbeddedStoreSettings
        from surge_core.vector_store import ChunkRecord, open_vector_store

        self.embedder = TextEmbedder(self.settings.embedder)
        self.store = open_vector_store(
            EmbeddedStoreSettings(path=self.index_dir), self.settings.retriever.dimensions
        )
        gateway = self.settings.gateway
        records: dict[str, list[Any]] = {}
        for doc in self.docs:
            chunks = chunk_text(doc["text"], gateway.chunk_chars, gateway.chunk_overlap_chars)
            vectors = self.embedder.embed(chunks)
            records[doc["id"]] = [
                ChunkRecord(
                    doc_id=doc["id"], chunk_index=i, text=t, embedding=v.tolist(), metadata=doc["metadata"]
                )
                for i, (t, v) in enumerate(zip(chunks, vectors, strict=True))
            ]
        self.store.replace_documents(records)
        self.engine = build_engine(self.settings.llm)
        await self.engine.start()

    async def ask(self, messages: list[dict[str, str]], max_tokens: int) -> dict[str, float]:
        from deployments import rag
        from deployments.engines.base import SamplingSettings

        question = messages[-1]["content"]
        t0 = time.perf_counter()
        vector = self.embedder.embed([question])[0]
        t_embed = time.perf_counter()
        hits = [
            asdict(hit) for hit in self.store.search(vector.tolist(), self.settings.gateway.rag_top_k, None)
        ]
        t_retrieve = time.perf_counter()
        budget = max(400, (self.settings.llm.max_model_len - max_tokens) * 2)
        context = rag.context_block(hits, None, None, budget)
        prompt = self.engine.render_chat(rag.with_context(messages, context))
        arrivals: list[float] = []
        async for delta in self.engine.generate(
            prompt, SamplingSettings(max_tokens=max_tokens, temperature=0), uuid.uuid4().hex
        ):
            if delta.text:
                arrivals.append(time.perf_counter())
        end = time.perf_counter()
        first = arrivals[0] if arrivals else None
        gaps = [b - a for a, b in itertools.pairwise(arrivals)]
        return {
            "passages": float(len(hits)),
            "itl": sum(gaps) / len(gaps) if gaps else 0.0,
            "embed": t_embed - t0,
            "retrieve": t_retrieve - t_embed,
            "ttft_after_retrieve": (first or end) - t_retrieve,
            "generate": end - t_retrieve,
            "total": end - t0,
            "ttft": (first or end) - t0,
        }

    async def stop(self) -> None:
        if self.engine is not None:
            await self.engine.shutdown()


async def surge_ask(
    target: h.ServeTarget, model: str, messages: list[dict[str, str]], max_tokens: int
) -> dict[str, float]:
    import httpx

    async with httpx.AsyncClient(timeout=600, headers=target.headers()) as client:
        t0 = time.perf_counter()
        response = await client.post(
            f"{target.base_url}/v1/chat/completions",
            json={
                "model": model,
                "messages": messages,
                "max_tokens": max_tokens,
                "temperature": 0,
            },
        )
        end = time.perf_counter()
    h.check_status(response)
    body = response.json()
    marks = body["surge"]["timings"]
    return {
        # Passages in the answer's context: a surge that retrieved nothing would look fast, not be fast.
        "passages": float(len(body.get("sources") or [])),
        # A stage at zero (scale to zero, as deployed) makes the request wait for a cold start: counted so
        # the headline can say it measured cold starts, not serving overhead.
        "cold_starts": float(sum(1 for key in marks if key.endswith("_cold_start_s"))),
        "embed": marks["embedded"],
        "retrieve": marks["retrieved"] - marks["embedded"],
        "ttft_after_retrieve": marks["first_token"] - marks["retrieved"],
        "generate": marks["generated"] - marks["retrieved"],
        "total": end - t0,
        "ttft": marks["first_token"],
        "server_total": marks["generated"],
    }


async def surge_stream(
    target: h.ServeTarget, model: str, messages: list[dict[str, str]], max_tokens: int
) -> dict[str, float]:
    import httpx

    arrivals: list[float] = []
    async with httpx.AsyncClient(timeout=600, headers=target.headers()) as client:
        t0 = time.perf_counter()
        async with client.stream(
            "POST",
            f"{target.base_url}/v1/chat/completions",
            json={
                "model": model,
                "messages": messages,
                "max_tokens": max_tokens,
                "temperature": 0,
                "stream": True,
            },
        ) as response:
            if response.status_code != 200:
                raise RuntimeError(f"HTTP {response.status_code}")
            async for line in response.aiter_lines():
                if line.startswith("data: {"):
                    choices = json.loads(line[6:]).get("choices") or [{}]
                    if choices[0].get("delta", {}).get("content"):
                        arrivals.append(time.perf_counter())
        end = time.perf_counter()
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    return {
        "ttft": (arrivals[0] if arrivals else end) - t0,
        "total": end - t0,
        "itl": sum(gaps) / len(gaps) if gaps else 0.0,
        "chunks": float(len(arrivals)),
    }


def paired_ratio(served: list[dict[str, float]], base: list[dict[str, float]], key: str) -> float | None:
    """Median over pairs (same question, asked back to back) of surge's value / in-process's value."""
    ratios = [s[key] / b[key] for s, b in zip(served, base, strict=True) if key in s and b.get(key)]
    return round(statistics.median(ratios), 3) if ratios else None


HEADLINE_GOAL = 1.10
# (table label, surge series, in-process series it is paired with, phase key)
ROWS = [
    *((phase, "surge", "in-process", phase) for phase in PHASES),
    ("ttft (non-streamed, gateway mark)", "surge", "in-process", "ttft"),
    ("ttft (streamed, client)", "surge stream", "in-process (stream pair)", "ttft"),
    ("total (streamed, client)", "surge stream", "in-process (stream pair)", "total"),
    ("itl (streamed)", "surge stream", "in-process (stream pair)", "itl"),
]


def report(
    args: Any,
    samples: dict[str, list[dict[str, float]]],
    rounds: int,
    requests: int,
    max_tokens: int,
    top_k: int,
    started: float,
    machine: dict[str, Any],
    target: h.ServeTarget,
) -> Path:
    figures: dict[str, Any] = {
        # Counts, not times: how many passages each answer's context held, per path (same top_k on both).
        "passages_per_answer": {
            path: sorted({int(row["passages"]) for row in rows if "passages" in row})
            for path, rows in samples.items()
            if path in ("in-process", "surge")
        }
    }
    for path, rows in samples.items():
        keys = sorted({k for row in rows for k in row} - {"passages"})  # times only
        figures[path] = {k: h.summarize([row[k] for row in rows if k in row], 1000) for k in keys}
    figures["paired_ratio_surge_to_in_process"] = {
        label: paired_ratio(samples[served], samples[base], key) for label, served, base, key in ROWS
    }
    table = [
        [
            label,
            figures[base].get(key, {}).get("p50"),
            figures[served].get(key, {}).get("p50"),
            figures[served].get(key, {}).get("p99"),
            h.ratio(figures[served].get(key, {}).get("p50", 0), figures[base].get(key, {}).get("p50", 0)),
            figures["paired_ratio_surge_to_in_process"][label],
        ]
        for label, served, base, key in ROWS
    ]
    cold = sum(1 for row in samples["surge"] if row.get("cold_starts"))
    figures["surge_requests_that_waited_for_a_cold_start"] = cold
    headline = h.Headline(
        metric="RAG total latency, surge / same models in-process (median of paired requests)"
        + (f" -- {cold} of {len(samples['surge'])} surge requests waited for a cold start" if cold else ""),
        value=figures["paired_ratio_surge_to_in_process"]["total"],
        goal=HEADLINE_GOAL,
        better="lower",
        baseline=f"the same MiniLM, index (top_k {top_k}) and LLM engine in-process, same question back to "
        "back, prefix cache unused on both sides",
    )
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    phases = ("embed", "retrieve", "ttft_after_retrieve")
    bars = {
        path: {
            **{p: figures[path][p]["p50"] for p in phases},
            "rest of generation": figures[path]["generate"]["p50"]
            - figures[path]["ttft_after_retrieve"]["p50"],
            "outside the phases": figures[path]["total"]["p50"]
            - figures[path]["embed"]["p50"]
            - figures[path]["retrieve"]["p50"]
            - figures[path]["generate"]["p50"],
        }
        for path in ("in-process", "surge")
    }
    plots = [
        h.plot_bars(out / f"{NAME}_phases.png", bars, "ms (p50)", "RAG latency by phase", stacked=True),
        h.plot_cdf(
            out / f"{NAME}_ttft_cdf.png",
            {
                "in-process": [r["ttft"] * 1000 for r in samples["in-process (stream pair)"]],
                "surge streamed (client)": [r["ttft"] * 1000 for r in samples["surge stream"]],
            },
            "time to first token (ms)",
            "TTFT: surge vs in-process",
        ),
    ]
    results = h.Results(
        headline=headline,
        name=NAME,
        description="RAG request latency by phase (p50 ms), surge vs the same models in-process, "
        "one request at a time, interleaved rounds.",
        parameters={
            "rounds": rounds,
            "requests_per_round": requests,
            "max_tokens": max_tokens,
            "llm_model": _surge.llm_model(args) if target.local else "as deployed",
            "documents": args.documents,
            "top_k": top_k,
            "target": target.base_url,
            # Where a local app embeds and searches the question (issue 13's no-hop levers).
            "embed_queries": args.embed_queries if target.local else "as deployed",
            "retrieve_queries": args.retrieve_queries if target.local else "as deployed",
        },
        figures=figures,
        table_headers=[
            "phase",
            "in-process p50 ms",
            "surge p50 ms",
            "surge p99 ms",
            "p50 / p50",
            "paired median ratio",
        ],
        table_rows=table,
        notes=[
            "surge phases come from the gateway's surge.timings (server side); 'total' is client-measured. "
            "'outside the phases' = total - embed - retrieve - generate: HTTP, proxy, gateway, JSON."
        ],
        plots=plots,
    )
    return h.write_results(results, out, started, machine)


if __name__ == "__main__":
    main()
