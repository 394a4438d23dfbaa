"""An alias's weights: split by weight, sticky per key, and a weight change moves as few keys as it must."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deployments.routing_weights import RoutingWeights

KEYS = [f"user-{i}" for i in range(20_000)]


def test_keys_split_by_weight_within_one_point() -> None:
    weights = RoutingWeights({"a@1": 80, "a@2": 20})
    share = sum(weights.choose(k) == "a@2" for k in KEYS) / len(KEYS)
    assert abs(share - 0.20) < 0.01


def test_without_a_key_the_draw_is_weighted_random() -> None:
    weights, rng = RoutingWeights({"a@1": 3, "a@2": 1}), random.Random(7)
    share = sum(weights.choose(None, rng) == "a@2" for _ in range(20_000)) / 20_000
    assert abs(share - 0.25) < 0.015


def test_raising_the_canary_moves_users_only_onto_it() -> None:
    before = RoutingWeights({"a@1": 90, "a@2": 5, "a@3": 5})
    after = before.with_weight("a@3", 20)
    moved = [(before.choose(k), after.choose(k)) for k in KEYS if before.choose(k) != after.choose(k)]
    assert moved and all(new == "a@3" for _, new in moved)
    # Only about the share that must move: 20/115 - 5/100 = 12.4 % of users.
    assert abs(len(moved) / len(KEYS) - (20 / 115 - 5 / 100)) < 0.01


def test_a_weight_of_zero_moves_exactly_that_versions_users() -> None:
    before = RoutingWeights({"a@1": 50, "a@2": 50})
    after = before.with_weight("a@2", 0)
    assert all(after.choose(k) == "a@1" for k in KEYS[:2000])
    assert all(before.choose(k) == "a@1" for k in KEYS[:2000] if before.choose(k) == after.choose(k))


@pytest.mark.parametrize("bad", [{"a@1": 0}, {}, {"a@1": -1.0}, {"a@1": float("nan")}])
def test_invalid_weights_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RoutingWeights(bad)


@settings(max_examples=200, deadline=None)
@given(
    key=st.text(max_size=300),
    weights=st.dictionaries(
        st.text(min_size=1, max_size=40), st.floats(min_value=0, max_value=1e9), min_size=1, max_size=8
    ),
)
def test_any_key_gets_the_same_positive_weight_version_every_time(
    key: str, weights: dict[str, float]
) -> None:
    if not any(w > 0 for w in weights.values()):
        with pytest.raises(ValueError):
            RoutingWeights(weights)
        return
    policy = RoutingWeights(weights)
    chosen = policy.choose(key)
    assert weights[chosen] > 0 and RoutingWeights(dict(weights)).choose(key) == chosen
