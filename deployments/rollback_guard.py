"""The automatic rollback guard: watches every canary against its alias's primary and pulls it on a breach.

Fed by the outcome recorder (one call per finished generation, with its version, status and TTFT), it keeps
a sliding window per version and applies `RollbackPolicy` (formula and worked example there) each time a
canary finishes a request. On a breach it sets the canary's weight to 0 in the model router, at once and in
place, and publishes a `rollback` record to `model-events` naming the threshold breached.

Per gateway replica: each replica judges the traffic it saw (a shared store on the hot path would cost
more than it saves); with N replicas, each pulls the canary on its own evidence. A rollback lasts until the
next weight change from the serve config (the Gateway's `user_config`), which is where an operator undoes it.
"""

from __future__ import annotations

import logging
import time
from collections import deque

from deployments.model_events import ModelEventLog
from deployments.model_router import ModelRouter
from deployments.rollback_policy import RollbackPolicy

logger = logging.getLogger("ray.serve")


class RollbackGuard:
    def __init__(self, router: ModelRouter, events: ModelEventLog, policy: RollbackPolicy) -> None:
        self.router = router
        self.events = events
        self.policy = policy
        # version -> (finished_at, failed, ttft_s) of requests finished within the window.
        self._outcomes: dict[str, deque[tuple[float, bool, float | None]]] = {}

    def observe(self, version: str, status_code: int, ttft_s: float | None, now: float | None = None) -> None:
        """One finished request of `version` (a 5xx is a failure; 4xx and 499 are the caller's)."""
        if not version or not self.policy.enabled:
            return
        now = time.monotonic() if now is None else now
        window = self._outcomes.setdefault(version, deque())
        window.append((now, status_code >= 500, ttft_s))
        self._prune(now)
        for alias, route in list(self.router.aliases.items()):
            weights = route.weights.weights
            if weights.get(version, 0) <= 0:
                continue
            # The primary: the highest weight, the first listed on a tie (`max` keeps the first maximum).
            primary = max(weights, key=lambda v: weights[v])
            if version == primary:
                continue
            reason = self.policy.breached(self._summary(version), self._summary(primary))
            if reason is not None:
                self.roll_back(alias, version, reason)

    def roll_back(self, alias: str, version: str, reason: str) -> None:
        new_weights = self.router.set_weight(alias, version, 0.0)
        logger.warning("rollback guard: %s of alias %s set to weight 0: %s", version, alias, reason)
        self.events.publish(
            "rollback",
            actor="rollback-guard",
            reason=f"{version} {reason}",
            alias=alias,
            version=version,
            weights={alias: dict(new_weights.weights)},
        )
        self._outcomes.pop(version, None)

    def _prune(self, now: float) -> None:
        horizon = now - self.policy.window_s
        for window in self._outcomes.values():
            while window and window[0][0] < horizon:
                window.popleft()

    def _summary(self, version: str) -> tuple[int, int, float | None]:
        window = self._outcomes.get(version) or deque()
        # Requests that waited for a cold start carry no TTFT; too few TTFTs give no p95 (see the policy):
        # right after a canary woke from zero, one or two requests queued behind the wake would judge it.
        p95 = self.policy.ttft_p95([t for _, _, t in window if t is not None])
        return len(window), sum(1 for _, failed, _ in window if failed), p95
