"""surge's autoscaling policy on a compressed clock, for a trace replay that plays a day in minutes.

Serve's controller imports this class by its path (`autoscaling_config.policy.policy_function`) exactly as it
imports `deployments.autoscaling.serve_policy:SurgeAutoscalingPolicy`, with the same `policy_kwargs` a user's
config produces, plus three: `replay_origin_s` (wall-clock time at which the replay starts), `compress`
(replay seconds -> workload seconds) and `virtual_origin_s` (the workload time at the replay's start, a
Monday 00:00). Only `ctx.current_time` is changed, so the scheduled windows and the learned warmer's hours
and idle times run on the workload's clock while everything else Serve does (delays, replica starts,
routing, the replicas' reported stats) runs in real time.

Worked example: compress 480 (a day in 180 s), origin 1000.0: at wall time 1000 + 67.5 the policy sees
Monday 09:00 (67.5 x 480 = 32,400 s).
"""

from __future__ import annotations

import copy
import time
from typing import Any

from deployments.autoscaling.serve_policy import SurgeAutoscalingPolicy

POLICY_FUNCTION = "benchmarks._replay_clock:ReplayClockPolicy"
CLOCK_KEYS = ("replay_origin_s", "compress", "virtual_origin_s")


class ReplayClockPolicy(SurgeAutoscalingPolicy):
    def __init__(
        self, replay_origin_s: float, compress: float, virtual_origin_s: float, **policy_kwargs: Any
    ) -> None:
        if compress <= 0:
            raise ValueError("compress must be > 0")
        super().__init__(**policy_kwargs)
        self.replay_origin_s = replay_origin_s
        self.compress = compress
        self.virtual_origin_s = virtual_origin_s

    def virtual_time(self, wall_s: float) -> float:
        return self.virtual_origin_s + (wall_s - self.replay_origin_s) * self.compress

    def __call__(self, ctx: Any) -> tuple[float, dict[str, Any]]:
        shifted = copy.copy(ctx)
        shifted.current_time = self.virtual_time(float(ctx.current_time or time.time()))
        return super().__call__(shifted)


def on_replay_clock(
    autoscaling_config: dict[str, Any],
    replay_origin_s: float,
    compress: float,
    virtual_origin_s: float,
    warmer_lead_s: float | None = None,
) -> dict[str, Any]:
    """A stage's `autoscaling_config` (from `AutoscalingSettings.to_serve`) with its policy on the replay's
    clock; a config without a custom policy (Serve's default) is returned unchanged.

    `warmer_lead_s` (workload seconds) replaces every warmer's validated `lead_s`: the settings cap a lead at
    1 h, which covers any real cold start, but a cold start of 20 s in a day compressed x288 lasts 1.6
    workload hours. Only replays recorded before 2026-12-02 03:28 fixed a lead (re-reported with it); since,
    the policies lead by the cold starts they measure (`cold_start_lead`) and pass None."""
    policy = autoscaling_config.get("policy")
    if not policy:
        return autoscaling_config
    warmers = [
        {**w, "lead_s": warmer_lead_s} if warmer_lead_s is not None else w
        for w in policy["policy_kwargs"].get("warmers", ())
    ]
    kwargs = {
        **policy["policy_kwargs"],
        "warmers": warmers,
        "replay_origin_s": replay_origin_s,
        "compress": compress,
        "virtual_origin_s": virtual_origin_s,
    }
    return {**autoscaling_config, "policy": {"policy_function": POLICY_FUNCTION, "policy_kwargs": kwargs}}
