"""Per-principal limits: requests and tokens per minute (token buckets) and a concurrency cap.

Where they hold: **per gateway replica**. Each replica keeps its own buckets in memory, so with N gateway
replicas a principal may get up to N times its limit in the worst case (Serve spreads requests over the
replicas, so in practice close to the limit once per replica is busy). A global limit needs a shared store
(Redis, PostgreSQL) on the hot path of every request; surge runs one gateway replica by default and leaves
that out. Size per-replica limits as `limit / gateway replicas`.

A 429 carries `Retry-After` (whole seconds until the bucket holds what the request needs) and OpenAI's
`x-ratelimit-*` headers; admitted requests carry the `x-ratelimit-*` headers too.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from deployments.openai_api import ApiError
from deployments.principal import Principal
from deployments.settings import LimitSettings, RateLimitSettings

FLOAT_TOLERANCE = 1e-9


@dataclass(frozen=True)
class TokenBucketPolicy:
    """A bucket of `capacity` that refills at `rate_per_s`; a request takes `cost` from it.

    `capacity = per_minute / 60 * burst_s`; a take succeeds while `level >= cost`; the level refills by
    `elapsed_s * rate_per_s` up to `capacity`. Tokens are charged after a generation ends, so the level
    may go negative; a bucket in debt admits nothing until it is back above zero.
    Worked example: 600 per minute with `burst_s = 1` -> rate 10/s, capacity 10. 50 requests in one
    instant: 10 pass, 40 get 429; after 0.3 s, 3 more pass. Offered 50/s for 20 s: 10 + 10 * 20 = 210 pass.
    `retry_after_s(cost)` = `(cost - level) / rate_per_s`: level -2.5 and cost 1 at 10/s -> 0.35 s.
    """

    per_minute: int
    burst_s: float

    @property
    def rate_per_s(self) -> float:
        return self.per_minute / 60.0

    @property
    def capacity(self) -> float:
        return max(1.0, self.rate_per_s * self.burst_s)


@dataclass
class TokenBucket:
    policy: TokenBucketPolicy
    level: float = field(init=False)
    updated: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.level = self.policy.capacity

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self.updated)
        self.level = min(self.policy.capacity, self.level + elapsed * self.policy.rate_per_s)
        self.updated = max(now, self.updated)

    def try_take(self, cost: float, now: float) -> bool:
        self._refill(now)
        # Tolerance for float time: 0.3 s at 10/s refills 2.9999999999999996 tokens on a monotonic clock.
        if self.level + FLOAT_TOLERANCE >= cost:
            self.level -= cost
            return True
        return False

    def charge(self, cost: float, now: float) -> None:
        self._refill(now)
        self.level -= cost

    def retry_after_s(self, cost: float) -> float:
        return max(0.0, (cost - self.level) / self.policy.rate_per_s)

    def reset_s(self) -> float:
        """Seconds until the bucket is full again."""
        return max(0.0, (self.policy.capacity - self.level) / self.policy.rate_per_s)


class PrincipalLimits:
    """One principal's buckets and in-flight count (guarded by the limiter's lock)."""

    def __init__(self, limits: LimitSettings) -> None:
        rpm, tpm = limits.requests_per_minute, limits.tokens_per_minute
        self.requests = TokenBucket(TokenBucketPolicy(rpm, limits.burst_s)) if rpm else None
        self.tokens = TokenBucket(TokenBucketPolicy(tpm, limits.burst_s)) if tpm else None
        self.max_concurrent = limits.max_concurrent
        self.in_flight = 0


@dataclass(frozen=True)
class Admission:
    """An admitted request: its rate-limit headers, `release()` when it ends, `spend_tokens(n)` on use."""

    headers: dict[str, str]
    release: Callable[[], None]
    spend_tokens: Callable[[int], None]


def _seconds(value: float) -> str:
    return f"{value:.3f}s"


class RateLimiter:
    """Admits or refuses each request of a principal (see the module docstring for what holds where)."""

    def __init__(self, settings: RateLimitSettings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._by_principal: dict[str, PrincipalLimits] = {}

    def limits_for(self, principal: Principal) -> LimitSettings:
        return self.settings.tenants.get(principal.tenant, self.settings.default)

    def _state(self, principal: Principal) -> PrincipalLimits:
        state = self._by_principal.get(principal.name)
        if state is None:
            state = self._by_principal[principal.name] = PrincipalLimits(self.limits_for(principal))
        return state

    def admit(self, principal: Principal) -> Admission:
        """Take one request (and check the token bucket is not in debt), or raise a 429."""
        with self._lock:
            state = self._state(principal)
            now = time.monotonic()
            headers = self._headers(state)
            refusal: tuple[str, float] | None = None
            if state.max_concurrent is not None and state.in_flight >= state.max_concurrent:
                refusal = (f"more than {state.max_concurrent} concurrent requests", 1.0)
            elif state.tokens is not None and state.tokens.try_take(0.0, now) is False:
                refusal = ("tokens per minute exceeded", state.tokens.retry_after_s(0.0))
            elif state.requests is not None and not state.requests.try_take(1.0, now):
                refusal = ("requests per minute exceeded", state.requests.retry_after_s(1.0))
            if refusal is not None:
                reason, wait_s = refusal
                headers["Retry-After"] = str(max(1, math.ceil(wait_s)))
                raise ApiError(
                    429,
                    f"rate limit for principal {principal.name!r}: {reason}; retry after "
                    f"{headers['Retry-After']} s",
                    error_type="rate_limit_error",
                    headers=headers,
                )
            state.in_flight += 1
            headers = self._headers(state)
        released = threading.Event()

        def release() -> None:
            if not released.is_set():
                released.set()
                with self._lock:
                    state.in_flight -= 1

        def spend_tokens(tokens: int) -> None:
            if state.tokens is not None and tokens > 0:
                with self._lock:
                    state.tokens.charge(float(tokens), time.monotonic())

        return Admission(headers=headers, release=release, spend_tokens=spend_tokens)

    @staticmethod
    def _headers(state: PrincipalLimits) -> dict[str, str]:
        headers: dict[str, str] = {}
        if state.requests is not None:
            headers["x-ratelimit-limit-requests"] = str(state.requests.policy.per_minute)
            headers["x-ratelimit-remaining-requests"] = str(max(0, math.floor(state.requests.level)))
            headers["x-ratelimit-reset-requests"] = _seconds(state.requests.reset_s())
        if state.tokens is not None:
            headers["x-ratelimit-limit-tokens"] = str(state.tokens.policy.per_minute)
            headers["x-ratelimit-remaining-tokens"] = str(max(0, math.floor(state.tokens.level)))
            headers["x-ratelimit-reset-tokens"] = _seconds(state.tokens.reset_s())
        return headers
