"""Warmers: replica floors held before traffic is expected, so a burst's first users don't pay the cold start.

A warmer is a frozen value with `floor(now) -> int` (replicas to hold now, the policy takes the max with the
load's demand). The learned warmer also has state (its :class:`ArrivalModel`), passed in and returned as a
new value, so the decision stays a pure function of (model, now).

Times are seconds since the epoch; schedules are read in UTC plus `utc_offset_minutes`.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

MINUTES_PER_DAY = 1440
MINUTES_PER_WEEK = 7 * MINUTES_PER_DAY


class Warmer(Protocol):
    def floor(self, now: float, model: ArrivalModel | None = None) -> int: ...

    def with_min_lead(self, lead_s: float) -> Warmer:
        """This warmer pre-warming at least `lead_s` ahead (the policy passes the measured cold start's
        lead, `deployments.autoscaling.cold_start`); a warmer without a lead returns itself."""
        ...


@dataclass(frozen=True)
class Window:
    """Days of the week (0 = Monday) and a [start, end) time of day in minutes, holding `replicas`."""

    days: tuple[int, ...]
    start_minute: int
    end_minute: int
    replicas: int = 1

    def __post_init__(self) -> None:
        if not self.days or any(d not in range(7) for d in self.days):
            raise ValueError("days must be a non-empty list of 0 (Monday) .. 6 (Sunday)")
        if not 0 <= self.start_minute < self.end_minute <= MINUTES_PER_DAY:
            raise ValueError("need 0 <= start_minute < end_minute <= 1440")
        if self.replicas < 1:
            raise ValueError("replicas must be >= 1")


def week_minute(now: float, utc_offset_minutes: int = 0) -> float:
    """Minutes since Monday 00:00 (the epoch, 1970-01-01, was a Thursday: day 3)."""
    minutes = now / 60.0 + utc_offset_minutes
    return (minutes + 3 * MINUTES_PER_DAY) % MINUTES_PER_WEEK


@dataclass(frozen=True)
class ScheduledWarmer:
    """Provisioned concurrency for known hours: hold `replicas` from `lead_s` before a window opens to its end.

    floor(t) = max(replicas of every window w with w.start - lead <= t < w.end), on the week's circle.
    Worked example: window Mon-Fri 09:00-17:00, 1 replica, lead 120 s: Monday 08:57:59 -> 0, 08:58:00 -> 1,
    16:59 -> 1, 17:00 -> 0; Saturday 09:30 -> 0.
    """

    windows: tuple[Window, ...]
    lead_s: float = 0.0
    utc_offset_minutes: int = 0

    def with_min_lead(self, lead_s: float) -> ScheduledWarmer:
        return self if lead_s <= self.lead_s else replace(self, lead_s=lead_s)

    def floor(self, now: float, model: ArrivalModel | None = None) -> int:
        minute = week_minute(now, self.utc_offset_minutes)
        lead = self.lead_s / 60.0
        best = 0
        for window in self.windows:
            for day in window.days:
                opens = day * MINUTES_PER_DAY + window.start_minute - lead
                closes = day * MINUTES_PER_DAY + window.end_minute
                # Distance forward from `opens` to now on the circle; inside when it is before the close.
                if (minute - opens) % MINUTES_PER_WEEK < closes - opens:
                    best = max(best, window.replicas)
        return best


@dataclass(frozen=True)
class ArrivalModel:
    """What the learned warmer knows: recent idle times (sorted, bounded) and per-slot activity.

    An *arrival* is the start of a busy period (the stage had nothing to do, then had a request); the idle time
    is the gap since the previous busy period ended. `slot_periods[s]` counts the periods (weeks, by default)
    in which slot `s` (an hour of the week) saw an arrival. `in_hours_idle_times_s` are the idle times whose
    whole gap lay in known slots (the pauses *inside* active hours, not the nights between them).
    `hits`/`arrivals` score the warmer: an arrival that found a replica running is a hit.
    A model saved before `in_hours_idle_times_s` existed loads with none (the keep-alive is then the plain
    one until enough are seen), and an older reader ignores the new key: the format needs no version.
    """

    idle_times_s: tuple[float, ...] = ()
    in_hours_idle_times_s: tuple[float, ...] = ()
    slot_periods: tuple[int, ...] = ()
    slot_last_period: tuple[int, ...] = ()
    last_busy_end: float | None = None
    busy: bool = False
    arrivals: int = 0
    hits: int = 0

    @property
    def hit_rate(self) -> float | None:
        return self.hits / self.arrivals if self.arrivals else None

    def to_json(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ArrivalModel:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        for name in ("idle_times_s", "in_hours_idle_times_s", "slot_periods", "slot_last_period"):
            known[name] = tuple(known.get(name, ()))
        return cls(**known)


def _percentile(sorted_values: tuple[float, ...], q: float) -> float:
    index = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[index]


@dataclass(frozen=True)
class LearnedWarmer:
    """The hybrid histogram policy of "Serverless in the Wild" (Shahrad et al., 2020), per stage/version.

    From the idle times between busy periods: pre-warm = the `head` percentile (5th), keep-alive = the `tail`
    percentile (99th) times `margin`. After a busy period ends at `e`, hold a replica during
    [e, e + keep_alive) except in the gap [e, e + pre_warm - lead) when pre_warm - lead is long enough
    to be worth unloading (> `min_unload_s`). Two more rules: with fewer than `min_samples` idle times, use
    `default_keep_alive_s` (a plain keep-alive, as the paper's fallback); and while a slot of the week that saw
    arrivals in at least `slot_min_periods` past periods overlaps [now, now + lead], a replica is held (known
    hours, pre-warmed `lead_s` ahead).
    Worked example: idle times 40 s ... 300 s (p5 60 s, p99 300 s), margin 1.1, lead 20 s: after a busy period
    ending at t=0 -> no replica from 0 to 40 s, one from 40 s to 330 s, none after unless the slot is known.

    Slot-aware keep-alive: once some slot is known (the history is mature), outside known slots the
    keep-alive is the one of active hours,
        keep_alive_off = min(keep_alive, max(off_hours_keep_alive_floor_s,
                                             tail percentile of in_hours_idle_times_s x margin)),
    while inside (or within the lead of) a known slot the replica is held as before. Why: the plain p99 mixes
    the pauses of a working day with the nights between days, so it is the longest gap the cap allows (4 h)
    and a replica outlived every window by that much (the replay of 2026-12-02: 82 idle warm seconds of the
    learned warmer against 53 of the schedule); a stray request at night held one for hours. With fewer than
    `min_samples` in-hours idle times the plain keep-alive stands.
    Worked example: hourly slots, two weeks of weekday 09:00-17:00 traffic, in-hours idle times up to 20 min
    (p99 20 min x 1.1 = 22 min), nights in the plain p99 (capped at 4 h), floor 5 min: a busy period ending
    16:50 -> held to 17:12 (was 20:50); a stray 03:00-03:01 -> held to 03:23 (was 07:01); Monday 09:00 is
    still pre-warmed from 09:00 - lead.
    """

    head: float = 0.05
    tail: float = 0.99
    margin: float = 1.1
    lead_s: float = 30.0
    min_samples: int = 5
    max_samples: int = 512
    default_keep_alive_s: float = 600.0
    max_keep_alive_s: float = 4 * 3600.0
    min_unload_s: float = 60.0
    period_s: float = 7 * 86400.0
    slots: int = 168
    slot_min_periods: int = 2
    off_hours_keep_alive_floor_s: float = 300.0

    def __post_init__(self) -> None:
        if not 0 <= self.head < self.tail <= 1:
            raise ValueError("need 0 <= head < tail <= 1")
        if not 0 <= self.off_hours_keep_alive_floor_s <= self.max_keep_alive_s:
            raise ValueError("need 0 <= off_hours_keep_alive_floor_s <= max_keep_alive_s")
        if (
            self.slots < 1
            or self.period_s <= 0
            or self.min_samples < 1
            or self.max_samples < self.min_samples
        ):
            raise ValueError("slots, period_s, min_samples must be positive and max_samples >= min_samples")

    def slot(self, now: float) -> tuple[int, int]:
        """(period index, slot in the period) of `now`."""
        period, offset = divmod(now, self.period_s)
        return int(period), min(self.slots - 1, int(offset / self.period_s * self.slots))

    def windows(self, model: ArrivalModel) -> tuple[float, float]:
        """(pre-warm, keep-alive) seconds after the end of a busy period."""
        if len(model.idle_times_s) < self.min_samples:
            return 0.0, self.default_keep_alive_s
        pre_warm = _percentile(model.idle_times_s, self.head)
        keep_alive = min(self.max_keep_alive_s, _percentile(model.idle_times_s, self.tail) * self.margin)
        return pre_warm, max(keep_alive, pre_warm)

    def off_hours_keep_alive(self, model: ArrivalModel) -> float:
        """The keep-alive outside known slots (the class docstring's keep_alive_off)."""
        keep_alive = self.windows(model)[1]
        mature = any(p >= self.slot_min_periods for p in model.slot_periods)
        if not mature or len(model.in_hours_idle_times_s) < self.min_samples:
            return keep_alive
        in_hours = _percentile(model.in_hours_idle_times_s, self.tail) * self.margin
        return min(keep_alive, max(self.off_hours_keep_alive_floor_s, in_hours))

    def with_min_lead(self, lead_s: float) -> LearnedWarmer:
        return self if lead_s <= self.lead_s else replace(self, lead_s=lead_s)

    def floor(self, now: float, model: ArrivalModel | None = None) -> int:
        model = model or ArrivalModel()
        if model.busy or self._known_slot_ahead(model, now):
            return 1
        if model.last_busy_end is None:
            return 0
        idle = now - model.last_busy_end
        pre_warm, _ = self.windows(model)
        unload_until = pre_warm - self.lead_s
        if unload_until > self.min_unload_s and idle < unload_until:
            return 0
        # Not in or ahead of a known slot here: the keep-alive of active hours, once they are known.
        return 1 if idle < self.off_hours_keep_alive(model) else 0

    def _known_slot_ahead(self, model: ArrivalModel, now: float) -> bool:
        """Whether a known slot overlaps [now, now + lead]: every slot the lead spans is checked, not only the
        one at now + lead, which with a lead longer than a slot (a cold start of minutes against 10-minute
        slots, or a compressed replay) held a replica for one slot's length and dropped it before the slot."""
        if not model.slot_periods:
            return False
        slot_s = self.period_s / self.slots
        ahead = [now + k * slot_s for k in range(min(self.slots, int(self.lead_s // slot_s) + 1))]
        return any(
            model.slot_periods[self.slot(at)[1]] >= self.slot_min_periods
            for at in [*ahead, now + self.lead_s]
        )

    def _all_known(self, periods: list[int], start: float, end: float) -> bool:
        """Whether every slot of [start, end] is known (steps of one slot's length skip none)."""
        slot_s = self.period_s / self.slots
        steps = min(self.slots, int((end - start) // slot_s) + 1)
        return all(
            periods[self.slot(at)[1]] >= self.slot_min_periods
            for at in [*(start + k * slot_s for k in range(steps)), end]
        )

    def _with_sample(self, samples: tuple[float, ...], gap: float, arrivals: int) -> tuple[float, ...]:
        position = bisect.bisect(samples, gap)
        samples = (*samples[:position], gap, *samples[position:])
        if len(samples) > self.max_samples:
            # Bounded memory: forget one sample at a position that walks the whole distribution
            # (never always the smallest or largest, which would bias the percentiles).
            drop = (arrivals * 7919) % len(samples)
            samples = samples[:drop] + samples[drop + 1 :]
        return samples

    def observe(self, model: ArrivalModel, now: float, busy: bool, warm: bool) -> ArrivalModel:
        """Fold one tick into the model: `busy` = the stage has requests now, `warm` = a replica is running."""
        if busy == model.busy:
            return model
        if not busy:
            return replace(model, busy=False, last_busy_end=now)
        periods = list(model.slot_periods) or [0] * self.slots
        last = list(model.slot_last_period) or [-1] * self.slots
        period, slot = self.slot(now)
        if last[slot] != period:
            periods[slot] += 1
            last[slot] = period
        idle_times, in_hours = model.idle_times_s, model.in_hours_idle_times_s
        if model.last_busy_end is not None:
            gap = max(0.0, now - model.last_busy_end)
            idle_times = self._with_sample(idle_times, gap, model.arrivals)
            if self._all_known(periods, model.last_busy_end, now):
                in_hours = self._with_sample(in_hours, gap, model.arrivals)
        return replace(
            model,
            busy=True,
            idle_times_s=idle_times,
            in_hours_idle_times_s=in_hours,
            slot_periods=tuple(periods),
            slot_last_period=tuple(last),
            arrivals=model.arrivals + 1,
            hits=model.hits + (1 if warm else 0),
        )


def _scheduled(params: Mapping[str, Any]) -> Warmer:
    windows = tuple(
        Window(
            days=tuple(w["days"]),
            start_minute=int(w["start_minute"]),
            end_minute=int(w["end_minute"]),
            replicas=int(w.get("replicas", 1)),
        )
        for w in params.get("windows", ())
    )
    rest = {k: v for k, v in params.items() if k != "windows"}
    return ScheduledWarmer(windows=windows, **rest)


def _learned(params: Mapping[str, Any]) -> Warmer:
    return LearnedWarmer(**params)


def _backlog(params: Mapping[str, Any]) -> Warmer:
    # Imported here: it reaches Kafka, which only configs that name a backlog warmer need.
    from deployments.autoscaling.backlog import BacklogWarmer

    return BacklogWarmer(**params)


WARMERS: dict[str, Callable[[Mapping[str, Any]], Warmer]] = {
    "scheduled": _scheduled,
    "learned": _learned,
    "backlog": _backlog,
}


def build_warmer(spec: Mapping[str, Any]) -> Warmer:
    params = dict(spec)
    kind = params.pop("kind", None)
    try:
        factory = WARMERS[str(kind)]
    except KeyError:
        raise ValueError(f"unknown warmer {kind!r}; known: {sorted(WARMERS)}") from None
    return factory(params)


__all__ = ["ArrivalModel", "LearnedWarmer", "ScheduledWarmer", "Warmer", "Window", "build_warmer"]
