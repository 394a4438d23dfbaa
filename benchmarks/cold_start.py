"""Cold start: from every model stage at zero, the time from request to first token, split into phases,
against the floor of loading the same model in a fresh process; with and without chain wake, and with
keep-warm (provisioned concurrency) for comparison.

Phases come from the gateway's `surge.timings` of a non-streamed RAG chat completion (seconds since the
request arrived): `llm_replica_started` (replica scheduled, its constructor began), `llm_ready` (model
loaded), `first_token`; `embedder_cold_start_s` and `retrieved` for the embedding side. Without chain wake
the LLM is first called after retrieval, so its phases are not reported separately.
Floor: a fresh Python process imports the engine, loads the same model and generates one token.

    python -m benchmarks.cold_start [--quick] [--llm-model smollm2-135m-instruct]
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import _harness as h
from benchmarks import _surge

NAME = "cold_start"
STAGES = ("Embedder", "LLMServer")
VARIANTS: dict[str, dict[str, Any]] = {
    "zero + chain wake": {"gateway": {"chain_wake": True}, "warm": False},
    "zero, no chain wake": {"gateway": {"chain_wake": False}, "warm": False},
    "keep-warm": {"gateway": {"chain_wake": True}, "warm": True},
}

FLOOR_SCRIPT = r"""
import asyncio, json, sys, time
t0 = time.perf_counter()
from deployments.settings import LLMSettings, EmbedderSettings
from deployments.engines.base import build_engine, SamplingSettings
from surge_core.embedding import TextEmbedder
t_import = time.perf_counter()
settings = LLMSettings.model_validate_json(sys.argv[1])
async def run():
    engine = build_engine(settings)
    await engine.start()
    t_loaded = time.perf_counter()
    async for _ in engine.generate(engine.render_chat([{"role": "user", "content": "hi"}]),
                                   SamplingSettings(max_tokens=1, temperature=0), "floor"):
        break
    t_first = time.perf_counter()
    await engine.shutdown()
    return t_loaded, t_first
t_loaded, t_first = asyncio.run(run())
t_e0 = time.perf_counter()
TextEmbedder(EmbedderSettings()).embed(["hi"])
t_e1 = time.perf_counter()
print("FLOOR " + json.dumps({"import_s": t_import - t0, "llm_load_s": t_loaded - t_import,
      "llm_first_token_s": t_first - t_loaded, "llm_total_s": t_first - t0, "embedder_load_s": t_e1 - t_e0}))
"""


def main(argv: list[str] | None = None) -> Path:
    parser = h.common_parser(__doc__ or NAME)
    parser.add_argument("--max-tokens", type=int, default=4)
    _surge.add_app_arguments(parser, default_llm="smollm2-135m-instruct")
    args = parser.parse_args(argv)
    rounds = args.rounds or (1 if args.quick else 2)
    started = time.time()
    machine = h.machine_info()
    samples: dict[str, list[dict[str, Any]]] = {}
    floors: list[dict[str, float]] = []
    if args.base_url:
        # The floor runs here too (on this machine, with --llm-model): without it there is no ratio.
        with _surge.surge_target(args) as target, tempfile.TemporaryDirectory() as index_dir:
            _surge.seed_documents(target, 4, args.seed)
            for _ in h.progress(range(rounds), "cold start"):
                floors.append(measure_floor(args, Path(index_dir)))
                samples.setdefault("as deployed", []).append(one_cold_request(target, args.max_tokens, True))
    else:
        with h.local_serve() as port, tempfile.TemporaryDirectory(prefix="surge-bench-index-") as index_dir:
            bar = h.progress_bar("cold start", rounds * (len(VARIANTS) + 1))
            for _ in range(rounds):
                floors.append(measure_floor(args, Path(index_dir)))
                bar.update(1)
                for label, variant in VARIANTS.items():
                    scaling = _surge.ALWAYS_ON if variant["warm"] else _surge.FAST_ZERO
                    warm_flag = {"keep_warm": True} if variant["warm"] else {}
                    stage = {"autoscaling": {**_surge.FAST_ZERO, **warm_flag} if variant["warm"] else scaling}
                    settings = _surge.bench_settings(
                        args, Path(index_dir), embedder=stage, llm=stage, gateway=variant["gateway"]
                    )
                    target = _surge.deploy(port, settings)
                    try:
                        _surge.seed_documents(target, 4, args.seed)
                        samples.setdefault(label, []).append(
                            one_cold_request(target, args.max_tokens, not variant["warm"])
                        )
                    finally:
                        _surge.undeploy()
                    bar.update(1)
            bar.close()
    return report(args, samples, floors, rounds, started, machine)


def one_cold_request(target: h.ServeTarget, max_tokens: int, from_zero: bool) -> dict[str, Any]:
    """Wait until the model stages sit at zero (unless kept warm), then time one RAG request."""
    import httpx

    if from_zero:
        if not _surge.wait_for_zero(target, STAGES, 180):
            raise RuntimeError(f"stages {STAGES} did not reach zero replicas within 180 s")
    else:
        _surge.wait_ready(target, 900)
        time.sleep(6)  # past the idle delays: a scale-to-zero stage would be gone by now
    model = "rag/" + _surge.llm_name(target)
    t0 = time.perf_counter()
    response = httpx.post(
        f"{target.base_url}/v1/chat/completions",
        headers=target.headers(),
        timeout=900,
        json={
            "model": model,
            "messages": [{"role": "user", "content": "What about solar panels?"}],
            "max_tokens": max_tokens,
            "temperature": 0,
        },
    )
    total = time.perf_counter() - t0
    h.check_status(response)
    marks = dict(response.json()["surge"]["timings"])
    marks["client_total_s"] = total
    return marks


def measure_floor(args: Any, index_dir: Path) -> dict[str, float]:
    settings = _surge.bench_settings(args, index_dir).llm
    process = subprocess.run(
        [sys.executable, "-c", FLOOR_SCRIPT, settings.model_dump_json()],
        cwd=h.REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    for line in process.stdout.splitlines():
        if line.startswith("FLOOR "):
            return {k: round(v, 3) for k, v in json.loads(line[6:]).items()}
    raise RuntimeError(f"floor process failed ({process.returncode}): {process.stderr[-2000:]}")


def phases(marks: dict[str, Any]) -> dict[str, float]:
    """Request-to-first-token split into consecutive phases (seconds)."""
    first = marks["first_token"]
    if "llm_replica_started" in marks and "llm_ready" in marks:
        scheduled = marks["llm_replica_started"]
        loaded = marks.get("llm_cold_start_s", marks["llm_ready"])
        return {
            "replica scheduled": scheduled,
            "model loaded": max(0.0, loaded - scheduled),
            "first token": max(0.0, first - loaded),
        }
    return {
        "embed + retrieve": marks.get("retrieved", 0.0),
        "LLM start + first token": first - marks.get("retrieved", 0.0),
    }


HEADLINE_GOAL = 1.3


def cold_start_headline(
    samples: dict[str, list[dict[str, Any]]], floors: list[dict[str, float]]
) -> h.Headline:
    """First token from zero / the floor measured in the same round (paired), median over rounds.

    The floor is the whole fresh-process cost (import + model load + one token), so the ratio charges
    surge only for what it adds: scheduling a replica, loading beside the embedder, the RAG phases.
    """
    label = "as deployed" if "as deployed" in samples else "zero + chain wake"
    runs = samples.get(label, [])
    pairs = [
        m["first_token"] / f["llm_total_s"] for m, f in zip(runs, floors, strict=False) if f["llm_total_s"]
    ]
    return h.Headline(
        metric=f"first token from zero ({label}) / fresh-process load floor, median of paired rounds",
        value=round(statistics.median(pairs), 3) if pairs else None,
        goal=HEADLINE_GOAL,
        better="lower",
        baseline="a fresh process importing the engine, loading the same model and generating 1 token "
        "(same round)",
    )


def report(
    args: Any,
    samples: dict[str, list[dict[str, Any]]],
    floors: list[dict[str, float]],
    rounds: int,
    started: float,
    machine: dict[str, Any],
) -> Path:
    figures: dict[str, Any] = {"floor_fresh_process": {}, "variants": {}}
    rows: list[list[Any]] = []
    if floors:
        for key in floors[0]:
            figures["floor_fresh_process"][key] = h.across_rounds([f[key] for f in floors])
        floor = figures["floor_fresh_process"]
        rows.append(
            [
                "floor: fresh process, load + 1 token",
                None,
                floor["llm_load_s"]["median"],
                None,
                floor["llm_first_token_s"]["median"],
                floor["llm_total_s"]["median"],
                f"{floor['llm_total_s']['min']:.1f}-{floor['llm_total_s']['max']:.1f}",
                None,
            ]
        )
    bars: dict[str, dict[str, float]] = {}
    for label, runs in samples.items():
        ttft = [m["first_token"] for m in runs]
        split = [phases(m) for m in runs]
        keys = list(split[0])
        figures["variants"][label] = {
            "ttft_s": h.across_rounds(ttft),
            "phases_s": {k: h.across_rounds([s[k] for s in split]) for k in keys},
            "embedder_cold_start_s": h.across_rounds(
                [m["embedder_cold_start_s"] for m in runs if "embedder_cold_start_s" in m]
            ),
            "raw_timings": runs,
        }
        bars[label] = {k: figures["variants"][label]["phases_s"][k]["median"] for k in keys}
        f = figures["variants"][label]
        floor_total = figures["floor_fresh_process"].get("llm_total_s", {}).get("median")
        rows.append(
            [
                label,
                bars[label].get("replica scheduled"),
                bars[label].get("model loaded"),
                bars[label].get("embed + retrieve"),
                bars[label].get("first token", bars[label].get("LLM start + first token")),
                f["ttft_s"]["median"],
                f"{f['ttft_s']['min']:.2f}-{f['ttft_s']['max']:.2f}",
                h.ratio(f["ttft_s"]["median"], floor_total) if floor_total else None,
            ]
        )
    if floors:
        bars["floor (fresh process)"] = {
            "import": figures["floor_fresh_process"]["import_s"]["median"],
            "model loaded": figures["floor_fresh_process"]["llm_load_s"]["median"],
            "first token": figures["floor_fresh_process"]["llm_first_token_s"]["median"],
        }
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    plots = [
        h.plot_bars(
            out / f"{NAME}_phases.png",
            bars,
            "seconds (median of rounds)",
            "Cold start: request to first token, by phase",
            stacked=True,
        )
    ]
    results = h.Results(
        headline=cold_start_headline(samples, floors),
        name=NAME,
        description="Request-to-first-token from zero replicas (RAG chat, non-streamed), by phase, vs loading "
        "the same model in a fresh process; chain wake on/off; keep-warm for comparison.",
        parameters={
            "rounds": rounds,
            "max_tokens": args.max_tokens,
            "llm_model": _surge.llm_model(args) if not args.base_url else "as deployed",
            "scale_to_zero_policy": _surge.FAST_ZERO,
        },
        figures=figures,
        table_headers=[
            "variant",
            "scheduled s",
            "model loaded s",
            "embed + retrieve s",
            "(LLM start +) first token s",
            "TTFT s",
            "TTFT range",
            "x floor",
        ],
        table_rows=rows,
        notes=[
            "Phases are consecutive and sum to the TTFT; 'scheduled' = request arrival to the replica's "
            "constructor starting (Serve scale-up decision, actor start, imports). Without chain wake (and "
            "when kept warm) the gateway sends no wake call, so the LLM's share is one figure: from retrieval "
            "done to first token. The floor's columns are its import + load and its first token.",
        ],
        plots=plots,
    )
    return h.write_results(results, out, started, machine)


if __name__ == "__main__":
    main()
