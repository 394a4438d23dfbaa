"""A fast simulator of Serve's request-based autoscaling for one stage, driven by a replay schedule.

It extends a measured replay to hours of trace. It is calibrated with figures measured on the real app
(cold start seconds, service seconds per request and per output token, requests one replica serves at
once) and models the policy surge configures (Serve's `autoscaling_config`):

    every `metrics_interval_s`: ongoing = requests queued + in service, averaged over `look_back_period_s`
    desired = clamp(ceil(ongoing / target_ongoing_requests), min_replicas, max_replicas)
    from zero with work queued: one replica at once (Serve does not wait for upscale_delay_s)
    scale up when desired > current for `upscale_delay_s`; down when desired < current for
    `downscale_delay_s` (`downscale_to_zero_delay_s` for the last replica)

A replica bills from the moment it is requested (starting) until it is removed. Worked example: one
request at t=0 asking one token, cold start 10 s, warm TTFT 2 s, to-zero delay 4 s -> the replica starts
at 0, is ready at 10, answers at 12 (TTFT 12 s), is idle from 12, the look-back average drops to zero by
about 14 and the replica is removed about 4 s later: about 18 replica-seconds.

Simplifications (say so when quoting simulated numbers): fixed-slot concurrency per replica (continuous
batching as `slots` parallel lanes, each request costing its own service time), no request routing
imbalance, time stepped at `dt_s`.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

from deployments.settings import AutoscalingSettings


@dataclass(frozen=True)
class Calibration:
    """Measured figures the simulator is driven by (seconds)."""

    cold_start_s: float
    ttft_warm_s: float
    per_token_s: float
    slots: int = 8

    def service_s(self, max_tokens: int) -> float:
        return self.ttft_warm_s + self.per_token_s * max(0, max_tokens - 1)


@dataclass
class _Replica:
    ready_at: float
    busy: list[float] = field(default_factory=list)  # finish times of requests in service


@dataclass
class SimResult:
    replica_seconds: float
    cold_starts: int
    ttft_s: list[float]
    requests: int
    timeline: tuple[list[float], list[int]]

    def slo_share(self, slo_s: float) -> float:
        return sum(t <= slo_s for t in self.ttft_s) / len(self.ttft_s) if self.ttft_s else 1.0

    def summary(self, slo_s: float) -> dict[str, Any]:
        ordered = sorted(self.ttft_s)
        pick = (
            (lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]) if ordered else (lambda q: 0.0)
        )
        return {
            "replica_seconds": round(self.replica_seconds, 1),
            "cold_starts": self.cold_starts,
            "requests": self.requests,
            "ttft_p50_s": round(pick(0.5), 3),
            "ttft_p99_s": round(pick(0.99), 3),
            "slo_share": round(self.slo_share(slo_s), 4),
        }


def simulate(
    arrivals: list[tuple[float, int]],
    policy: AutoscalingSettings,
    calibration: Calibration,
    end_s: float,
    dt_s: float = 0.1,
) -> SimResult:
    """Run `arrivals` ((t_s, max_tokens), sorted) through one stage under `policy` until `end_s`.

    `policy` is the stage's own `AutoscalingSettings`, so the simulator models exactly what surge deploys.
    """
    min_replicas = policy.effective_min_replicas
    to_zero_delay_s = (
        policy.downscale_delay_s
        if policy.downscale_to_zero_delay_s is None
        else policy.downscale_to_zero_delay_s
    )
    queue: deque[tuple[float, int]] = deque()
    replicas: list[_Replica] = [_Replica(ready_at=0.0) for _ in range(min_replicas)]
    pending = deque(arrivals)
    samples: deque[tuple[float, int]] = deque()
    ttft: list[float] = []
    replica_seconds = 0.0
    cold_starts = 0
    above_since: float | None = None
    below_since: float | None = None
    next_decision = 0.0
    times: list[float] = []
    counts: list[int] = []
    steps = math.ceil(end_s / dt_s)
    for step in range(steps + 1):
        now = step * dt_s
        while pending and pending[0][0] <= now:
            queue.append(pending.popleft())
        for replica in replicas:
            replica.busy = [f for f in replica.busy if f > now]
        for replica in replicas:
            while queue and replica.ready_at <= now and len(replica.busy) < calibration.slots:
                arrived, tokens = queue.popleft()
                ttft.append(now - arrived + calibration.ttft_warm_s)
                replica.busy.append(now + calibration.service_s(tokens))
        ongoing = len(queue) + sum(len(r.busy) for r in replicas)
        samples.append((now, ongoing))
        while samples and samples[0][0] < now - policy.look_back_period_s:
            samples.popleft()
        if not replicas and queue and policy.max_replicas > 0:
            replicas.append(_Replica(ready_at=now + calibration.cold_start_s))
            cold_starts += 1
            above_since = below_since = None
        elif now >= next_decision:
            next_decision = now + policy.metrics_interval_s
            average = sum(n for _, n in samples) / len(samples)
            desired = min(
                policy.max_replicas,
                max(min_replicas, math.ceil(average / policy.target_ongoing_requests)),
            )
            current = len(replicas)
            if desired > current:
                below_since = None
                above_since = now if above_since is None else above_since
                if now - above_since >= policy.upscale_delay_s:
                    replicas.append(_Replica(ready_at=now + calibration.cold_start_s))
                    cold_starts += current == 0
                    above_since = None
            elif desired < current:
                above_since = None
                below_since = now if below_since is None else below_since
                delay = to_zero_delay_s if current == 1 else policy.downscale_delay_s
                idle = [r for r in replicas if not r.busy]
                if now - below_since >= delay and idle:
                    replicas.remove(idle[-1])
                    below_since = None
            else:
                above_since = below_since = None
        replica_seconds += len(replicas) * dt_s
        times.append(now)
        counts.append(len(replicas))
    return SimResult(replica_seconds, cold_starts, ttft, len(arrivals), (times, counts))


def describe(policy: AutoscalingSettings, calibration: Calibration) -> dict[str, Any]:
    return {"policy": policy.model_dump(), "calibration": asdict(calibration)}
