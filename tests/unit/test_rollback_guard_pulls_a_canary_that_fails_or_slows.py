"""The rollback guard: a canary worse than its primary over the window loses its weight, with a reason."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deployments.model_registry import AliasSettings
from deployments.model_router import ModelRouter, ServedVersion
from deployments.rollback_guard import RollbackGuard
from deployments.rollback_policy import RollbackPolicy

POLICY = RollbackPolicy(window_s=60, min_samples=10, max_error_rate_increase=0.05, max_ttft_p95_ratio=2.0)


class Events:
    def __init__(self) -> None:
        self.published: list[dict[str, Any]] = []

    def publish(self, event: str, **fields: Any) -> None:
        self.published.append({"event": event, **fields})


def _guard(policy: RollbackPolicy = POLICY) -> tuple[RollbackGuard, ModelRouter, Events]:
    versions = [ServedVersion(k, k.split("@")[0], None, 512) for k in ("m@1", "m@2")]  # type: ignore[arg-type]
    router = ModelRouter(versions, "emb", {"chat": AliasSettings(weights={"m@1": 90, "m@2": 10})})
    events = Events()
    return RollbackGuard(router, events, policy), router, events  # type: ignore[arg-type]


def test_a_canary_failing_more_than_the_primary_is_set_to_weight_zero_and_the_event_says_why() -> None:
    guard, router, events = _guard()
    for i in range(40):
        guard.observe("m@1", 200, 0.1, now=i * 0.1)
    for i in range(9):
        guard.observe("m@2", 502, None, now=5 + i * 0.1)
    assert router.aliases["chat"].weights.weights["m@2"] == 10  # 9 samples: below min_samples
    guard.observe("m@2", 502, None, now=6)
    assert router.aliases["chat"].weights.weights["m@2"] == 0
    (event,) = events.published
    assert event["event"] == "rollback" and event["alias"] == "chat" and event["version"] == "m@2"
    assert "error rate 1.00 (10/10)" in event["reason"] and event["actor"] == "rollback-guard"


def test_a_canary_with_twice_the_primarys_ttft_p95_is_rolled_back() -> None:
    guard, router, events = _guard()
    for i in range(20):
        guard.observe("m@1", 200, 0.1, now=i * 0.1)
        guard.observe("m@2", 200, 0.5, now=i * 0.1)
    assert router.aliases["chat"].weights.weights["m@2"] == 0
    assert "TTFT p95 0.500 s exceeds 2 x the primary's 0.100 s" in events.published[0]["reason"]


def test_a_canary_just_woken_from_zero_is_not_judged_on_a_few_ttfts_queued_behind_its_cold_start() -> None:
    guard, router, events = _guard()
    for i in range(20):
        guard.observe("m@1", 200, 0.1, now=i * 0.1)
    for i in range(12):  # waited for the canary's replica to start: no TTFT to judge
        guard.observe("m@2", 200, None, now=3 + i * 0.1)
    for i in range(19):  # slow, but fewer than 20 TTFTs: their p95 would be the slowest one alone
        guard.observe("m@2", 200, 0.5, now=5 + i * 0.01)
    assert router.aliases["chat"].weights.weights["m@2"] == 10 and not events.published
    guard.observe("m@2", 200, 0.5, now=6)  # the 20th TTFT: now it is judged
    assert router.aliases["chat"].weights.weights["m@2"] == 0


def test_one_stalled_request_among_twenty_does_not_pull_a_canary_and_two_do() -> None:
    guard, router, events = _guard()
    for i in range(40):
        guard.observe("m@1", 200, 0.1, now=i * 0.1)
    for i in range(19):
        guard.observe("m@2", 200, 0.1, now=4 + i * 0.1)
    guard.observe("m@2", 200, 2.0, now=6)  # one stall on shared cores: the 20th, the slowest
    assert router.aliases["chat"].weights.weights["m@2"] == 10 and not events.published
    guard.observe("m@2", 200, 2.0, now=6.1)  # a second one: the p95 (20th fastest of 21) is a stall
    assert router.aliases["chat"].weights.weights["m@2"] == 0
    assert "TTFT p95 2.000 s" in events.published[0]["reason"]


@given(st.lists(st.floats(0, 100, allow_nan=False), min_size=1, max_size=200))
def test_the_ttft_p95_is_a_sample_with_at_least_95_percent_at_or_below_it(ttfts: list[float]) -> None:
    p95 = POLICY.ttft_p95(ttfts)
    if len(ttfts) < 20:
        assert p95 is None
        return
    assert p95 in ttfts
    assert sum(t <= p95 for t in ttfts) >= 0.95 * len(ttfts) > sum(t < p95 for t in ttfts)


def test_client_errors_and_old_failures_outside_the_window_do_not_count() -> None:
    guard, router, events = _guard()
    for i in range(9):
        guard.observe("m@2", 502, None, now=i)  # long ago (and too few to judge then)
    for i in range(20):
        guard.observe("m@1", 200, 0.1, now=1000 + i)
        guard.observe("m@2", 400 if i % 2 else 200, 0.1, now=1000 + i)
    assert router.aliases["chat"].weights.weights["m@2"] == 10 and events.published == []


def test_the_primary_is_never_rolled_back() -> None:
    guard, router, events = _guard()
    for i in range(30):
        guard.observe("m@1", 500, None, now=i)
    assert router.aliases["chat"].weights.weights["m@1"] == 90 and events.published == []


@pytest.mark.parametrize(
    "field, value",
    [("window_s", 0), ("min_samples", 0), ("max_error_rate_increase", 2), ("max_ttft_p95_ratio", 0.5)],
)
def test_the_policy_refuses_impossible_thresholds(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        RollbackPolicy.model_validate({field: value})


def test_on_equal_weights_the_first_listed_version_is_the_primary() -> None:
    guard, router, events = _guard()
    router.set_aliases({"chat": AliasSettings(weights={"m@2": 50, "m@1": 50})})
    for i in range(20):
        guard.observe("m@2", 200, 0.1, now=i)
        guard.observe("m@1", 502, None, now=i)
    assert router.aliases["chat"].weights.weights["m@1"] == 0 and events.published[0]["version"] == "m@1"
