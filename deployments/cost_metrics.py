"""Cost metrics: what each replica costs while it lives, and what each request is charged, per tenant.

Counters (Ray Serve's metrics API, exported by Ray's Prometheus endpoint; charted by the dashboards):

- replicas, by `stage, model, version`: `surge_cost_replica_seconds_total` and `surge_cost_gpu_seconds_total`
  (GPU-seconds = replica-seconds x GPUs reserved) accrue while a replica lives, `surge_cost_idle_warm_seconds_total`
  while it is up with nothing in flight (the cost scale-to-zero saves), and `surge_cost_cold_starts_total` /
  `surge_cost_cold_start_seconds_total` count replica starts and their load time (paid, not serving);
- prices: `surge_cost_replica_usd_per_hour{stage}` (a gauge the gateway sets: what `surge cost --prometheus`
  prices the always-on alternative with);
- requests: `surge_cost_usd_total{stage, model, version, tenant}` (each stage's seconds priced by
  `surge_core.cost.ReplicaCost`) and `surge_cost_tokens_total{model, version, tenant, direction}`.

A replica's meter accrues from a daemon thread every `interval_s` (5 s): at most that much is lost when a
replica stops; `busy()` costs a lock and a clock read per request.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache

from ray.serve import metrics

from surge_core.model_version import model_and_version

REPLICA_TAGS = ("stage", "model", "version")


@cache
def _counter(name: str, description: str, tags: tuple[str, ...]) -> metrics.Counter:
    return metrics.Counter(name, description=description, tag_keys=tags)


def replica_seconds() -> metrics.Counter:
    return _counter("surge_cost_replica_seconds_total", "Seconds replicas were alive.", REPLICA_TAGS)


def gpu_seconds() -> metrics.Counter:
    return _counter("surge_cost_gpu_seconds_total", "GPU-seconds reserved by live replicas.", REPLICA_TAGS)


def idle_warm_seconds() -> metrics.Counter:
    return _counter(
        "surge_cost_idle_warm_seconds_total",
        "Seconds replicas were up with no request in flight.",
        REPLICA_TAGS,
    )


def cold_starts() -> metrics.Counter:
    return _counter("surge_cost_cold_starts_total", "Replica starts (model loads).", REPLICA_TAGS)


def cold_start_seconds() -> metrics.Counter:
    return _counter(
        "surge_cost_cold_start_seconds_total", "Seconds replicas spent starting (loading).", REPLICA_TAGS
    )


def usd_total() -> metrics.Counter:
    return _counter(
        "surge_cost_usd_total",
        "USD charged to requests: stage seconds priced per replica-hour.",
        ("stage", "model", "version", "tenant"),
    )


def tokens_total() -> metrics.Counter:
    return _counter(
        "surge_cost_tokens_total",
        "Tokens by direction (in, out).",
        ("model", "version", "tenant", "direction"),
    )


@cache
def replica_usd_per_hour() -> metrics.Gauge:
    return metrics.Gauge(
        "surge_cost_replica_usd_per_hour",
        description="Price of one replica of each stage per hour (the price table applied; set by the gateway).",
        tag_keys=("stage",),
    )


def add(counter: metrics.Counter, value: float, tags: dict[str, str]) -> None:
    """Ray's counters refuse a zero or negative increment (ValueError): skip those."""
    if value > 0:
        counter.inc(value, tags=tags)


def replica_tags(stage: str, served_model: str) -> dict[str, str]:
    model, version = model_and_version(served_model)
    return {"stage": stage, "model": model, "version": version}


class ReplicaMeter:
    """One per replica: counts its start, then accrues its live, GPU and idle-warm seconds."""

    def __init__(
        self,
        stage: str,
        served_model: str,
        *,
        gpus: float,
        started_at: float,
        interval_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        on_tick: Callable[[], None] | None = None,
    ) -> None:
        self.tags = replica_tags(stage, served_model)
        # Called every tick: gauges must be set again before each export (Ray's OpenTelemetry recorder
        # clears a gauge's observations once it has collected them, so a gauge set once is exported once).
        self.on_tick = on_tick
        self.gpus = gpus
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._in_flight = 0
        self._clock = clock
        now = clock()
        self._last_tick = now
        self._idle_since: float | None = now
        self._pending_idle = 0.0
        self._stopped = threading.Event()
        self._started_at = started_at
        self._thread = threading.Thread(target=self._run, name=f"surge-cost-{stage}", daemon=True)

    def ready(self, ready_at: float) -> None:
        """The replica has loaded: count the cold start and start accruing."""
        add(cold_starts(), 1, self.tags)
        add(cold_start_seconds(), ready_at - self._started_at, self.tags)
        self._thread.start()

    @contextmanager
    def busy(self) -> Iterator[None]:
        """Around each request the replica serves: idle-warm time stops while any is in flight."""
        self.enter()
        try:
            yield
        finally:
            self.leave()

    def enter(self) -> None:
        with self._lock:
            if self._in_flight == 0 and self._idle_since is not None:
                self._pending_idle += self._clock() - self._idle_since
                self._idle_since = None
            self._in_flight += 1

    def leave(self) -> None:
        with self._lock:
            self._in_flight = max(0, self._in_flight - 1)
            if self._in_flight == 0:
                self._idle_since = self._clock()

    def tick(self) -> tuple[float, float]:
        """Accrue since the last tick; returns (live seconds, idle seconds) added."""
        with self._lock:
            now = self._clock()
            live, self._last_tick = now - self._last_tick, now
            if self._idle_since is not None:
                self._pending_idle += now - self._idle_since
                self._idle_since = now
            idle, self._pending_idle = self._pending_idle, 0.0
        add(replica_seconds(), live, self.tags)
        add(gpu_seconds(), live * self.gpus, self.tags)
        add(idle_warm_seconds(), idle, self.tags)
        if self.on_tick is not None:
            self.on_tick()
        return live, idle

    def _run(self) -> None:
        while not self._stopped.wait(self.interval_s):
            self.tick()

    def stop(self) -> None:
        self._stopped.set()
        self.tick()
