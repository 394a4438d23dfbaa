"""Bounded retries with capped exponential backoff and jitter: a small immutable, self-validating value.

The consumers use it for a record whose processing fails: try again a bounded number of times, waiting a
little longer each time, then give up and dead-letter the record so its partition keeps moving.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

T = TypeVar("T")


class RetryPolicy(BaseModel):
    """How often and how patiently to retry one unit of work.

    `max_attempts` counts every try, the first included. The wait after failed attempt `n` (1-based) is

        nominal(n) = min(max_delay_s, base_delay_s * multiplier ** (n - 1))
        delay(n)   = nominal(n) * (1 - jitter * u),   u uniform in [0, 1)

    so jitter only shortens a wait (never past the cap) and spreads retries of many consumers apart.
    Worked example with the defaults (max_attempts=4, base 0.2 s, multiplier 2, cap 5 s, jitter 0.5):
    nominal waits are 0.2 s, 0.4 s, 0.8 s (after attempts 1, 2, 3); with u = 0.5 they become 0.15 s,
    0.3 s, 0.6 s; no wait follows attempt 4 - the record is dead-lettered. A record that keeps failing
    costs at most 1.4 s of waiting.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_attempts: int = Field(4, ge=1, le=100, description="Tries in total, the first included.")
    base_delay_s: float = Field(0.2, ge=0, le=3600, description="Wait after the first failed attempt.")
    multiplier: float = Field(2.0, ge=1, le=100, description="Growth factor of the wait per attempt.")
    max_delay_s: float = Field(5.0, ge=0, le=3600, description="Cap on any single wait.")
    jitter: float = Field(
        0.5, ge=0, le=1, description="Fraction of the wait that may be randomly removed (0: none)."
    )

    @model_validator(mode="after")
    def _cap_not_below_base(self) -> RetryPolicy:
        if self.max_delay_s < self.base_delay_s:
            raise ValueError(
                f"max_delay_s ({self.max_delay_s}) must be >= base_delay_s ({self.base_delay_s})"
            )
        return self

    def nominal_delay_s(self, attempt: int) -> float:
        """Wait after failed attempt `attempt` (1-based) before jitter."""
        if attempt < 1:
            raise ValueError(f"attempt must be >= 1, got {attempt}")
        exponent = attempt - 1
        if self.multiplier > 1 and self.base_delay_s > 0:
            # Beyond the step that reaches the cap the result is the cap: stop the exponent there, so a
            # huge attempt number cannot overflow a float.
            steps_to_cap = math.log(self.max_delay_s / self.base_delay_s, self.multiplier)
            exponent = min(exponent, math.ceil(steps_to_cap))
        return float(min(self.max_delay_s, self.base_delay_s * self.multiplier**exponent))

    def delay_s(self, attempt: int, rng: random.Random | None = None) -> float:
        """Wait after failed attempt `attempt`, jitter applied (`rng` makes it reproducible)."""
        u = (rng or random).random()
        return self.nominal_delay_s(attempt) * (1.0 - self.jitter * u)

    def total_max_wait_s(self) -> float:
        """Longest a unit of work can spend waiting between its attempts (no jitter)."""
        return sum(self.nominal_delay_s(n) for n in range(1, self.max_attempts))


class RetriesExhausted(Exception):
    """The work failed on every attempt; `last_error` is the final failure, `attempts` how many ran."""

    def __init__(self, attempts: int, last_error: BaseException) -> None:
        super().__init__(f"failed after {attempts} attempt(s): {type(last_error).__name__}: {last_error}")
        self.attempts = attempts
        self.last_error = last_error


def call_with_retry(
    work: Callable[[], T],
    policy: RetryPolicy,
    *,
    should_stop: Callable[[], bool] = lambda: False,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
) -> tuple[T, int]:
    """Run `work` until it succeeds or `policy.max_attempts` ran; returns (result, attempts used).

    Raises RetriesExhausted when every attempt failed, or as soon as `should_stop()` turns true between
    attempts (a shutting-down consumer must not sit through a backoff).
    """
    last_error: BaseException | None = None
    for attempt in range(1, policy.max_attempts + 1):
        try:
            return work(), attempt
        except Exception as error:
            last_error = error
            if attempt == policy.max_attempts or should_stop():
                raise RetriesExhausted(attempt, error) from error
            sleep(policy.delay_s(attempt, rng))
    raise AssertionError("unreachable") from last_error
