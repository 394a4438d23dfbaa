"""Structured events and Ray Serve metrics shared by the deployments.

Metrics use Ray Serve's metrics API (`ray.serve.metrics`), which tags each series with the deployment and
replica and exports through Ray's Prometheus endpoint. Names follow Prometheus conventions.
"""

from __future__ import annotations

import json
import logging
import time
from functools import cache
from typing import Any

from ray.serve import metrics

logger = logging.getLogger("ray.serve")

LATENCY_BUCKETS_S = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300]


def log_event(event: str, **fields: Any) -> None:
    """One JSON line per event, easy to grep and to ship to a log pipeline."""
    logger.info(json.dumps({"event": event, "ts": round(time.time(), 3), **fields}, default=str))


@cache
def cold_start_seconds() -> metrics.Histogram:
    return metrics.Histogram(
        "surge_cold_start_seconds",
        description="Seconds from a request arriving at a stage with no replica to that stage being ready.",
        boundaries=LATENCY_BUCKETS_S,
        tag_keys=("stage",),
    )


@cache
def replica_load_seconds() -> metrics.Histogram:
    return metrics.Histogram(
        "surge_replica_load_seconds",
        description="Seconds a replica took from constructor start to ready (model loaded).",
        boundaries=LATENCY_BUCKETS_S,
        tag_keys=("stage",),
    )


def record_replica_ready(stage: str, started_at: float, ready_at: float) -> None:
    """Called by each stage's constructor when its model is loaded."""
    seconds = ready_at - started_at
    replica_load_seconds().observe(seconds, tags={"stage": stage})
    log_event("replica_ready", stage=stage, load_seconds=round(seconds, 3))


def record_cold_start(stage: str, request_arrived_at: float, ready_at: float) -> None:
    """Called by the gateway when a request had to wait for a stage's replica to come up."""
    seconds = max(0.0, ready_at - request_arrived_at)
    cold_start_seconds().observe(seconds, tags={"stage": stage})
    log_event("cold_start", stage=stage, seconds_from_request_to_ready=round(seconds, 3))
