"""When the rollback guard pulls a canary: a small, validated, immutable policy value.

Over the last `window_s` seconds, for a canary `c` (any other version with a positive weight) and the alias's
primary `p` (its highest weight; on a tie, the version listed first):

    err_x  = failed / finished requests of x            (a 5xx, or a stream that failed; 4xx are the caller's)
    p95_x  = 95th percentile (nearest rank: the ceil(0.95 m)-th fastest of m) of x's time to first token,
             over its requests that have one (those that waited for a cold start have none); none with
             fewer than max(min_samples, 20) of them: below 20 the nearest-rank p95 is the slowest single
             request, and one stall on shared cores would decide (CI, 2026-12-02: with min_samples 8, a
             just-woken 80/20 canary answered 12 of 500 users, all with 200, before it was pulled)
    breach = n_c >= min_samples and (
                 err_c - err_p > max_error_rate_increase                      (err_p = 0 below min_samples)
              or (n_p >= min_samples and p95_c > max_ttft_p95_ratio * p95_p))

Worked example (defaults: 60 s, 20 samples, +0.05, x2): the canary finished 25 requests, 5 failed (0.20);
the primary 400, 4 failed (0.01): 0.20 - 0.01 = 0.19 > 0.05 -> breach, the canary's weight becomes 0. With
no errors but TTFT p95 of 0.9 s against 0.3 s: 0.9 > 2 x 0.3 -> breach. A canary with 20 TTFTs, 19 of 0.3 s
and one stalled at 0.9 s, has a p95 of 0.3 s (the 19th fastest): no breach on one stall; on two, a breach.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from pydantic import Field

from surge_core.store_settings import StrictModel

# The fewest TTFTs whose nearest-rank p95 is not simply the slowest one (ceil(0.95 * 20) = 19 of 20).
MIN_P95_SAMPLES = 20


class RollbackPolicy(StrictModel):
    """The automatic rollback guard's thresholds (see the module docstring for the formula)."""

    enabled: bool = Field(True, description="Watch canaries and roll them back on a breach.")
    window_s: float = Field(60.0, gt=0, le=3600, description="Sliding window of finished requests.")
    min_samples: int = Field(
        20, ge=1, le=100_000, description="Canary requests in the window before judging."
    )
    max_error_rate_increase: float = Field(
        0.05, ge=0, le=1, description="Largest tolerated canary error rate above the primary's (absolute)."
    )
    max_ttft_p95_ratio: float = Field(
        2.0, ge=1, le=100, description="Largest tolerated canary TTFT p95 as a multiple of the primary's."
    )

    def breached(
        self, canary: tuple[int, int, float | None], primary: tuple[int, int, float | None]
    ) -> str | None:
        """Why the canary must go, or None. Each side is (finished, failed, ttft_p95 or None)."""
        n_c, failed_c, p95_c = canary
        n_p, failed_p, p95_p = primary
        if not self.enabled or n_c < self.min_samples:
            return None
        err_c = failed_c / n_c
        err_p = failed_p / n_p if n_p >= self.min_samples else 0.0
        if err_c - err_p > self.max_error_rate_increase:
            return (
                f"error rate {err_c:.2f} ({failed_c}/{n_c}) exceeds the primary's {err_p:.2f} by more than "
                f"{self.max_error_rate_increase:g} over {self.window_s:g} s"
            )
        comparable = n_p >= self.min_samples and p95_c is not None and p95_p is not None
        if comparable and p95_c > self.max_ttft_p95_ratio * p95_p:  # type: ignore[operator]
            return (
                f"TTFT p95 {p95_c:.3f} s exceeds {self.max_ttft_p95_ratio:g} x the primary's "
                f"{p95_p:.3f} s over {self.window_s:g} s"
            )
        return None

    def ttft_p95(self, ttfts: Sequence[float]) -> float | None:
        """The nearest-rank p95 of `ttfts`, or None with fewer than max(min_samples, 20) of them."""
        if len(ttfts) < max(self.min_samples, MIN_P95_SAMPLES):
            return None
        return sorted(ttfts)[math.ceil(0.95 * len(ttfts)) - 1]
