"""Prefix-cache affinity: which LLM replica most likely holds a prompt's prefix in its KV cache.

vLLM caches the KV blocks of prompts it has seen (automatic prefix caching) and reuses them for a later
prompt that starts the same way: multi-turn chats resend the whole conversation, and many requests share a
long system prompt. The cache is per replica, so the win only comes if the request lands where its prefix
was computed. Power of two (Serve's default) spreads a conversation over all replicas.

`PrefixIndex` remembers, per replica, which prompt prefixes it was sent, as chained hashes of fixed-size
character blocks (the idea of vLLM's block hashing, in characters because the router never tokenizes);
`PrefixAffinityPolicy` decides from the matches and the replicas' queue lengths. Both are plain values
with no Ray in them; `deployments.prefix_affinity_router` plugs them into Serve's `RequestRouter`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

# Longest prompt prefix looked at: bounds the router's work on a huge (untrusted) prompt. 256 blocks of
# 64 characters cover 16k characters, well beyond max_model_len on the CPU setups measured here.
MAX_BLOCKS_PER_PROMPT = 256
R = TypeVar("R", bound=Hashable)


@dataclass(frozen=True)
class PrefixAffinityPolicy:
    """Send a request to the replica holding the longest prefix of its prompt, unless load is imbalanced.

    With q(r) the queue length of candidate r (ongoing requests, as Serve reports them) and m(r) the number
    of leading `block_chars`-character blocks of the prompt that r was already sent:

    - if max q - min q > `imbalance_threshold`: no preference (power of two decides);
    - else if max m * block_chars < `min_match_chars`: no preference (nothing worth a detour);
    - else the replicas with the largest m, least loaded first.

    Example (block_chars 64, min_match_chars 128, imbalance_threshold 4): a 1,000-character prompt whose
    first 640 characters replica A served before (m = 10) and B never did (m = 0): queue lengths A 3, B 1
    -> [A]; A 7, B 1 (difference 6 > 4) -> None (power of two); m(A) = 1 (64 < 128) -> None.
    """

    block_chars: int = 64
    min_match_chars: int = 128
    imbalance_threshold: int = 4

    def __post_init__(self) -> None:
        if self.block_chars < 1:
            raise ValueError(f"block_chars must be >= 1, got {self.block_chars}")
        if self.min_match_chars < self.block_chars:
            raise ValueError(
                f"min_match_chars ({self.min_match_chars}) must be >= block_chars ({self.block_chars})"
            )
        if self.imbalance_threshold < 0:
            raise ValueError(f"imbalance_threshold must be >= 0, got {self.imbalance_threshold}")

    def choose(self, matches: Mapping[R, int], queue_lens: Mapping[R, int | None]) -> list[R] | None:
        """The preferred replicas (best first), or None to leave the choice to power of two."""
        known = [q for q in queue_lens.values() if q is not None]
        if known and max(known) - min(known) > self.imbalance_threshold:
            return None
        best = max(matches.values(), default=0)
        if best * self.block_chars < self.min_match_chars:
            return None
        winners = [r for r, m in matches.items() if m == best]
        return sorted(winners, key=lambda r: (queue_lens.get(r) is None, queue_lens.get(r) or 0))


class PrefixIndex:
    """Chained block hashes of the prompts sent to each replica, bounded to `max_blocks` (least recently
    used dropped first). Block i's key is hash(key of block i-1, text of block i), so a key stands for the
    whole prefix up to it, and a match is the run of leading keys a replica holds."""

    def __init__(self, block_chars: int = 64, max_blocks: int = 100_000) -> None:
        if block_chars < 1 or max_blocks < 1:
            raise ValueError("block_chars and max_blocks must be >= 1")
        self.block_chars = block_chars
        self.max_blocks = max_blocks
        self._holders: OrderedDict[int, set[Hashable]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._holders)

    def _keys(self, text: str) -> Iterator[int]:
        key = 0
        size = self.block_chars
        for start in range(0, min(len(text) // size, MAX_BLOCKS_PER_PROMPT) * size, size):
            key = hash((key, text[start : start + size]))
            yield key

    def record(self, text: str, replica: Hashable) -> None:
        """`replica` was sent `text`: it now holds every full block of it."""
        for key in self._keys(text):
            holders = self._holders.get(key)
            if holders is None:
                holders = self._holders[key] = set()
            else:
                self._holders.move_to_end(key)
            holders.add(replica)
        while len(self._holders) > self.max_blocks:
            self._holders.popitem(last=False)

    def match(self, text: str, candidates: Iterable[R]) -> dict[R, int]:
        """For each candidate, how many leading blocks of `text` it holds."""
        counts = dict.fromkeys(candidates, 0)
        alive = set(counts)
        for depth, key in enumerate(self._keys(text), start=1):
            alive &= self._holders.get(key, set())
            if not alive:
                break
            for replica in alive:
                counts[replica] = depth
        return counts

    def forget(self, replica: Hashable) -> None:
        """A replica is gone: its cache with it."""
        for key in [k for k, holders in self._holders.items() if replica in holders]:
            holders = self._holders[key]
            holders.discard(replica)
            if not holders:
                del self._holders[key]


def _field(item: Any, name: str) -> Any:
    return item.get(name) if isinstance(item, Mapping) else getattr(item, name, None)


def prompt_text(args: Sequence[Any]) -> str:
    """The text a request's KV cache is built from: `prompt`, or the chat messages in order (role and
    content), from the first positional argument of `LLMServer.generate`: the `GenerateRequest` the gateway
    sends, or a request dict. Anything else -- a malformed or foreign request -- gives "" (no preference),
    never an error.

    Both forms matter: when the gateway began sending the validated `GenerateRequest` instead of a dict
    (issue 13, "don't validate the LLM request twice"), a dict-only reading gave "" for every real request,
    so the router always fell back to power of two and both routers measured the same hit rate (0.657 and
    0.660 in the 2026-12-02 run of benchmarks/prefix_affinity.py)."""
    request = args[0] if args else None
    if request is None or isinstance(request, (str, bytes)):
        return ""
    prompt = _field(request, "prompt")
    if isinstance(prompt, str):
        return prompt
    messages = _field(request, "messages")
    if not isinstance(messages, list):
        return ""
    parts = []
    for message in messages:
        content = _field(message, "content")
        if isinstance(content, str):
            parts.append(f"<{_field(message, 'role')}>{content}\n")
    return "".join(parts)
