"""The no-op handler every hop benchmark serves: bare (uvicorn + FastAPI) and inside Serve deployments.

Replicas reserve a sliver of CPU (not Serve's default 1) so ten of them fit on a small node.

The same FastAPI route answers in both places, so the difference in latency is the serving layer.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from ray import serve
from ray.serve.handle import DeploymentHandle

app = FastAPI()


@app.get("/")
async def noop() -> dict[str, bool]:
    return {"ok": True}


@serve.deployment(max_ongoing_requests=256, ray_actor_options={"num_cpus": 0.05})
class Leaf:
    """The end of a handle chain: does nothing."""

    async def __call__(self) -> dict[str, bool]:
        return {"ok": True}


@serve.deployment(max_ongoing_requests=256, ray_actor_options={"num_cpus": 0.05})
class Relay:
    """One DeploymentHandle hop: forwards to the next deployment."""

    def __init__(self, downstream: DeploymentHandle) -> None:
        self.downstream = downstream

    async def __call__(self) -> Any:
        return await self.downstream.remote()


ingress_api = FastAPI()


@serve.deployment(max_ongoing_requests=256, ray_actor_options={"num_cpus": 0.05})
@serve.ingress(ingress_api)
class Ingress:
    """The HTTP ingress; with a downstream handle it adds hops, without it it is the no-op itself."""

    def __init__(self, downstream: DeploymentHandle | None = None) -> None:
        self.downstream = downstream

    @ingress_api.get("/")
    async def root(self) -> Any:
        if self.downstream is None:
            return {"ok": True}
        return await self.downstream.remote()


def chain(hops: int) -> serve.Application:
    """Ingress plus `hops` DeploymentHandle hops (0 = the ingress answers itself)."""
    if hops == 0:
        return Ingress.bind()  # type: ignore[attr-defined]
    node: serve.Application = Leaf.bind()  # type: ignore[attr-defined]
    for i in range(hops - 1):
        node = Relay.options(name=f"Relay{i + 1}").bind(node)  # type: ignore[attr-defined]
    return Ingress.bind(node)  # type: ignore[attr-defined]
