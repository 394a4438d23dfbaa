"""Weighted, sticky choice of a model version for an alias: a small immutable policy value.

The choice is weighted rendezvous hashing (highest random weight). For a sticky key `k` (the request's
`user`, or its session header) and each version `v` with weight `w_v > 0`:

    u_v   = H(k, v) mapped into (0, 1)          (SHA-256, the same in every gateway replica and process)
    score = -w_v / ln(u_v)
    choice = the version with the highest score

Each version wins with probability `w_v / sum(w)`, a key always gets the same version while the weights
stay, and a weight change moves only the keys that must move: raising v's weight moves users only *to* v,
never between two other versions; setting a weight to 0 moves exactly that version's users. (A bucket
table would reshuffle users whenever the bucket boundaries shift.)

Worked example: weights `{a: 80, b: 20}`, a key with `u_a = 0.5`, `u_b = 0.9`:
score_a = -80 / ln 0.5 = 115.4; score_b = -20 / ln 0.9 = 189.8 -> `b`. Over many keys `a` wins 80 %.
Without a key (anonymous request) the choice is a plain weighted random draw.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType


@dataclass(frozen=True)
class RoutingWeights:
    """The weights of one alias: `name@version` -> weight >= 0, at least one positive."""

    weights: Mapping[str, float]
    _positive: tuple[tuple[str, float], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        frozen = MappingProxyType(dict(self.weights))
        for version, weight in frozen.items():
            if not math.isfinite(weight) or weight < 0:
                raise ValueError(f"weight of {version!r} must be a finite number >= 0, got {weight!r}")
        positive = tuple((v, float(w)) for v, w in sorted(frozen.items()) if w > 0)
        if not positive:
            raise ValueError("at least one version needs a positive weight")
        object.__setattr__(self, "weights", frozen)
        object.__setattr__(self, "_positive", positive)

    def share(self, version: str) -> float:
        """The expected share of requests `version` gets (0..1)."""
        total = sum(w for _, w in self._positive)
        return self.weights.get(version, 0.0) / total

    def choose(self, sticky_key: str | None, rng: random.Random | None = None) -> str:
        """The version for a request: sticky per key (rendezvous), weighted random without one."""
        if sticky_key is None:
            versions, weights = zip(*self._positive, strict=True)
            return (rng or random).choices(versions, weights=weights)[0]
        return max(self._positive, key=lambda vw: -vw[1] / math.log(_unit_hash(sticky_key, vw[0])))[0]

    def with_weight(self, version: str, weight: float) -> RoutingWeights:
        """A copy with one version's weight changed (e.g. a rollback sets the canary to 0)."""
        return replace(self, weights={**self.weights, version: weight})


def _unit_hash(key: str, version: str) -> float:
    """A uniform number in the open interval (0, 1), from key and version."""
    digest = hashlib.sha256(f"{key}\x00{version}".encode()).digest()
    return (int.from_bytes(digest[:8], "big") + 0.5) / 2.0**64
