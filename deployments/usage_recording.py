"""Charges each finished request: USD per stage and tokens per tenant (metrics), one `usage` record (Kafka).

A request's charge is each stage's seconds (measured by the stage clients, `Timeline.stage_seconds`) priced
by that stage's `ReplicaCost` (its CPUs and GPUs from the stage settings, memory and prices from
`cost`) for one of the replica's `max_ongoing_requests` slots, plus the gateway's own seconds (arrival to
the end of the response, in one of the gateway's slots). The `usage` record is
published like the inference log (`surge_core.inference_log`'s publisher: a bounded queue and a
background sender; never blocks or fails a request), whenever the inference log is enabled.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping
from typing import Any

from deployments.cost_metrics import add, replica_usd_per_hour, tokens_total, usd_total
from deployments.request_timeline import Timeline
from deployments.settings import AppSettings, DeploymentSettings
from surge_core.cost import ReplicaCost
from surge_core.inference_log import build_inference_log_publisher
from surge_core.model_version import model_and_version
from surge_core.records import UsageRecord
from surge_core.tenancy import DEFAULT_TENANT
from surge_core.topics import USAGE

logger = logging.getLogger("ray.serve")


def stage_costs(settings: AppSettings) -> dict[str, ReplicaCost]:
    """One replica's price of each stage, from its CPUs/GPUs, its slots and the cost settings."""
    stages = {
        "gateway": settings.gateway,
        "embedder": settings.embedder,
        "retriever": settings.retriever,
        "llm": settings.llm,
    }
    return {stage: stage_cost(settings, stage, options) for stage, options in stages.items()}


def stage_cost(settings: AppSettings, stage: str, options: DeploymentSettings) -> ReplicaCost:
    return settings.cost.replica_cost(
        stage, options.num_cpus, options.num_gpus, slots=options.max_ongoing_requests
    )


class UsageRecorder:
    """Charges requests. `llm_versions` maps each served LLM version (`name@version`) to its settings, so a
    request's LLM seconds are priced by the replica of the version that answered it (an L4 canary beside
    a CPU primary costs what an L4 costs); without them, by the `llm` section's."""

    def __init__(
        self,
        settings: AppSettings,
        served_model: str,
        llm_versions: Mapping[str, DeploymentSettings] | None = None,
    ) -> None:
        self.costs = stage_costs(settings)
        self.llm_costs = {
            key: stage_cost(settings, "llm", options) for key, options in (llm_versions or {}).items()
        }
        # Always-on keeps one replica of every stage up, and each LLM version is a stage of its own.
        self.always_on_usd_per_hour = {stage: cost.usd_per_hour for stage, cost in self.costs.items()}
        if self.llm_costs:
            self.always_on_usd_per_hour["llm"] = sum(c.usd_per_hour for c in self.llm_costs.values())
        self.publish_prices()
        self.model, self.version = model_and_version(served_model)
        log = settings.gateway.inference_log
        self._publisher = build_inference_log_publisher(log, topic=USAGE) if log.enabled else None

    def publish_prices(self) -> None:
        """Set the `surge_cost_replica_usd_per_hour{stage}` gauges (`surge cost --prometheus` prices
        always-on with them). Called again on every tick of the gateway's meter: Ray exports a gauge's value
        once and then drops it until it is set again."""
        for stage, usd_per_hour in self.always_on_usd_per_hour.items():
            replica_usd_per_hour().set(usd_per_hour, tags={"stage": stage})

    def charge(
        self, timeline: Timeline, llm_version: str | None = None
    ) -> tuple[dict[str, float], dict[str, float]]:
        """(seconds, USD) per stage for the request so far; the gateway's seconds are its whole life, the
        LLM's are priced by `llm_version`'s replica when it is a registered version."""
        seconds = {**timeline.stage_seconds, "gateway": max(0.0, time.time() - timeline.arrived)}
        costs = {**self.costs, "llm": self.llm_costs.get(llm_version or "", self.costs["llm"])}
        usd = {stage: costs[stage].usd_for(s) for stage, s in seconds.items() if stage in costs}
        return seconds, usd

    def record(self, **request: Any) -> UsageRecord | None:
        """Charge and publish one finished request (see `charge_and_publish`); never raises: a failure here
        costs a warning, never the request it accounts for."""
        try:
            return self.charge_and_publish(**request)
        except Exception:
            logger.warning("usage: could not record a request", exc_info=True)
            return None

    def charge_and_publish(
        self,
        *,
        route: str,
        status_code: int,
        timeline: Timeline,
        tokens_in: int,
        tokens_out: int,
        principal: str | None,
        tenant: str | None,
        served_model: str | None = None,
    ) -> UsageRecord:
        """Charge and publish one finished request; `served_model` names another model than the LLM (the
        embedding model of /v1/embeddings)."""
        tenant = tenant or DEFAULT_TENANT
        model, version = model_and_version(served_model) if served_model else (self.model, self.version)
        seconds, usd = self.charge(timeline, served_model)
        tags = {"model": model, "version": version, "tenant": tenant}
        for stage, amount in usd.items():
            add(usd_total(), amount, {**tags, "stage": stage})
        add(tokens_total(), tokens_in, {**tags, "direction": "in"})
        add(tokens_total(), tokens_out, {**tags, "direction": "out"})
        record = UsageRecord(
            request_id=uuid.uuid4().hex,
            principal=principal,
            tenant=tenant,
            model=model,
            version=version,
            route=route,
            status_code=status_code,
            tokens_in=tokens_in,
            tokens_out=tokens_out,
            stage_seconds={stage: round(s, 6) for stage, s in seconds.items()},
            cost_usd=round(sum(usd.values()), 12),
            stage_usd_per_hour={
                stage: self.llm_costs.get(served_model or "", cost).usd_per_hour
                if stage == "llm"
                else cost.usd_per_hour
                for stage, cost in self.costs.items()
                if stage in seconds
            },
        )
        if self._publisher is not None:
            self._publisher.publish(record)
        return record

    def close(self) -> None:
        if self._publisher is not None:
            self._publisher.close()
