"""Settings of a stage's custom autoscaling policy: validated here, handed to Serve as `policy_kwargs`.

`AutoscalingSettings.policy` (in `deployments.settings`) holds one :class:`AutoscalingPolicySettings`; when
set, the stage's `autoscaling_config` names `deployments.autoscaling.serve_policy:SurgeAutoscalingPolicy`
and these settings become its JSON kwargs. Unset, Serve runs its default queue-length policy, as before.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from surge_core.kafka_settings import KafkaSettings
from surge_core.store_settings import StrictModel

POLICY_FUNCTION = "deployments.autoscaling.serve_policy:SurgeAutoscalingPolicy"
DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
ClockTime = Annotated[str, Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$|^24:00$")]


def _minutes(clock: str) -> int:
    hours, minutes = clock.split(":")
    return int(hours) * 60 + int(minutes)


class WindowSettings(StrictModel):
    """One window of known traffic: e.g. `{days: [mon, tue, wed, thu, fri], start: "09:00", end: "17:00"}`."""

    days: list[Day] = Field(min_length=1, description="Days the window applies to (mon .. sun).")
    start: ClockTime = Field(description="Time of day the window opens (HH:MM, in the schedule's offset).")
    end: ClockTime = Field(description="Time of day it closes (HH:MM, after start; 24:00 for midnight).")
    replicas: int = Field(1, ge=1, le=1000, description="Replicas held inside the window.")

    @model_validator(mode="after")
    def _ends_after_it_starts(self) -> WindowSettings:
        if _minutes(self.end) <= _minutes(self.start):
            raise ValueError(f"end ({self.end}) must be after start ({self.start}); split overnight windows")
        return self

    def to_kwargs(self) -> dict[str, Any]:
        return {
            "days": [DAY_NAMES.index(d) for d in self.days],
            "start_minute": _minutes(self.start),
            "end_minute": _minutes(self.end),
            "replicas": self.replicas,
        }


class ScheduleSettings(StrictModel):
    """The scheduled warmer: provisioned concurrency for known hours."""

    windows: list[WindowSettings] = Field(min_length=1, description="Windows holding replicas.")
    lead_s: float = Field(
        120.0, ge=0, le=3600, description="Seconds before a window opens that its replicas start (pre-warm)."
    )
    utc_offset_minutes: int = Field(
        0, ge=-14 * 60, le=14 * 60, description="Offset of the windows' clock from UTC, in minutes."
    )

    def to_kwargs(self) -> dict[str, Any]:
        return {
            "kind": "scheduled",
            "windows": [w.to_kwargs() for w in self.windows],
            "lead_s": self.lead_s,
            "utc_offset_minutes": self.utc_offset_minutes,
        }


class LearnedWarmerSettings(StrictModel):
    """The learned warmer (hybrid histogram policy): pre-warm and keep-alive from the idle-time percentiles."""

    head: float = Field(0.05, ge=0, lt=1, description="Idle-time percentile that sets the pre-warm point.")
    tail: float = Field(0.99, gt=0, le=1, description="Idle-time percentile that sets the keep-alive.")
    margin: float = Field(1.1, ge=1, le=10, description="Keep-alive = tail percentile x margin.")
    lead_s: float = Field(30.0, ge=0, le=3600, description="Seconds before the expected arrival to pre-warm.")
    min_samples: int = Field(5, ge=1, le=10_000, description="Idle times needed before percentiles are used.")
    default_keep_alive_s: float = Field(
        600.0, ge=0, description="Keep-alive after a busy period until min_samples idle times are known."
    )
    max_keep_alive_s: float = Field(14_400.0, gt=0, description="Longest keep-alive the percentiles may set.")
    min_unload_s: float = Field(
        60.0, ge=0, description="Shortest gap worth unloading for between busy periods."
    )
    period_s: float = Field(604_800.0, gt=0, description="The arrivals pattern's period (a week).")
    slots: int = Field(168, ge=1, le=10_080, description="Slots per period (168: hours of the week).")
    slot_min_periods: int = Field(
        2, ge=1, description="Periods with arrivals in a slot before that slot is held warm."
    )
    off_hours_keep_alive_floor_s: float = Field(
        300.0,
        ge=0,
        description="Outside the learned active hours the keep-alive is the tail percentile of the idle "
        "times inside them x margin, but never below this.",
    )
    state_dir: str | None = Field(
        None,
        min_length=1,
        description="Directory where learned models persist (a PVC on a cluster); None: "
        "$SURGE_CACHE_DIR/autoscaling in the Serve controller.",
    )
    save_every_s: float = Field(30.0, gt=0, description="Longest time between two saves of the model.")

    @model_validator(mode="after")
    def _head_before_tail(self) -> LearnedWarmerSettings:
        if self.head >= self.tail:
            raise ValueError(f"head ({self.head}) must be < tail ({self.tail})")
        if self.default_keep_alive_s > self.max_keep_alive_s:
            raise ValueError("default_keep_alive_s must be <= max_keep_alive_s")
        if self.off_hours_keep_alive_floor_s > self.max_keep_alive_s:
            raise ValueError("off_hours_keep_alive_floor_s must be <= max_keep_alive_s")
        return self

    def to_kwargs(self) -> dict[str, Any]:
        return {"kind": "learned", **self.model_dump(exclude={"state_dir", "save_every_s"})}


class BacklogWarmerSettings(StrictModel):
    """The event-driven warmer (`deployments.autoscaling.backlog`): a consumer group's lag on a topic holds
    replicas, so a stage wakes when records arrive, before the consumer's first call (e.g. the Embedder for
    a backlog on `documents`)."""

    kafka: KafkaSettings = Field(default_factory=KafkaSettings, description="The brokers to read lag from.")
    topic: str = Field("documents", min_length=1, max_length=249, description="Topic whose backlog wakes.")
    group_id: str = Field(
        "surge-ingestion", min_length=1, max_length=200, description="Consumer group whose lag is read."
    )
    min_lag: int = Field(1, ge=1, description="Records of lag that hold the floor.")
    replicas: int = Field(1, ge=1, le=1000, description="Replicas held while the group lags.")
    poll_s: float = Field(5.0, ge=0.5, le=600, description="Seconds between two reads of the lag.")

    def to_kwargs(self) -> dict[str, Any]:
        return {"kind": "backlog", **self.model_dump(mode="json")}


class ColdStartLeadSettings(StrictModel):
    """The warmers' lead from the cold starts the policy measures (`deployments.autoscaling.cold_start`):
    lead = min(max_lead_s, max(the warmer's lead_s, factor x the p90 of the last measured starts))."""

    factor: float = Field(
        1.5, ge=0, le=10, description="Times the measured p90 cold start a warmer pre-warms ahead (0: off)."
    )
    max_lead_s: float = Field(
        3600.0, gt=0, le=7 * 86_400, description="Longest lead a measured cold start may set."
    )

    def to_kwargs(self) -> dict[str, Any]:
        return self.model_dump()


class AutoscalingPolicySettings(StrictModel):
    """Which replica policy sizes the stage, and which warmers hold a floor under it."""

    replica_policy: Literal["queue_length", "slo"] = Field(
        "queue_length",
        description="'queue_length': ongoing / target_ongoing_requests (Serve's rule); 'slo': engine slots "
        "(max_ongoing_requests, = the LLM's max_num_seqs) and TTFT p90 against ttft_slo_s, with hysteresis.",
    )
    ttft_slo_s: float = Field(2.0, gt=0, le=600, description="Time-to-first-token SLO of the 'slo' policy.")
    target_utilization: float = Field(
        0.75, gt=0, le=1, description="'slo': share of a replica's slots the policy fills before adding one."
    )
    scale_down_below: float = Field(
        0.5, gt=0, lt=1, description="'slo': shrink only below this share of current capacity (hysteresis)."
    )
    schedule: ScheduleSettings | None = Field(None, description="Scheduled warmer (known hours).")
    learned: LearnedWarmerSettings | None = Field(None, description="Learned warmer (arrivals model).")
    backlog: BacklogWarmerSettings | None = Field(
        None, description="Event-driven warmer: a consumer group's backlog on a topic wakes the stage."
    )
    cold_start_lead: ColdStartLeadSettings = Field(
        default_factory=ColdStartLeadSettings,
        description="The warmers' lead grows to a multiple of the cold start measured for the stage.",
    )

    def to_serve(self, target_ongoing_requests: float, capacity_per_replica: int | None) -> dict[str, Any]:
        """Serve's `autoscaling_config.policy`: the class's import path and its JSON kwargs.

        `capacity_per_replica` is the stage's `max_ongoing_requests` (the LLM's `max_num_seqs`; `serve_options`
        passes it). Without it, the 'slo' policy takes the slots `target_ongoing_requests` implies:
        ceil(target_ongoing_requests / target_utilization), e.g. 8 / 0.75 -> 11."""
        if self.replica_policy == "slo":
            if capacity_per_replica is None:
                capacity_per_replica = math.ceil(target_ongoing_requests / self.target_utilization)
            replica_policy: dict[str, Any] = {
                "kind": "slo",
                "ttft_slo_s": self.ttft_slo_s,
                "max_num_seqs": capacity_per_replica,
                "target_utilization": self.target_utilization,
                "scale_down_below": self.scale_down_below,
            }
        else:
            replica_policy = {"kind": "queue_length", "target_ongoing_requests": target_ongoing_requests}
        warmers = [w.to_kwargs() for w in (self.schedule, self.learned, self.backlog) if w is not None]
        kwargs: dict[str, Any] = {
            "replica_policy": replica_policy,
            "warmers": warmers,
            "cold_start_lead": self.cold_start_lead.to_kwargs(),
        }
        if self.learned is not None:
            kwargs["state_dir"] = self.learned.state_dir
            kwargs["save_every_s"] = self.learned.save_every_s
        return {"policy_function": POLICY_FUNCTION, "policy_kwargs": kwargs}
