"""The warmers' lead from the cold start the stage actually measured, not only from a configured guess.

A warmer pre-warms `lead_s` before traffic is expected; if the stage's replica takes longer than that to
start, the window's first requests wait (the trace replay of 2026-12-02: a lead of 18 s fixed before the run,
replica starts of ~25 s with six apps sharing two cores, one cold start that cost the learned warmer 12 % of
its SLO). So the policy measures every scale-from-zero start itself, in Serve's controller: from the first
tick it asked for a replica while none was running to the first tick one was running
(`ctx.current_num_replicas` counts RUNNING replicas only). That span is what a lead has to cover: Serve's
delays, scheduling the actor, the process start and the model load -- more than the replica's own load time,
which is all a replica could report. It runs on the policy's clock, so a replay on a compressed clock gets
its cold starts in workload seconds, as its leads are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class ColdStarts:
    """What was measured: the last starts (seconds, oldest first) and, while one is under way, since when."""

    samples_s: tuple[float, ...] = ()
    asking_since: float | None = None


@dataclass(frozen=True)
class ColdStartLead:
    """lead = min(max_lead_s, max(configured lead, factor x the `quantile` of the last `max_samples` starts)).

    With no start measured yet the configured lead stands; `factor` 0 turns the adaptation off.
    Worked example: starts 11, 12, 25 s (p90 nearest-rank 25 s), factor 1.5 -> 37.5 s: a warmer configured
    with 30 s pre-warms 37.5 s ahead; one configured with 120 s keeps 120 s. max_lead_s 3600 caps a
    nonsensical measurement (a controller paused for an hour) at one hour.
    """

    factor: float = 1.5
    quantile: float = 0.9
    max_samples: int = 32
    max_lead_s: float = 3600.0

    def __post_init__(self) -> None:
        if self.factor < 0 or not 0 < self.quantile <= 1:
            raise ValueError("cold-start lead: need factor >= 0 and 0 < quantile <= 1")
        if self.max_samples < 1 or self.max_lead_s <= 0:
            raise ValueError("cold-start lead: need max_samples >= 1 and max_lead_s > 0")

    def measured_s(self, starts: ColdStarts) -> float | None:
        """The `quantile` of the measured starts (nearest rank), None before the first one."""
        if not starts.samples_s:
            return None
        ordered = sorted(starts.samples_s)
        return ordered[max(0, math.ceil(self.quantile * len(ordered)) - 1)]

    def lead_s(self, configured_s: float, starts: ColdStarts) -> float:
        measured = self.measured_s(starts)
        if measured is None or self.factor == 0:
            return configured_s
        return max(configured_s, min(self.max_lead_s, self.factor * measured))

    def observe(self, starts: ColdStarts, now: float, running: int, asked: float) -> ColdStarts:
        """Fold one tick: `running` replicas now, `asked` = the replicas the policy decided on this tick."""
        if running > 0:
            if starts.asking_since is None:
                return starts
            sample = max(0.0, now - starts.asking_since)
            return ColdStarts(samples_s=(*starts.samples_s, sample)[-self.max_samples :], asking_since=None)
        if asked > 0:
            return starts if starts.asking_since is not None else replace(starts, asking_since=now)
        # Asked, then withdrew before a replica ran (Serve stops the start): not a cold start.
        return replace(starts, asking_since=None) if starts.asking_since is not None else starts


__all__ = ["ColdStartLead", "ColdStarts"]
