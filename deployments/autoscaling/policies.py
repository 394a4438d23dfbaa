"""Replica policies: how many replicas the current load asks for. One interface, a registry.

Each policy is a small frozen value: `replicas(view)` maps one :class:`LoadView` (what Serve's
`AutoscalingContext` and the replicas' `record_autoscaling_stats` say now) to a replica count (a float; Serve
rounds up). Serve's own wrapper then applies `min_replicas`/`max_replicas`, the up/down delays and the
scale-from-zero fast path, so policies never sleep or count ticks themselves.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class LoadView:
    """One autoscaling tick's view of a deployment.

    `waiting`: requests not yet started (queued at handles plus those a replica holds before its first token);
    `running`: requests generating; `ttft_p90_s`: the worst replica's rolling TTFT p90 (None: no sample yet);
    `started`: the replicas' counters of requests started, summed (None: not reported), whose change between
    ticks tells of an arrival that the in-flight counts, sampled every metrics interval, can miss.
    """

    now: float
    current_replicas: int
    ongoing: float
    waiting: float = 0.0
    running: float = 0.0
    ttft_p90_s: float | None = None
    started: float | None = None


class ReplicaPolicy(Protocol):
    """What every replica policy offers: the replica count the load asks for (Serve rounds up)."""

    def replicas(self, view: LoadView) -> float: ...


@dataclass(frozen=True)
class QueueLengthPolicy:
    """Serve's default rule: `ongoing / target_ongoing_requests`.

    E.g. 10 ongoing requests, target 4 -> 2.5 -> Serve makes it 3 replicas.
    """

    target_ongoing_requests: float = 2.0

    def __post_init__(self) -> None:
        if self.target_ongoing_requests <= 0:
            raise ValueError("target_ongoing_requests must be > 0")

    def replicas(self, view: LoadView) -> float:
        return view.ongoing / self.target_ongoing_requests


@dataclass(frozen=True)
class SloPolicy:
    """Scale an LLM on its engine slots and its time to first token, with a dead band (hysteresis).

    `capacity = max_num_seqs * target_utilization` requests per replica; `need = (running + waiting) / capacity`.
      - TTFT p90 above `ttft_slo_s`: `max(need, current + 1)` (the SLO is being missed: add a replica now);
      - need above current: `need` (more work than slots);
      - need below `current * scale_down_below` and TTFT p90 under `ttft_slo_s * scale_down_below` (or no
        sample): `need` (clearly idle: shrink, to 0 when nothing is left);
      - otherwise: `current` (the dead band: no flapping between two counts).
    Worked example: max_num_seqs 16, utilization 0.75 -> 12 per replica. 2 replicas, 30 running+waiting ->
    2.5 -> 3. 2 replicas, 14 requests, p90 1.2 s against a 2 s SLO -> 1.17: inside the band, stay at 2.
    1 replica, 8 requests, p90 2.6 s -> max(0.67, 2) = 2. 2 replicas, 4 requests, p90 0.4 s -> 0.33 -> 1.
    """

    ttft_slo_s: float = 2.0
    max_num_seqs: int = 16
    target_utilization: float = 0.75
    scale_down_below: float = 0.5

    def __post_init__(self) -> None:
        if self.ttft_slo_s <= 0 or self.max_num_seqs < 1:
            raise ValueError("ttft_slo_s must be > 0 and max_num_seqs >= 1")
        if not (0 < self.target_utilization <= 1 and 0 < self.scale_down_below < 1):
            raise ValueError("target_utilization must be in (0, 1] and scale_down_below in (0, 1)")

    def replicas(self, view: LoadView) -> float:
        demand = max(view.running + view.waiting, view.ongoing)
        need = demand / (self.max_num_seqs * self.target_utilization)
        current = view.current_replicas
        ttft = view.ttft_p90_s
        if current > 0 and demand > 0 and ttft is not None and ttft > self.ttft_slo_s:
            return max(need, current + 1)
        if need > current:
            return need
        calm = ttft is None or ttft < self.ttft_slo_s * self.scale_down_below or demand == 0
        if need <= current * self.scale_down_below and calm:
            return math.ceil(need) if demand > 0 else 0.0
        return float(current)


def _queue_length(params: Mapping[str, Any]) -> ReplicaPolicy:
    return QueueLengthPolicy(**params)


def _slo(params: Mapping[str, Any]) -> ReplicaPolicy:
    return SloPolicy(**params)


REPLICA_POLICIES: dict[str, Callable[[Mapping[str, Any]], ReplicaPolicy]] = {
    "queue_length": _queue_length,
    "slo": _slo,
}


def build_replica_policy(spec: Mapping[str, Any]) -> ReplicaPolicy:
    """`{"kind": "slo", "ttft_slo_s": 2, ...}` -> the policy; an unknown kind names the known ones."""
    params = dict(spec)
    kind = params.pop("kind", "queue_length")
    try:
        factory = REPLICA_POLICIES[kind]
    except KeyError:
        raise ValueError(f"unknown replica policy {kind!r}; known: {sorted(REPLICA_POLICIES)}") from None
    return factory(params)
