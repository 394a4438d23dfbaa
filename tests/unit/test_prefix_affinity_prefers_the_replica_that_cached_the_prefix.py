"""Prefix-cache affinity (`deployments.prefix_affinity`): a prompt sharing a long prefix with earlier ones
is sent where they went, unless load is imbalanced or the shared prefix is short; prompts are untrusted
input, so their handling is fuzzed."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deployments.prefix_affinity import MAX_BLOCKS_PER_PROMPT, PrefixAffinityPolicy, PrefixIndex, prompt_text
from deployments.settings import AppSettings, LLMSettings

SYSTEM = "You are the support assistant of ACME. Answer briefly and cite the manual. " * 8  # 600 chars
POLICY = PrefixAffinityPolicy(block_chars=64, min_match_chars=128, imbalance_threshold=4)


def _chat(*turns: str) -> dict[str, Any]:
    return {
        "messages": [{"role": "system", "content": SYSTEM}, *({"role": "user", "content": t} for t in turns)]
    }


def test_a_follow_up_turn_matches_the_replica_that_served_the_conversation() -> None:
    index = PrefixIndex(block_chars=64)
    first = prompt_text([_chat("My router blinks red.")])
    index.record(first, "A")
    index.record(prompt_text([{"prompt": "something else entirely " * 20}]), "B")
    follow_up = prompt_text([_chat("My router blinks red.", "It still blinks after a reboot.")])
    matches = index.match(follow_up, ["A", "B"])
    assert matches["A"] == len(first) // 64
    assert matches["B"] == 0
    assert POLICY.choose(matches, {"A": 2, "B": 0}) == ["A"]


def test_a_shared_system_prompt_matches_every_replica_that_saw_it_least_loaded_first() -> None:
    index = PrefixIndex(block_chars=64)
    index.record(prompt_text([_chat("question one")]), "A")
    index.record(prompt_text([_chat("question two")]), "B")
    matches = index.match(prompt_text([_chat("question three")]), ["A", "B", "C"])
    assert matches["A"] == matches["B"] > 0 and matches["C"] == 0
    assert POLICY.choose(matches, {"A": 3, "B": 1, "C": 0}) == ["B", "A"]


def test_imbalanced_load_falls_back_to_power_of_two() -> None:
    assert POLICY.choose({"A": 10, "B": 0}, {"A": 7, "B": 2}) is None
    assert POLICY.choose({"A": 10, "B": 0}, {"A": 6, "B": 2}) == ["A"]  # difference 4 is not above 4


def test_a_short_shared_prefix_is_not_worth_a_detour() -> None:
    assert POLICY.choose({"A": 1, "B": 0}, {"A": 0, "B": 0}) is None  # 64 chars < 128
    assert POLICY.choose({"A": 2, "B": 0}, {"A": 0, "B": 0}) == ["A"]


def test_unknown_queue_lengths_neither_block_affinity_nor_come_first() -> None:
    assert POLICY.choose({"A": 5, "B": 5}, {"A": None, "B": 3}) == ["B", "A"]


def test_a_dead_replica_is_forgotten() -> None:
    index = PrefixIndex(block_chars=64)
    text = prompt_text([_chat("hello")])
    index.record(text, "A")
    index.forget("A")
    assert index.match(text, ["A"]) == {"A": 0}
    assert len(index) == 0


def test_the_policy_rejects_inconsistent_values() -> None:
    with pytest.raises(ValueError, match="min_match_chars"):
        PrefixAffinityPolicy(block_chars=64, min_match_chars=32)
    with pytest.raises(ValueError, match="imbalance_threshold"):
        PrefixAffinityPolicy(imbalance_threshold=-1)


def test_prefix_affinity_is_selected_through_serves_request_router_config() -> None:
    from ray.serve.config import RequestRouterConfig

    from deployments.prefix_affinity_router import PrefixAffinityRouter

    llm = LLMSettings(request_router="prefix_affinity", prefix_affinity={"imbalance_threshold": 2})
    config = RequestRouterConfig(**llm.serve_options("LLMServer")["request_router_config"])
    assert config.get_request_router_class() is PrefixAffinityRouter
    assert config.request_router_kwargs["imbalance_threshold"] == 2
    assert "request_router_config" not in LLMSettings().serve_options("LLMServer")


def test_a_bad_router_setting_fails_at_load_naming_the_field() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="request_router"):
        AppSettings.model_validate({"llm": {"request_router": "round_robin"}})
    with pytest.raises(ValidationError, match="min_match_chars"):
        AppSettings.model_validate({"llm": {"prefix_affinity": {"block_chars": 128, "min_match_chars": 64}}})


# ------------------------------------------------------------------------------------- untrusted prompts

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=50),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(args=st.lists(_JSON, max_size=3))
def test_any_request_shape_gives_a_prompt_text_and_never_raises(args: list[Any]) -> None:
    assert isinstance(prompt_text(args), str)


@settings(max_examples=200, deadline=None)
@given(
    shared=st.text(max_size=600), a=st.text(max_size=200), b=st.text(max_size=200), block=st.integers(1, 64)
)
def test_a_match_counts_exactly_the_full_blocks_two_prompts_share(
    shared: str, a: str, b: str, block: int
) -> None:
    index = PrefixIndex(block_chars=block)
    index.record(shared + a, "A")
    matched = index.match(shared + b, ["A"])["A"]
    common = len(shared) + next(
        (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))
    )
    expected = min(common, len(shared + a), len(shared + b)) // block
    assert matched == min(expected, MAX_BLOCKS_PER_PROMPT)


@settings(max_examples=100, deadline=None)
@given(prompts=st.lists(st.text(min_size=0, max_size=400), max_size=30), cap=st.integers(1, 20))
def test_the_index_never_holds_more_blocks_than_its_bound(prompts: list[str], cap: int) -> None:
    index = PrefixIndex(block_chars=8, max_blocks=cap)
    for i, text in enumerate(prompts):
        index.record(text, i % 3)
        assert len(index) <= cap


@settings(max_examples=200, deadline=None)
@given(
    matches=st.dictionaries(st.sampled_from("ABCD"), st.integers(0, 50), min_size=1),
    loads=st.dictionaries(st.sampled_from("ABCD"), st.none() | st.integers(0, 40)),
)
def test_the_policy_only_prefers_the_best_matches_and_only_when_balanced(
    matches: dict[str, int], loads: dict[str, int | None]
) -> None:
    chosen = POLICY.choose(matches, loads)
    known = [q for q in loads.values() if q is not None]
    if chosen is None:
        return
    assert not known or max(known) - min(known) <= POLICY.imbalance_threshold
    assert {matches[r] for r in chosen} == {max(matches.values())}
    assert max(matches.values()) * POLICY.block_chars >= POLICY.min_match_chars


def test_the_generate_request_the_gateway_sends_reads_as_the_same_text_as_its_dict_form() -> None:
    # The gateway sends a validated GenerateRequest, not a dict: reading only dicts gave "" for every real
    # request, and the router silently fell back to power of two for all of them.
    from deployments.llm import GenerateRequest

    chat = _chat("My router blinks red.", "It still blinks after a reboot.")
    sent = GenerateRequest.model_validate({**chat, "max_tokens": 4})
    assert prompt_text([sent]) == prompt_text([chat]) != ""
    completion = GenerateRequest.model_validate({"prompt": SYSTEM, "max_tokens": 4})
    assert prompt_text([completion]) == SYSTEM
