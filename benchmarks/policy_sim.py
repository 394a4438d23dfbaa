"""Simulate surge's own autoscaling policy objects (deployments.autoscaling) on a workload, for days.

The decision each tick is made by the very `SurgeAutoscalingPolicy` Serve's controller runs, given a
context built like Serve's `AutoscalingContext` (ongoing requests averaged over `look_back_period_s`,
queued requests, the replicas' waiting/running/TTFT p90 stats); around it, the rules of Serve's wrapper:
scale from zero at once (for queued work or a warmer's floor), otherwise `upscale_delay_s` /
`downscale_delay_s` / `downscale_to_zero_delay_s`, clamped to min/max replicas. Stages and requests are
modelled as in `benchmarks.autoscale_sim` (fixed slots per replica, a calibrated cold start and service
time), with one refinement: a request's wait is measured from its arrival to the moment its replica was
ready (not to the tick), so TTFT is not quantised by the step. The TTFT p90 the replicas report is the
replica-side one (from reaching the replica), as in `deployments.llm`: cold-start waits are not in it.

Time steps adapt: `dt_s` while requests are queued or in service, `idle_dt_s` (the control period while
idle) otherwise, always stopping at the next arrival. `freeze_learning_at_s`: from then on the learned
warmer's model is frozen (train on the first days, score on the rest) and warm hits are counted.
"""

from __future__ import annotations

import json
import math
import statistics
import tempfile
import time
from collections import deque
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from benchmarks import _harness as h
from benchmarks._headline import Headline
from benchmarks.autoscale_sim import Calibration
from benchmarks.elastic_workloads import DAY_S, MONDAY_EPOCH_S, BusinessDays, Workload, business_days, natural
from benchmarks.traces import DEFAULT_TRACE, TRACES_DIR, load_trace
from deployments.autoscaling import stats
from deployments.autoscaling.serve_policy import SurgeAutoscalingPolicy, load_view
from deployments.settings import AutoscalingSettings


@dataclass
class _Replica:
    ready_at: float
    busy: list[float] = field(default_factory=list)


@dataclass
class PolicyRun:
    replica_seconds: float = 0.0
    idle_warm_s: float = 0.0
    cold_starts: int = 0
    ttft_s: list[float] = field(default_factory=list)
    busy_starts_scored: int = 0
    warm_hits_scored: int = 0
    scored_ttft_s: list[float] = field(default_factory=list)
    scored_replica_seconds: float = 0.0
    # Per day of the scored span: replica-seconds and TTFTs, for the spread between days.
    day_replica_seconds: dict[int, float] = field(default_factory=dict)
    day_ttft_s: dict[int, list[float]] = field(default_factory=dict)

    def slo_share(self, slo_s: float, scored: bool = False) -> float:
        values = self.scored_ttft_s if scored else self.ttft_s
        return sum(t <= slo_s for t in values) / len(values) if values else 1.0

    def summary(self, slo_s: float) -> dict[str, Any]:
        ordered = sorted(self.ttft_s)
        p = (lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]) if ordered else (lambda q: 0.0)
        return {
            "replica_seconds": round(self.replica_seconds, 1),
            "idle_warm_s": round(self.idle_warm_s, 1),
            "cold_starts": self.cold_starts,
            "requests": len(self.ttft_s),
            "ttft_p50_s": round(p(0.5), 3),
            "ttft_p99_s": round(p(0.99), 3),
            "slo_share": round(self.slo_share(slo_s), 4),
            "scored": {
                "requests": len(self.scored_ttft_s),
                "replica_seconds": round(self.scored_replica_seconds, 1),
                "slo_share": round(self.slo_share(slo_s, scored=True), 4),
                "warm_hit_rate": round(self.warm_hits_scored / self.busy_starts_scored, 4)
                if self.busy_starts_scored
                else None,
                "busy_periods": self.busy_starts_scored,
            },
        }


def build_policy(settings: AutoscalingSettings, slots: int, state_dir: str) -> SurgeAutoscalingPolicy:
    if settings.policy is None:
        return SurgeAutoscalingPolicy(
            {"kind": "queue_length", "target_ongoing_requests": settings.target_ongoing_requests}
        )
    kwargs = dict(settings.to_serve(slots)["policy"]["policy_kwargs"])
    kwargs.update(state_dir=state_dir, save_every_s=1e12)
    return SurgeAutoscalingPolicy(**kwargs)


def simulate_policy(
    workload: Workload,
    settings: AutoscalingSettings,
    calibration: Calibration,
    *,
    dt_s: float = 0.5,
    idle_dt_s: float = 2.0,
    freeze_learning_at_s: float | None = None,
    clock_scale: float = 1.0,
    policy_kwargs: dict[str, Any] | None = None,
) -> PolicyRun:
    """`clock_scale`: the policy's clock runs this many times faster than the simulated time (a replay that
    compresses a day into minutes gives its policies the same compressed clock; 1.0: real time).
    `policy_kwargs`: the policy's kwargs as a replay handed them to Serve (default: from `settings`)."""
    with tempfile.TemporaryDirectory() as state_dir:
        if policy_kwargs is not None:
            policy = SurgeAutoscalingPolicy(**{**policy_kwargs, "state_dir": state_dir, "save_every_s": 1e12})
        else:
            policy = build_policy(settings, calibration.slots, state_dir)
        return _run(
            workload, settings, calibration, policy, dt_s, idle_dt_s, freeze_learning_at_s, clock_scale
        )


def _run(
    workload: Workload,
    s: AutoscalingSettings,
    cal: Calibration,
    policy: SurgeAutoscalingPolicy,
    dt_s: float,
    idle_dt_s: float,
    freeze_at: float | None,
    clock_scale: float = 1.0,
) -> PolicyRun:
    run = PolicyRun()
    lo, hi = s.effective_min_replicas, s.max_replicas
    to_zero = s.downscale_delay_s if s.downscale_to_zero_delay_s is None else s.downscale_to_zero_delay_s
    replicas = [_Replica(ready_at=0.0) for _ in range(lo)]
    pending = deque(workload.arrivals)
    queue: deque[tuple[float, int]] = deque()
    samples: deque[tuple[float, int]] = deque()
    recent_ttft: deque[tuple[float, float]] = deque()
    up_since: float | None = None
    down_since: float | None = None
    next_tick = 0.0
    was_busy = False
    frozen_model = None
    now = 0.0
    while now <= workload.end_s:
        scored = freeze_at is not None and now >= freeze_at
        while pending and pending[0][0] <= now:
            queue.append(pending.popleft())
        for r in replicas:
            r.busy = [f for f in r.busy if f > now]
        busy_now = bool(queue) or any(r.busy for r in replicas)
        if busy_now and not was_busy and scored:
            run.busy_starts_scored += 1
            run.warm_hits_scored += any(r.ready_at <= (queue[0][0] if queue else now) for r in replicas)
        was_busy = busy_now
        for r in replicas:
            while queue and r.ready_at <= now and len(r.busy) < cal.slots:
                arrived, tokens = queue.popleft()
                started = max(arrived, r.ready_at)
                ttft = started - arrived + cal.ttft_warm_s
                run.ttft_s.append(ttft)
                if scored:
                    run.scored_ttft_s.append(ttft)
                    run.day_ttft_s.setdefault(int(now * clock_scale // DAY_S), []).append(ttft)
                # What the replica reports: from reaching it (not from the handle's queue or a cold start).
                recent_ttft.append((now, cal.ttft_warm_s + max(0.0, now - started)))
                r.busy.append(started + cal.service_s(tokens))
        ongoing = len(queue) + sum(len(r.busy) for r in replicas)
        samples.append((now, ongoing))
        while samples and samples[0][0] < now - s.look_back_period_s:
            samples.popleft()
        while recent_ttft and recent_ttft[0][0] < now - 60.0:
            recent_ttft.popleft()
        if now >= next_tick:
            next_tick = now + s.metrics_interval_s
            ttfts = sorted(t for _, t in recent_ttft)
            running = sum(len(r.busy) for r in replicas)
            metrics: dict[str, dict[Any, float]] = {
                stats.RUNNING: {"r": float(running)} if replicas else {},
                stats.WAITING: {},
            }
            if ttfts and replicas:
                metrics[stats.TTFT_P90] = {"r": ttfts[max(0, math.ceil(0.9 * len(ttfts)) - 1)]}
            ctx = SimpleNamespace(
                current_time=MONDAY_EPOCH_S + now * clock_scale,
                total_num_requests=sum(n for _, n in samples) / len(samples),
                total_queued_requests=float(len(queue)),
                # As Serve's: RUNNING replicas only (the policy times its cold starts on it).
                current_num_replicas=sum(r.ready_at <= now for r in replicas),
                aggregated_metrics=metrics,
                policy_state={},
                app_name="sim",
                deployment_name="LLMServer",
            )
            if scored:
                # Held-out days: what was learned stays fixed; only "busy now / since when idle" follows.
                view = load_view(ctx, ctx.current_time)
                if frozen_model is None:
                    frozen_model = policy.models.get("sim__LLMServer")
                if frozen_model is not None and (view.ongoing > 0) != frozen_model.busy:
                    frozen_model = replace(
                        frozen_model,
                        busy=view.ongoing > 0,
                        last_busy_end=frozen_model.last_busy_end if view.ongoing > 0 else view.now,
                    )
                desired = policy.decide(view, frozen_model, key="sim__LLMServer")
            else:
                desired = policy(ctx)[0]
            want = min(hi, max(lo, math.ceil(desired - 1e-9)))
            current = len(replicas)
            if current == 0 and (want > 0 or queue):
                for _ in range(max(1, want)):
                    replicas.append(_Replica(ready_at=now + cal.cold_start_s))
                run.cold_starts += 1
                up_since = down_since = None
            elif want > current:
                down_since = None
                up_since = now if up_since is None else up_since
                if now - up_since >= s.upscale_delay_s:
                    replicas += [_Replica(ready_at=now + cal.cold_start_s) for _ in range(want - current)]
                    up_since = None
            elif want < current:
                up_since = None
                down_since = now if down_since is None else down_since
                delay = to_zero if current == 1 else s.downscale_delay_s
                idle = [r for r in replicas if not r.busy]
                if now - down_since >= delay and idle:
                    replicas.remove(idle[-1])
                    down_since = None
            else:
                up_since = down_since = None
        active = bool(queue) or any(r.busy for r in replicas) or any(r.ready_at > now for r in replicas)
        step = dt_s if active else idle_dt_s
        if pending:
            step = min(step, max(pending[0][0] - now, 1e-3))
        run.replica_seconds += len(replicas) * step
        run.idle_warm_s += sum(1 for r in replicas if not r.busy and r.ready_at <= now) * step
        if scored:
            run.scored_replica_seconds += len(replicas) * step
            day = int(now * clock_scale // DAY_S)
            run.day_replica_seconds[day] = run.day_replica_seconds.get(day, 0.0) + len(replicas) * step
        now += step
    return run


def day_spread(run: PolicyRun, always_on: PolicyRun, slo_s: float) -> dict[str, Any]:
    """Each scored day's replica-seconds / always-on and SLO share, with their spread (min, mean, max)."""
    days = sorted(run.day_replica_seconds)
    ratios = [run.day_replica_seconds[d] / always_on.day_replica_seconds[d] for d in days]
    shares = [
        sum(t <= slo_s for t in run.day_ttft_s[d]) / len(run.day_ttft_s[d])
        for d in days
        if run.day_ttft_s.get(d)
    ]
    return {
        "days": days,
        "replica_seconds_vs_always_on": spread(ratios) if ratios else None,
        "slo_share": spread(shares) if shares else None,
    }


def spread(values: list[float]) -> dict[str, float]:
    return {
        "mean": round(statistics.fmean(values), 4),
        "min": round(min(values), 4),
        "max": round(max(values), 4),
    }


# ------------------------------------------------------------------------------------------ comparison

NAME = "policy_sim"
CODE_TRACE = TRACES_DIR / "AzureLLMInferenceTrace_code.csv"
CALIBRATION_FILE = h.REPO_ROOT / "benchmarks" / "measured" / "trace_replay.json"
CALIBRATION_SOURCE = "benchmarks/measured/trace_replay.json (figures.simulated.model.calibration)"
BASE = {"max_replicas": 2, "upscale_delay_s": 2, "downscale_delay_s": 60, "look_back_period_s": 10}


def policies(
    workload: Workload, ttft_slo_s: float, open_h: float, close_h: float
) -> dict[str, AutoscalingSettings]:
    """The policies compared, declared before any run (delays as in the serve config, to-zero 60 s)."""
    slo = {"replica_policy": "slo", "ttft_slo_s": ttft_slo_s}
    window = {
        "days": ["mon", "tue", "wed", "thu", "fri"],
        "start": f"{int(open_h):02d}:00",
        "end": f"{int(close_h):02d}:00",
    }
    learned = {"period_s": 86_400.0, "slots": 24, "slot_min_periods": 3, "lead_s": 60.0}
    zero = {**BASE, "min_replicas": 0, "downscale_to_zero_delay_s": 60}
    return {
        "always-on": AutoscalingSettings(**{**BASE, "min_replicas": 1}),
        "serve-default": AutoscalingSettings(**zero, target_ongoing_requests=8),
        "surge-slo": AutoscalingSettings(**zero, policy=slo),
        "slo+scheduled": AutoscalingSettings(
            **zero, policy={**slo, "schedule": {"windows": [window], "lead_s": 120}}
        ),
        "slo+learned": AutoscalingSettings(**zero, policy={**slo, "learned": learned}),
        "keep-warm-10min": AutoscalingSettings(
            **{**zero, "downscale_to_zero_delay_s": 600}, target_ongoing_requests=8
        ),
    }


def main(argv: list[str] | None = None) -> Path:
    parser = h.common_parser(__doc__ or NAME)
    parser.add_argument("--days", type=int, default=None, help="business-days workload: days (14; quick 4)")
    parser.add_argument("--train-days", type=int, default=None, help="days that train the learned warmer")
    parser.add_argument("--keep-every", type=int, default=None, help="business days: keep every n-th request")
    parser.add_argument("--slo-s", type=float, default=2.0, help="time-to-first-token SLO")
    args = parser.parse_args(argv)
    started = time.time()
    days = args.days or (4 if args.quick else 14)
    plan = BusinessDays(
        days=days,
        train_days=args.train_days or days // 2,
        keep_every=args.keep_every or (80 if args.quick else 40),
    )
    calibration = Calibration(
        **json.loads(CALIBRATION_FILE.read_text())["figures"]["simulated"]["model"]["calibration"]
    )
    trace = load_trace(DEFAULT_TRACE)
    workloads = [
        business_days(trace, plan),
        natural(trace, compress=1.0, keep_every=40 if args.quick else 20),
        natural(load_trace(CODE_TRACE), compress=1.0, keep_every=20 if args.quick else 10, name="code"),
    ]
    figures: dict[str, Any] = {}
    rows: list[list[Any]] = []
    for workload in workloads:
        compared = policies(workload, args.slo_s, plan.open_h, plan.close_h)
        results = {
            name: simulate_policy(workload, settings, calibration, freeze_learning_at_s=workload.train_end_s)
            for name, settings in compared.items()
        }
        always_on = results["always-on"]
        figures[workload.name] = {"workload": workload.describe(), "policies": {}}
        for name, run in results.items():
            scored = workload.train_end_s is not None
            base = always_on.scored_replica_seconds if scored else always_on.replica_seconds
            mine = run.scored_replica_seconds if scored else run.replica_seconds
            summary = {**run.summary(args.slo_s), "replica_seconds_vs_always_on": round(mine / base, 4)}
            if scored:
                summary["per_scored_day"] = day_spread(run, always_on, args.slo_s)
            figures[workload.name]["policies"][name] = summary
            per_day = summary.get("per_scored_day") or {}
            ratio_spread = per_day.get("replica_seconds_vs_always_on")
            slo_spread = per_day.get("slo_share")
            rows.append(
                [
                    workload.name,
                    name,
                    summary["replica_seconds_vs_always_on"],
                    f"{ratio_spread['min']}-{ratio_spread['max']}" if ratio_spread else "",
                    round(run.slo_share(args.slo_s, scored=scored), 4),
                    f"{slo_spread['min']}-{slo_spread['max']}" if slo_spread else "",
                    run.cold_starts,
                    round(run.idle_warm_s),
                    summary["scored"]["warm_hit_rate"],
                ]
            )
    best = figures["business_days"]["policies"]["slo+learned"]
    headline = Headline(
        metric="SIMULATED LLM replica-seconds / always-on, business-days workload, held-out days, slo+learned",
        value=best["replica_seconds_vs_always_on"],
        goal=0.4,
        better="lower",
        baseline="always-on (min_replicas 1), same simulated workload",
        details={
            "slo_attainment": best["scored"]["slo_share"],
            "slo_attainment_goal": 0.99,
            "simulated": True,
        },
    )
    results = h.Results(
        name=NAME,
        description="SIMULATED (not measured): surge's autoscaling policy objects driven through a calibrated "
        f"stage model on workloads from the Azure arrivals; TTFT SLO {args.slo_s} s.",
        parameters={
            "calibration": asdict(calibration),
            "calibration_source": CALIBRATION_SOURCE,
            "slo_s": args.slo_s,
            "policies": {
                n: s.model_dump(exclude_none=True)
                for n, s in policies(workloads[0], args.slo_s, 9, 17).items()
            },
            "quick": args.quick,
        },
        figures=figures,
        table_headers=[
            "workload",
            "policy",
            "replica-s / always-on",
            "per day (min-max)",
            "SLO share",
            "per day (min-max)",
            "cold starts (all days)",
            "idle warm s (all days)",
            "warm hit rate (held-out)",
        ],
        table_rows=rows,
        headline=headline,
        notes=[
            "business_days: ratios and SLO share on the held-out days only (learned warmer frozen after training).",
            "Calibration comes from an earlier measured replay, not from this run: there is no measured replay here.",
        ],
    )
    return h.write_results(results, args.out, started)


if __name__ == "__main__":
    main()
