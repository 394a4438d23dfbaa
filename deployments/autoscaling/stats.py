"""What a replica reports to its autoscaling policy through Serve's `record_autoscaling_stats` hook.

Serve calls `record_autoscaling_stats()` on each replica every metrics interval and hands the values to the
policy as `ctx.aggregated_metrics[name][replica_id]`, averaged over `look_back_period_s`. The names are
shared here so the LLM replica and `serve_policy` cannot drift apart.
"""

from __future__ import annotations

import math
import time
from collections import deque

WAITING = "surge_waiting_requests"
RUNNING = "surge_running_requests"
TTFT_P90 = "surge_ttft_p90_s"
# Requests a replica has started since it started (a counter): the policy reads a change as an arrival, which
# a sampled in-flight count misses when requests are shorter than the metrics interval.
STARTED = "surge_requests_started"


class RollingQuantile:
    """The q-quantile of the samples of the last `window_s` seconds (at most `max_samples` kept).

    Nearest-rank: with samples 0.1 .. 1.0 (ten) and q = 0.9 -> 0.9. Empty (or all expired) -> None, so a
    replica that served nothing lately says nothing about latency.
    """

    def __init__(self, q: float = 0.9, window_s: float = 60.0, max_samples: int = 1024) -> None:
        if not 0 < q <= 1 or window_s <= 0 or max_samples < 1:
            raise ValueError("need 0 < q <= 1, window_s > 0 and max_samples >= 1")
        self.q = q
        self.window_s = window_s
        self._samples: deque[tuple[float, float]] = deque(maxlen=max_samples)

    def add(self, value: float, now: float | None = None) -> None:
        self._samples.append((time.monotonic() if now is None else now, value))

    def value(self, now: float | None = None) -> float | None:
        now = time.monotonic() if now is None else now
        while self._samples and now - self._samples[0][0] > self.window_s:
            self._samples.popleft()
        if not self._samples:
            return None
        ordered = sorted(v for _, v in self._samples)
        return ordered[max(0, math.ceil(self.q * len(ordered)) - 1)]


class GenerationStats:
    """Counts of a replica's generations (waiting for a first token, running) and its rolling TTFT p90."""

    def __init__(self, window_s: float = 60.0) -> None:
        self.waiting = 0
        self.running = 0
        self.started_total = 0
        self.ttft = RollingQuantile(0.9, window_s)

    def started(self) -> None:
        self.waiting += 1
        self.started_total += 1

    def first_token(self, ttft_s: float) -> None:
        self.waiting -= 1
        self.running += 1
        self.ttft.add(ttft_s)

    def finished(self, had_first_token: bool) -> None:
        if had_first_token:
            self.running -= 1
        else:
            self.waiting -= 1

    def report(self) -> dict[str, float]:
        """The dict `record_autoscaling_stats` returns (TTFT left out until there is a sample)."""
        stats = {
            WAITING: float(self.waiting),
            RUNNING: float(self.running),
            STARTED: float(self.started_total),
        }
        p90 = self.ttft.value()
        if p90 is not None:
            stats[TTFT_P90] = p90
        return stats
