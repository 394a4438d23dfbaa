"""The gateway replica's own cost meter: replica-seconds, GPU-seconds and idle-warm seconds like every stage.

The Embedder, Retriever and LLM mark themselves busy around each call they serve (`ReplicaMeter.busy`);
the gateway has no one method every request passes through, so a pure ASGI middleware marks it busy from
the moment an HTTP request enters until its response (a stream included) has been sent. Probes
(`/healthz`, `/readyz`) are not work: they do not end an idle-warm stretch, so a gateway that only
answers its kubelet still shows as idle warm (the gateway is kept at one replica: its idle seconds say
what that floor costs, not something scale to zero removes).

The gateway serves every model, so its meter is tagged with the app's first served model (the one the
usage records of its LLM requests name); per-model gateway cost is in `surge_cost_usd_total{stage="gateway"}`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from deployments.cost_metrics import ReplicaMeter

STAGE = "gateway"
PROBE_SUFFIXES = ("/healthz", "/readyz")


def start_gateway_meter(
    served_model: str, gpus: float, started_at: float, on_tick: Callable[[], None] | None = None
) -> ReplicaMeter:
    """The gateway replica's meter, counted as started now (its cold start is `now - started_at`);
    `on_tick` runs with every tick (the gateway republishes the stages' prices there)."""
    meter = ReplicaMeter(STAGE, served_model, gpus=gpus, started_at=started_at, on_tick=on_tick)
    meter.ready(time.time())
    return meter


class BusyWhileServing:
    """Pure ASGI middleware: the replica is busy while any non-probe HTTP request is in flight."""

    def __init__(self, app: Any, meter: ReplicaMeter) -> None:
        self.app = app
        self.meter = meter

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") != "http" or str(scope.get("path", "")).endswith(PROBE_SUFFIXES):
            await self.app(scope, receive, send)
            return
        self.meter.enter()
        try:
            await self.app(scope, receive, send)
        finally:
            self.meter.leave()
