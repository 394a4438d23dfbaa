"""The JSON, table and headline of `benchmarks.trace_replay`: measured figures per workload and policy, the
simulator calibrated from them (its error against the measured replay), and the simulated week.

Business days are scored on the held-out days (after `train_days`); natural and code over the whole replay.
The simulator's error is over the whole short replay on both sides (there the learned warmer learns online
in both, from an empty model).
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks import _harness as h
from benchmarks import replay_report as rr
from benchmarks._headline import Headline
from benchmarks._replay_clock import CLOCK_KEYS, on_replay_clock
from benchmarks.autoscale_sim import Calibration
from benchmarks.elastic_workloads import BusinessDays, Workload, business_days
from benchmarks.policy_sim import policies as week_policies
from benchmarks.policy_sim import simulate_policy
from benchmarks.trace_replay import HEADLINE_POLICY, NAME, calibration_from, compressed
from benchmarks.traces import DEFAULT_TRACE, load_trace

STATEMENT = (
    "MEASURED on real Ray Serve (controller, replica starts, routing, surge's policies through "
    "autoscaling_config.policy on a compressed clock); the engine is the synthetic one with the real tiny "
    "engine's measured load time and token rate, so model compute under load is not measured."
)


def measured_figures(
    workload: Workload, compress: float, rounds: list[dict[str, Any]], slo_s: float
) -> dict[str, Any]:
    """Per policy: each round's summary (scored span and whole replay) and the spread across rounds."""
    scored_from = workload.scored_from_s / compress
    per_round: dict[str, list[dict[str, Any]]] = {}
    whole: list[dict[str, dict[str, Any]]] = []
    for run in rounds:
        end = run["end_s"]
        scored = {
            name: rr.summarize(run["polls"][name], outs, scored_from, end, slo_s)
            for name, outs in run["outcomes"].items()
        }
        for name, summary in rr.with_ratios(scored).items():
            per_round.setdefault(name, []).append(summary)
        whole.append(
            rr.with_ratios(
                {
                    name: rr.summarize(run["polls"][name], outs, 0.0, end, slo_s)
                    for name, outs in run["outcomes"].items()
                }
            )
        )
    spread = {
        name: {
            key: rr.across_rounds(summaries, key)
            for key in ("replica_seconds_vs_always_on", "slo_attainment", "cold_starts", "idle_warm_s")
        }
        | {"warm_hit_rate": rr.across_rounds(summaries, "warm_hit_rate")}
        for name, summaries in per_round.items()
    }
    return {
        "scored_span_s": [round(scored_from, 1), round(rounds[0]["end_s"], 1)],
        "scored": "held-out days"
        if workload.train_end_s is not None
        else "after the warm-up"
        if workload.warmup_end_s is not None
        else "whole replay",
        "per_round": per_round,
        "spread": spread,
        "whole_replay_last_round": whole[-1],
    }


def simulated_short(
    workload: Workload, compress: float, run: dict[str, Any], cal: Calibration, slo_s: float
) -> dict[str, dict[str, Any]]:
    """The simulator on the same short workload, same compressed clock, same policy settings."""
    from deployments.settings import AutoscalingSettings

    short = compressed(workload, compress)
    results = {}
    for name, auto in run["policies"].items():
        settings = AutoscalingSettings.model_validate(auto)
        # The kwargs the replay handed Serve, on the simulator's own clock. A replay of before 2026-12-02's
        # second run fixed its leads (`lead_s`); since, each policy leads by the cold starts it measures.
        config = on_replay_clock(settings.to_serve(cal.slots), 0.0, 1.0, 0.0, warmer_lead_s=run.get("lead_s"))
        kwargs = config["policy"]["policy_kwargs"] if config.get("policy") else None
        if kwargs is not None:
            kwargs = {k: v for k, v in kwargs.items() if k not in CLOCK_KEYS}
        results[name] = simulate_policy(
            short, settings, cal, dt_s=0.25, idle_dt_s=0.5, clock_scale=compress, policy_kwargs=kwargs
        )
    base = results["always-on"].replica_seconds
    return {
        name: {
            "replica_seconds": round(r.replica_seconds, 1),
            "replica_seconds_vs_always_on": round(r.replica_seconds / base, 4),
            "slo_attainment": round(r.slo_share(slo_s), 4),
            "cold_starts": r.cold_starts,
            "idle_warm_s": round(r.idle_warm_s, 1),
        }
        for name, r in results.items()
    }


def simulated_week(cal: Calibration, slo_s: float) -> dict[str, Any]:
    """SIMULATED: business days over a whole week in real time, trained on Mon-Wed, scored Thu-Sun."""
    workload = business_days(load_trace(DEFAULT_TRACE), BusinessDays(days=7, train_days=3, keep_every=40))
    out: dict[str, Any] = {"workload": workload.describe(), "policies": {}}
    runs = {
        name: simulate_policy(workload, settings, cal, freeze_learning_at_s=workload.train_end_s)
        for name, settings in week_policies(workload, slo_s, 9, 17).items()
    }
    base = runs["always-on"].scored_replica_seconds
    for name, run in runs.items():
        summary = run.summary(slo_s)
        out["policies"][name] = {
            "replica_seconds_vs_always_on": round(run.scored_replica_seconds / base, 4),
            "slo_attainment": summary["scored"]["slo_share"],
            "warm_hit_rate": summary["scored"]["warm_hit_rate"],
            "cold_starts": run.cold_starts,
        }
    return out


def _cell(spread: dict[str, Any] | None) -> Any:
    if not spread:
        return None
    if spread["rounds"] == 1:
        return spread["median"]
    return f"{spread['median']} ({spread['min']}-{spread['max']})"


def report(
    args: Any,
    workloads: dict[str, tuple[Workload, float]],
    runs: dict[str, list[dict[str, Any]]],
    real: dict[str, float],
    started: float,
    machine: dict[str, Any],
) -> Path:
    cal = calibration_from(real, runs)
    figures: dict[str, Any] = {"statement": STATEMENT, "real_engine": real, "measured": {}, "simulated": {}}
    rows: list[list[Any]] = []
    errors: dict[str, Any] = {}
    for name, (workload, compress) in workloads.items():
        measured = measured_figures(workload, compress, runs[name], args.slo_s)
        measured["workload"] = {**workload.describe(), "replay_compress": round(compress, 2)}
        measured["lead_s_workload_time"] = runs[name][0].get("lead_s") or "1.5x the p90 measured cold start"
        measured["deploy_overran_origin_s"] = [r.get("deploy_overran_origin_s") for r in runs[name]]
        figures["measured"][name] = measured
        for policy, spread in measured["spread"].items():
            last = measured["per_round"][policy][-1]
            rows.append(
                [
                    name,
                    policy,
                    _cell(spread["replica_seconds_vs_always_on"]),
                    _cell(spread["slo_attainment"]),
                    _cell(spread["cold_starts"]),
                    _cell(spread["idle_warm_s"]),
                    _cell(spread["warm_hit_rate"]),
                    last["requests"],
                    last["errors"],
                ]
            )
        sim = simulated_short(workload, compress, runs[name][-1], cal, args.slo_s)
        figures["simulated"][f"{name}_same_replay"] = sim
        errors[name] = rr.simulator_error(measured["whole_replay_last_round"], sim)
    figures["simulator_error"] = errors
    figures["simulated"]["model"] = {"calibration": asdict(cal), "source": "this run (measured replay)"}
    t0 = time.monotonic()
    if args.week:
        figures["simulated"]["week_business_days"] = simulated_week(cal, args.slo_s)
        figures["simulated"]["week_seconds_to_simulate"] = round(time.monotonic() - t0, 1)
    headline = headline_of(figures)
    results = h.Results(
        name=NAME,
        description="Trace replay, MEASURED: surge's autoscaling policies side by side on real Ray Serve, "
        f"Azure-trace workloads compressed in time; TTFT SLO {args.slo_s} s.",
        parameters={
            "statement": STATEMENT,
            "slo_s": args.slo_s,
            "day_s": args.day_s,
            "days": args.days,
            "train_days": args.train_days,
            "keep_every": args.keep_every,
            "workloads": args.workloads,
            "headline_policy": HEADLINE_POLICY,
            "policies": {name: rs[0]["policies"] for name, rs in runs.items()},
            "engine": runs[next(iter(runs))][0]["engine"],
            "rounds": args.rounds or 1,
        },
        figures=figures,
        table_headers=[
            "workload",
            "policy",
            "LLM replica-s / always-on",
            f"TTFT <= {args.slo_s} s",
            "cold starts",
            "idle warm s",
            "warm hit rate",
            "requests",
            "errors",
        ],
        table_rows=rows,
        headline=headline,
        notes=[
            STATEMENT,
            "business_days scored on the held-out days only; a 'day' lasts day_s seconds of replay.",
            "Simulator error: mean absolute error over the policies of replica-s / always-on and of SLO "
            "attainment, simulated vs measured, over the same whole short replay.",
        ],
    )
    return h.write_results(results, args.out, started, machine)


def headline_of(figures: dict[str, Any]) -> Headline:
    measured = figures["measured"].get("business_days")
    if measured is None:
        return Headline(
            metric="LLM replica-seconds / always-on (business_days not replayed)",
            value=None,
            goal=0.4,
            better="lower",
            baseline="always-on (min_replicas 1), same replay",
        )
    spread = measured["spread"][HEADLINE_POLICY]
    error = figures["simulator_error"].get("business_days") or {}
    return Headline(
        metric=f"MEASURED LLM replica-seconds / always-on, business-days workload, held-out days, {HEADLINE_POLICY}",
        value=spread["replica_seconds_vs_always_on"]["median"],
        goal=0.4,
        better="lower",
        baseline="always-on (min_replicas 1), the same arrivals replayed at the same time",
        details={
            "slo_attainment": (spread["slo_attainment"] or {}).get("median"),
            "slo_attainment_goal": 0.99,
            "warm_hit_rate_held_out": (spread["warm_hit_rate"] or {}).get("median"),
            "simulator_replica_seconds_ratio_mae": error.get("replica_seconds_ratio_mae"),
            "simulator_slo_attainment_mae": error.get("slo_attainment_mae"),
        },
    )
