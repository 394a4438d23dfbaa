"""The class Serve's controller runs as `autoscaling_config.policy` (Ray Serve 2.60's custom policy API).

Serve instantiates `SurgeAutoscalingPolicy(**policy_kwargs)` once per deployment config and calls it every
control-loop tick with an `AutoscalingContext`; its wrapper then applies min/max replicas, the up/down
delays and the scale-from-zero fast path. So this is not a loop of our own fighting Serve's: it only says
how many replicas the load asks for (a replica policy) and the floor the warmers hold (scheduled windows,
learned arrivals), and returns the larger.

The learned warmer learns from the traffic the stage receives from the gateway (busy periods seen in Serve's
own request counts and in the requests-started counter the LLM replicas report), per deployment name (so each
model version learns on its own), and persists its model as JSON under `state_dir` (the cache dir locally, a
PVC on a cluster) at most every `save_every_s`, so a controller restart or a redeploy keeps what was learned.
Its hit rate (arrivals that found a replica running) is exported as the gauge
`surge_autoscaling_warm_hit_ratio`.

The warmers' lead follows the cold start measured here (`deployments.autoscaling.cold_start`): every
scale-from-zero start is timed per deployment, and each warmer pre-warms at least `cold_start_lead.factor`
x its p90 ahead. The measured starts persist next to the arrivals model (`<key>.cold_starts.json`, written
on every new start, which is rare), so that after a controller restart or a redeploy the first pre-warm
already leads by what the stage's starts took rather than by the configured guess (the guess of 18 s against
starts of ~25 s cost the learned warmer 12 % of its SLO in the replay of 2026-12-02).

Serve does not call the policy while a deployment has no running replica and requests wait: its cold-start
fast path starts one at once. So the arrival that woke a stage at zero, and the start it waited for, are
only seen at the first tick with a running replica the policy had not asked for; they are dated to the last
tick seen at zero (the
measured replay of 2026-12-02 showed why: without this the learned warmer dated every wake-up to the moment
its replica ran, 2-3 workload hours late, never learned the 09:00 slot, measured no start to lead by, and
counted every arrival as a warm hit).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from deployments.autoscaling import stats
from deployments.autoscaling.cold_start import ColdStartLead, ColdStarts
from deployments.autoscaling.policies import LoadView, ReplicaPolicy, build_replica_policy
from deployments.autoscaling.warmers import ArrivalModel, LearnedWarmer, Warmer, build_warmer

logger = logging.getLogger("ray.serve")
T = TypeVar("T")


def load_view(ctx: Any, now: float) -> LoadView:
    """The tick's numbers from an `AutoscalingContext` (built-ins plus what replicas report)."""
    metrics: Mapping[str, Mapping[Any, float]] = ctx.aggregated_metrics or {}
    queued = float(ctx.total_queued_requests or 0.0)
    running = sum(metrics.get(stats.RUNNING, {}).values())
    waiting = queued + sum(metrics.get(stats.WAITING, {}).values())
    ttfts = list(metrics.get(stats.TTFT_P90, {}).values())
    started = metrics.get(stats.STARTED)
    ongoing = float(ctx.total_num_requests or 0.0)
    if not metrics.get(stats.RUNNING):
        running = max(0.0, ongoing - queued)
    return LoadView(
        now=now,
        current_replicas=int(ctx.current_num_replicas),
        ongoing=ongoing,
        waiting=waiting,
        running=running,
        ttft_p90_s=max(ttfts) if ttfts else None,
        started=sum(started.values()) if started else None,
    )


class SurgeAutoscalingPolicy:
    """`policy_kwargs`: `replica_policy` ({"kind": ..., params}), `warmers` ([{"kind": ..., params}]),
    `state_dir` (where learned models persist; None: `$SURGE_CACHE_DIR/autoscaling`), `save_every_s`,
    `cold_start_lead` ({"factor": ..., "max_lead_s": ...}: the warmers' lead from measured cold starts)."""

    def __init__(
        self,
        replica_policy: Mapping[str, Any] | None = None,
        warmers: Sequence[Mapping[str, Any]] = (),
        state_dir: str | None = None,
        save_every_s: float = 30.0,
        cold_start_lead: Mapping[str, Any] | None = None,
    ) -> None:
        self.replica_policy: ReplicaPolicy = build_replica_policy(replica_policy or {})
        self.warmers: tuple[Warmer, ...] = tuple(build_warmer(w) for w in warmers)
        self.cold_start_lead = ColdStartLead(**(cold_start_lead or {}))
        self._cold_starts: dict[str, ColdStarts] = {}
        # (time, running replicas, replicas asked for) at the last call, per deployment
        self._last_tick: dict[str, tuple[float, int, float]] = {}
        # The replicas' requests-started counters (summed) at the last call, per deployment
        self._last_started: dict[str, float | None] = {}
        # The chart mounts a claim on the head (where Serve's controller runs the policies) and names it in
        # SURGE_AUTOSCALING_STATE_DIR; locally the state sits in the cache dir.
        default_dir = Path(
            os.environ.get("SURGE_AUTOSCALING_STATE_DIR")
            or Path(os.environ.get("SURGE_CACHE_DIR", "~/.cache/surge")) / "autoscaling"
        ).expanduser()
        self.state_dir = Path(state_dir).expanduser() if state_dir else default_dir
        self.save_every_s = save_every_s
        self._models: dict[str, ArrivalModel] = {}
        self._saved_at: dict[str, float] = {}
        self._gauge: Any = None

    def __call__(self, ctx: Any) -> tuple[float, dict[str, Any]]:
        now = float(ctx.current_time or time.time())
        view = load_view(ctx, now)
        key = f"{ctx.app_name or 'default'}__{ctx.deployment_name}"
        if key not in self._cold_starts:
            self._cold_starts[key] = self._load_cold_starts(key)
        woke_at = self._woken_by_serve_at(key, view)
        arrived = self._arrived_since_last_tick(key, view)
        model = self._learn(key, view, woke_at, busy=view.ongoing > 0 or arrived)
        floor = self._floor(key, now, model)
        demand = self.replica_policy.replicas(view)
        if arrived and view.current_replicas > 0:
            # Requests are arriving even if none was in flight when the replicas were sampled: not idle.
            demand = max(demand, 1.0)
        decision = max(demand, float(floor))
        starts = self._cold_starts[key]
        if woke_at is not None and starts.asking_since is None:
            starts = replace(starts, asking_since=woke_at)
        observed = self.cold_start_lead.observe(starts, now, view.current_replicas, decision)
        self._cold_starts[key] = observed
        if observed.samples_s != starts.samples_s:
            self._write(self._cold_starts_path(key), {"samples_s": list(observed.samples_s)})
        self._last_tick[key] = (now, view.current_replicas, decision)
        state = dict(ctx.policy_state or {})
        state.update({"surge_demand": demand, "surge_floor": floor})
        return decision, state

    @property
    def models(self) -> dict[str, ArrivalModel]:
        """What the learned warmer knows now, per `<app>__<deployment>` (read-only view for reports)."""
        return dict(self._models)

    @property
    def cold_starts(self) -> dict[str, ColdStarts]:
        """The scale-from-zero starts measured, per `<app>__<deployment>` (read-only view for reports)."""
        return dict(self._cold_starts)

    def decide(self, view: LoadView, model: ArrivalModel | None = None, key: str | None = None) -> float:
        """The decision without Serve (benchmarks and the simulator use the same values); `key` names the
        deployment whose measured cold starts set the warmers' lead (None: the configured leads)."""
        floor = self._floor(key, view.now, model)
        return max(self.replica_policy.replicas(view), float(floor))

    def _floor(self, key: str | None, now: float, model: ArrivalModel | None) -> int:
        """The warmers' floor, each pre-warming at least the lead the measured cold starts ask for."""
        starts = self._cold_starts.get(key or "", ColdStarts())
        lead = self.cold_start_lead.lead_s(0.0, starts)
        return max((w.with_min_lead(lead).floor(now, model) for w in self.warmers), default=0)

    def _arrived_since_last_tick(self, key: str, view: LoadView) -> bool:
        """Whether the replicas' requests-started counters moved since the last tick.

        Why: Serve samples in-flight requests every metrics interval and averages them over the look-back
        window, so requests shorter than the interval can read as 0 ongoing while they keep arriving. In the
        replay of 2026-12-02 (requests every 0.3-1.4 s, each ~0.1 s) the SLO policy and Serve's default went
        to zero with "ongoing 0.00" in the middle of steady traffic and every request of the next cold start
        (7 s) missed the SLO. The counters' window average keeps moving for one look-back window after the
        last arrival, so a stage is held for that window, and Serve's own to-zero delay counts from there.
        """
        before = self._last_started.get(key)
        self._last_started[key] = view.started
        return view.started is not None and before is not None and view.started != before

    def _woken_by_serve_at(self, key: str, view: LoadView) -> float | None:
        """When the last tick saw no running replica and asked for none, and this one sees one running, Serve's
        fast path started it for requests that arrived after that tick (they may be done by now: a start is
        longer than their service): that tick's time, else None."""
        last = self._last_tick.get(key)
        if last is None or last[1] > 0 or last[2] > 0 or view.current_replicas == 0:
            return None
        return last[0]

    def _learn(self, key: str, view: LoadView, woke_at: float | None, busy: bool) -> ArrivalModel | None:
        """Fold this tick into the learned warmer's model. `busy`: requests in flight when sampled, or started
        since the last tick (the counter sees the requests shorter than Serve's sampling interval, which the
        sampled count misses: the model would not count their arrivals, nor their warm hits)."""
        learned = [w for w in self.warmers if isinstance(w, LearnedWarmer)]
        if not learned:
            return None
        if key not in self._models:
            self._models[key] = self._load(key)
        before = self._models[key]
        model = before
        if woke_at is not None and not before.busy:
            # The arrival that woke the stage at zero, at the last tick seen at zero; it found no replica.
            model = learned[0].observe(before, woke_at, busy=True, warm=False)
        model = learned[0].observe(model, view.now, busy=busy, warm=view.current_replicas > 0)
        self._models[key] = model
        # Every decision, not only on a new arrival: Ray exports a gauge's value once and then drops it.
        self._report(key, model)
        if view.now - self._saved_at.get(key, 0.0) >= self.save_every_s and model is not before:
            self._save(key, model, view.now)
        return model

    def _path(self, key: str) -> Path:
        return self.state_dir / f"{key}.json"

    def _load(self, key: str) -> ArrivalModel:
        return self._read(self._path(key), ArrivalModel.from_json, ArrivalModel())

    def _save(self, key: str, model: ArrivalModel, now: float) -> None:
        self._saved_at[key] = now
        self._write(self._path(key), model.to_json())

    def _cold_starts_path(self, key: str) -> Path:
        return self.state_dir / f"{key}.cold_starts.json"

    def _load_cold_starts(self, key: str) -> ColdStarts:
        """The starts a previous controller measured (the last `max_samples`, each within 0..max_lead_s)."""
        lead = self.cold_start_lead

        def parse(data: Any) -> ColdStarts:
            samples = [float(s) for s in data["samples_s"]]
            kept = tuple(s for s in samples if 0 <= s <= lead.max_lead_s)
            return ColdStarts(samples_s=kept[-lead.max_samples :])

        return self._read(self._cold_starts_path(key), parse, ColdStarts())

    def _read(self, path: Path, parse: Callable[[Any], T], empty: T) -> T:
        """`parse` of the JSON at `path`; `empty` when there is none, or when it is corrupt or foreign (which
        costs what was learned, never the autoscaler)."""
        try:
            return parse(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            return empty
        except (OSError, ValueError, TypeError, KeyError) as error:
            logger.warning("surge: ignoring unreadable %s: %s", path, error)
            return empty

    def _write(self, path: Path, content: Any) -> None:
        """Atomically (write, then rename); a full or read-only disk costs the memory, never the autoscaler."""
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(content), encoding="utf-8")
            tmp.replace(path)
        except OSError as error:
            logger.warning("surge: could not persist %s: %s", path, error)

    def _report(self, key: str, model: ArrivalModel) -> None:
        if model.hit_rate is None:
            return
        try:
            if self._gauge is None:
                from ray.util.metrics import Gauge

                self._gauge = Gauge(
                    "surge_autoscaling_warm_hit_ratio",
                    description="Share of busy periods whose first request found a replica running "
                    "(learned warmer).",
                    tag_keys=("deployment",),
                )
            self._gauge.set(model.hit_rate, tags={"deployment": key})
        except Exception as error:  # metrics are best effort in the controller
            logger.debug("surge: hit-rate gauge unavailable: %s", error)
