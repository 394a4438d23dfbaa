"""Trace replay: cost and elasticity of scale-to-zero against the same app kept always on.

Replays request arrivals and (scaled-down) token counts from a public Azure LLM inference trace as
streamed RAG chat completions, against surge with every model stage allowed to scale to zero, then
against the same app with every stage kept at one replica (interleaved when --rounds > 1). Measured:
replica-seconds per stage (replica counts polled every 0.5 s), TTFT per request and the share within
the SLO, cold starts. Then a simulator of the same autoscaling policy (benchmarks.autoscale_sim),
calibrated with the measured cold start and per-request times, runs the whole hour of the trace under
both policies: those numbers are SIMULATED and labelled so.

    python -m benchmarks.trace_replay [--quick] [--trace PATH] [--time-scale 1.0] [--on-s 30 --off-s 90]
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks import _harness as h
from benchmarks import _surge
from benchmarks.autoscale_sim import Calibration, describe, simulate
from benchmarks.traces import DEFAULT_TRACE, ReplayPlan, ReplayRequest, arrival_rate, carve, load_trace
from deployments.settings import AutoscalingSettings

NAME = "trace_replay"
STAGES = ("Embedder", "Retriever", "LLMServer")
WORDS = [
    "river",
    "model",
    "engine",
    "batch",
    "token",
    "vector",
    "signal",
    "window",
    "replica",
    "answer",
    "question",
    "drift",
]


def main(argv: list[str] | None = None) -> Path:
    parser = h.common_parser(__doc__ or NAME)
    parser.add_argument("--trace", type=Path, default=DEFAULT_TRACE, help="Azure trace CSV")
    parser.add_argument("--time-scale", type=float, default=1.0, help="replay time = trace time x this")
    parser.add_argument("--start-s", type=float, default=0.0, help="where in the trace to start")
    parser.add_argument("--duration-s", type=float, default=None, help="replay seconds per variant")
    parser.add_argument("--on-s", type=float, default=None, help="seconds of traffic per on/off cycle")
    parser.add_argument("--off-s", type=float, default=None, help="seconds of silence per cycle")
    parser.add_argument("--keep-every", type=int, default=None, help="keep every n-th request")
    parser.add_argument("--max-tokens-cap", type=int, default=32)
    parser.add_argument("--token-scale", type=float, default=0.125)
    parser.add_argument("--slo-s", type=float, default=2.0, help="time-to-first-token SLO")
    _surge.add_app_arguments(parser)
    args = parser.parse_args(argv)
    plan = ReplayPlan(
        start_s=args.start_s,
        duration_s=args.duration_s or (24.0 if args.quick else 240.0),
        time_scale=args.time_scale,
        on_s=args.on_s or (8.0 if args.quick else 30.0),
        off_s=args.off_s if args.off_s is not None else (8.0 if args.quick else 90.0),
        keep_every=args.keep_every or (20 if args.quick else 10),
        token_scale=args.token_scale,
        max_tokens_cap=args.max_tokens_cap if not args.quick else 8,
    )
    trace = load_trace(args.trace)
    schedule = carve(trace, plan)
    started = time.time()
    machine = h.machine_info()
    rounds = args.rounds or 1
    variants: dict[str, dict[str, Any]] = {
        "scale-to-zero": {"autoscaling": _surge.FAST_ZERO},
        "always-on": {"autoscaling": _surge.ALWAYS_ON},
    }
    runs: dict[str, list[dict[str, Any]]] = {}
    if args.base_url:  # a running deployment: measure it as configured; the simulator covers the other policy
        with _surge.surge_target(args) as target:
            runs["as deployed"] = [replay(target, schedule, plan, args.slo_s, seed_docs=not args.quick)]
    else:
        import tempfile

        with h.local_serve() as port, tempfile.TemporaryDirectory(prefix="surge-bench-index-") as index_dir:
            for _ in range(rounds):
                for label, stage in variants.items():
                    settings = _surge.bench_settings(
                        args,
                        Path(index_dir),
                        embedder=stage,
                        llm=stage,
                        retriever={"autoscaling": {**stage["autoscaling"]}},
                    )
                    target = _surge.deploy(port, settings)
                    try:
                        _surge.wait_ready(target, 600)
                        _surge.seed_documents(target, 12, args.seed)
                        if label == "scale-to-zero":  # start the replay with the stages idle at zero
                            _surge.wait_for_zero(target, STAGES, 120)
                        runs.setdefault(label, []).append(replay(target, schedule, plan, args.slo_s, False))
                    finally:
                        _surge.undeploy()
                        time.sleep(2)
    return report(args, plan, trace, schedule, runs, started, machine)


def prompt(request: ReplayRequest) -> str:
    return "Tell me about " + " ".join(WORDS[i % len(WORDS)] for i in range(request.prompt_words))


def replay(
    target: h.ServeTarget, schedule: list[ReplayRequest], plan: ReplayPlan, slo_s: float, seed_docs: bool
) -> dict[str, Any]:
    """Send `schedule` open-loop (each request at its time, whatever the others do) and poll replicas."""
    if seed_docs:
        _surge.seed_documents(target, 12)
    model = "rag/" + _surge.llm_name(target)
    polls: list[tuple[float, dict[str, int]]] = []
    stop = threading.Event()
    t0 = time.monotonic()

    def poll() -> None:
        while not stop.is_set():
            with contextlib.suppress(Exception):  # a missed poll is a gap, not a failure
                polls.append((time.monotonic() - t0, _counts(target)))
            stop.wait(0.5)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        outcomes = asyncio.run(_send_all(target, model, schedule, t0))
        time.sleep(1.0)
    finally:
        stop.set()
        poller.join(5)
    end = time.monotonic() - t0
    return {"outcomes": outcomes, "polls": polls, "duration_s": end}


def _counts(target: h.ServeTarget) -> dict[str, int]:
    if target.local:
        from ray import serve

        status = serve.status().applications[_surge.BENCH_APP]
        # Every replica Serve holds (starting, running, stopping) is paid for.
        return {name: sum(d.replica_states.values()) for name, d in status.deployments.items()}
    return _surge.replicas(target)


async def _send_all(
    target: h.ServeTarget, model: str, schedule: list[ReplayRequest], t0: float
) -> list[dict]:
    import httpx

    bar = h.progress_bar("trace replay", len(schedule))
    async with httpx.AsyncClient(
        timeout=900, headers=target.headers(), limits=httpx.Limits(max_connections=512)
    ) as client:

        async def one(request: ReplayRequest) -> dict[str, Any]:
            await asyncio.sleep(max(0.0, request.t_s - (time.monotonic() - t0)))
            outcome = await stream_chat(client, target, model, prompt(request), request.max_tokens)
            outcome["t_s"] = request.t_s
            bar.update(1)
            return outcome

        outcomes = await asyncio.gather(*(one(r) for r in schedule))
    bar.close()
    return list(outcomes)


async def stream_chat(
    client: Any, target: h.ServeTarget, model: str, text: str, max_tokens: int
) -> dict[str, Any]:
    """One streamed chat completion: TTFT (first content chunk), total time, tokens, surge timings."""
    started = time.perf_counter()
    first: float | None = None
    chunks = 0
    timings: dict[str, Any] = {}
    usage: dict[str, Any] = {}
    body = {
        "model": model,
        "messages": [{"role": "user", "content": text}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    try:
        async with client.stream("POST", f"{target.base_url}/v1/chat/completions", json=body) as response:
            if response.status_code != 200:
                return {"error": f"HTTP {response.status_code}: {(await response.aread())[:120]!r}"}
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                payload = json.loads(line[6:])
                if payload.get("choices") and payload["choices"][0].get("delta", {}).get("content"):
                    chunks += 1
                    if first is None:
                        first = time.perf_counter() - started
                if payload.get("usage"):
                    usage = payload["usage"]
                    timings = payload.get("surge", {}).get("timings", {})
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {str(exc)[:100]}"}
    return {
        "ttft_s": first,
        "total_s": time.perf_counter() - started,
        "chunks": chunks,
        "completion_tokens": usage.get("completion_tokens", chunks),
        "timings": timings,
    }


def replica_seconds(polls: list[tuple[float, dict[str, int]]], end_s: float) -> dict[str, float]:
    """Integral of replica counts over time (step function between polls)."""
    totals: dict[str, float] = {}
    for (t, counts), nxt in zip(polls, [*polls[1:], (end_s, {})], strict=True):
        for stage, n in counts.items():
            totals[stage] = totals.get(stage, 0.0) + n * max(0.0, nxt[0] - t)
    return {k: round(v, 1) for k, v in totals.items()}


def cold_starts(polls: list[tuple[float, dict[str, int]]]) -> dict[str, int]:
    """Transitions from 0 to >= 1 replicas per stage."""
    starts: dict[str, int] = {}
    last: dict[str, int] = {}
    for _, counts in polls:
        for stage, n in counts.items():
            if last.get(stage) == 0 and n > 0:
                starts[stage] = starts.get(stage, 0) + 1
            last[stage] = n
    return starts


def summarize_run(run: dict[str, Any], slo_s: float) -> dict[str, Any]:
    ok = [o for o in run["outcomes"] if "error" not in o and o["ttft_s"] is not None]
    ttfts = [o["ttft_s"] for o in ok]
    return {
        "requests": len(run["outcomes"]),
        "errors": len(run["outcomes"]) - len(ok),
        "error_samples": sorted({o["error"] for o in run["outcomes"] if "error" in o})[:3],
        "ttft_s": h.summarize(ttfts),
        "slo_share": round(sum(t <= slo_s for t in ttfts) / len(run["outcomes"]), 4)
        if run["outcomes"]
        else None,
        "replica_seconds": replica_seconds(run["polls"], run["duration_s"]),
        "cold_starts": cold_starts(run["polls"]),
        "requests_with_llm_cold_start": sum("llm_cold_start_s" in o.get("timings", {}) for o in ok),
        "duration_s": round(run["duration_s"], 1),
    }


def calibrate(runs: dict[str, list[dict[str, Any]]]) -> Calibration:
    """Cold start, warm TTFT and per-token time from the measured requests."""
    outcomes = [o for rs in runs.values() for r in rs for o in r["outcomes"] if o.get("ttft_s") is not None]
    cold = [o["ttft_s"] for o in outcomes if "llm_cold_start_s" in o.get("timings", {})]
    warm = [o for o in outcomes if "llm_cold_start_s" not in o.get("timings", {})]
    warm_ttft = statistics.median([o["ttft_s"] for o in warm]) if warm else 0.5
    per_token = [
        (o["total_s"] - o["ttft_s"]) / (o["completion_tokens"] - 1)
        for o in warm
        if o.get("completion_tokens", 0) > 1
    ]
    return Calibration(
        cold_start_s=round(statistics.median(cold), 3) if cold else 10.0,
        ttft_warm_s=round(warm_ttft, 4),
        per_token_s=round(statistics.median(per_token), 4) if per_token else 0.05,
    )


def report(
    args: Any,
    plan: ReplayPlan,
    trace: list[Any],
    schedule: list[ReplayRequest],
    runs: dict[str, list[dict[str, Any]]],
    started: float,
    machine: dict[str, Any],
) -> Path:
    figures: dict[str, Any] = {"measured": {}, "simulated": {}}
    rows: list[list[Any]] = []
    for label, rs in runs.items():
        summaries = [summarize_run(r, args.slo_s) for r in rs]
        figures["measured"][label] = summaries
        last = summaries[-1]
        total = sum(last["replica_seconds"].get(s, 0.0) for s in STAGES)
        rows.append(
            [
                f"measured: {label}",
                last["requests"],
                last["errors"],
                last["ttft_s"].get("p50"),
                last["ttft_s"].get("p99"),
                last["slo_share"],
                sum(last["cold_starts"].get(s, 0) for s in STAGES),
                last["replica_seconds"].get("LLMServer"),
                round(total, 1),
            ]
        )
    if "scale-to-zero" in figures["measured"] and "always-on" in figures["measured"]:
        zero = figures["measured"]["scale-to-zero"][-1]["replica_seconds"]
        on = figures["measured"]["always-on"][-1]["replica_seconds"]
        figures["measured"]["replica_seconds_ratio_zero_to_always_on"] = {
            s: h.ratio(zero.get(s, 0.0), on.get(s, 0.0)) for s in STAGES
        }
    calibration = calibrate(runs)
    hour_plan = ReplayPlan(
        **{**plan.describe(), "duration_s": (trace[-1].t_s - plan.start_s) * plan.time_scale}
    )
    hour = carve(trace, hour_plan)
    arrivals = [(r.t_s, r.max_tokens) for r in hour]
    zero_policy = AutoscalingSettings.model_validate(_surge.FAST_ZERO)
    on_policy = AutoscalingSettings.model_validate(_surge.ALWAYS_ON)
    sims = {}
    for label, policy in (("scale-to-zero", zero_policy), ("always-on", on_policy)):
        result = simulate(arrivals, policy, calibration, hour_plan.duration_s)
        sims[label] = result
        figures["simulated"][label] = result.summary(args.slo_s)
        s = figures["simulated"][label]
        rows.append(
            [
                f"SIMULATED LLM, {hour_plan.duration_s / 60:.0f} min: {label}",
                s["requests"],
                0,
                s["ttft_p50_s"],
                s["ttft_p99_s"],
                s["slo_share"],
                s["cold_starts"],
                s["replica_seconds"],
                None,
            ]
        )
    window = simulate([(r.t_s, r.max_tokens) for r in schedule], zero_policy, calibration, plan.duration_s)
    figures["simulated"]["measured_window_check"] = window.summary(args.slo_s)
    figures["simulated"]["replica_seconds_ratio_zero_to_always_on"] = h.ratio(
        sims["scale-to-zero"].replica_seconds, sims["always-on"].replica_seconds
    )
    figures["simulated"]["model"] = describe(zero_policy, calibration)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    plots = []
    rate = arrival_rate(schedule, 5.0, plan.duration_s)
    for label, rs in runs.items():
        polls = rs[-1]["polls"]
        lines = {stage: ([t for t, _ in polls], [c.get(stage, 0) for _, c in polls]) for stage in STAGES}
        plots.append(
            h.plot_timeseries(
                out / f"{NAME}_replicas_{label.replace(' ', '_')}.png",
                lines,
                "replicas",
                f"Replicas over time ({label}) vs request rate",
                secondary={"requests/s (5 s buckets)": rate},
                secondary_label="requests/s",
            )
        )
    times, counts = sims["scale-to-zero"].timeline
    hour_rate = arrival_rate(hour, 30.0, hour_plan.duration_s)
    plots.append(
        h.plot_timeseries(
            out / f"{NAME}_simulated_hour.png",
            {"LLM replicas (SIMULATED)": (times[::10], counts[::10])},
            "replicas",
            "SIMULATED: LLM replicas over the whole trace, scale-to-zero",
            secondary={"requests/s (30 s buckets)": hour_rate},
            secondary_label="requests/s",
        )
    )
    ttft_series = {
        f"{label} (measured)": [o["ttft_s"] for r in rs for o in r["outcomes"] if o.get("ttft_s")]
        for label, rs in runs.items()
    }
    plots.append(
        h.plot_cdf(
            out / f"{NAME}_ttft_cdf.png", ttft_series, "time to first token (s)", "TTFT during trace replay"
        )
    )
    results = h.Results(
        headline=replica_seconds_headline(figures),
        name=NAME,
        description="Trace replay: scale-to-zero vs always-on, measured on a window and SIMULATED over the "
        "whole trace (same policy, calibrated with the measured times).",
        parameters={
            "trace": str(args.trace),
            "plan": plan.describe(),
            "slo_s": args.slo_s,
            "requests_in_window": len(schedule),
            "requests_in_simulated_trace": len(hour),
            "llm_model": _surge.llm_model(args) if not args.base_url else "as deployed",
            "policy_scale_to_zero": _surge.FAST_ZERO,
            "request": "streamed RAG chat (rag/<model>)",
        },
        figures=figures,
        table_headers=[
            "run",
            "requests",
            "errors",
            "TTFT p50 s",
            "TTFT p99 s",
            "SLO share",
            "cold starts",
            "LLM replica-s",
            "all stages replica-s",
        ],
        table_rows=rows,
        notes=[
            f"Trace {args.trace.name}; replay time = trace time x {plan.time_scale}, on {plan.on_s} s / off "
            f"{plan.off_s} s, every {plan.keep_every}th request kept, max_tokens = min({plan.max_tokens_cap}, "
            f"generated x {plan.token_scale}) (trace token counts are far beyond this CPU).",
            "SIMULATED rows model only the LLM stage: fixed-slot concurrency, calibrated with "
            f"cold start {calibration.cold_start_s} s, warm TTFT {calibration.ttft_warm_s} s, "
            f"{calibration.per_token_s} s/token.",
            "Replica-seconds on CPU here; on a GPU node the LLM stage's replica-seconds are GPU-seconds.",
        ],
        plots=plots,
    )
    return h.write_results(results, out, started, machine)


def replica_seconds_headline(figures: dict[str, Any]) -> h.Headline:
    """LLM replica-seconds, scale-to-zero / always-on: measured when both runs were measured, else the
    simulated hour (said in the metric's name)."""
    measured = figures.get("measured", {}).get("replica_seconds_ratio_zero_to_always_on", {})
    if measured.get("LLMServer") is not None:
        value, source = measured["LLMServer"], "measured window"
    else:
        value, source = figures["simulated"]["replica_seconds_ratio_zero_to_always_on"], "SIMULATED hour"
    return h.Headline(
        metric=f"LLM replica-seconds, scale-to-zero / always-on ({source})",
        value=value,
        goal=None,
        better="lower",
        baseline="the same replay with the app kept always-on (min_replicas 1)",
    )


if __name__ == "__main__":
    main()
