"""The LLM stage's stream coalescing (`deployments.engines.coalescing`): the first delta at once, later ones
batched by time or count, the text and the counts unchanged."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deployments.engines.base import GenerationDelta
from deployments.engines.coalescing import CoalescePolicy, coalesced, merge
from deployments.settings import LLMSettings

ON = CoalescePolicy(max_delay_s=0.05, max_tokens=4)


def deltas_of(texts: list[str], finish: str = "length") -> list[GenerationDelta]:
    return [
        GenerationDelta(text, finish if i == len(texts) - 1 else None, 7, i + 1)
        for i, text in enumerate(texts)
    ]


async def source(items: list[GenerationDelta], gaps_s: list[float]) -> AsyncIterator[GenerationDelta]:
    for item, gap in zip(items, gaps_s, strict=True):
        await asyncio.sleep(gap)
        yield item


async def collect(stream: AsyncIterator[GenerationDelta]) -> list[GenerationDelta]:
    return [delta async for delta in stream]


@settings(max_examples=60, deadline=None)
@given(
    texts=st.lists(st.text(max_size=5), min_size=1, max_size=40),
    gaps=st.lists(st.sampled_from([0.0, 0.0, 0.0005, 0.002]), min_size=40, max_size=40),
    max_tokens=st.integers(1, 8),
    max_delay_ms=st.sampled_from([0.0, 1.0, 5.0]),
)
def test_coalesced_deltas_concatenate_to_the_original_text_with_the_last_counts_and_finish(
    texts: list[str], gaps: list[float], max_tokens: int, max_delay_ms: float
) -> None:
    items = deltas_of(texts)
    policy = CoalescePolicy(max_delay_s=max_delay_ms / 1000, max_tokens=max_tokens)
    out = asyncio.run(collect(coalesced(source(items, gaps[: len(items)]), policy)))
    assert "".join(d.text for d in out) == "".join(texts)
    assert out[-1].finish_reason == "length" and out[-1].completion_tokens == len(texts)
    assert all(d.finish_reason is None for d in out[:-1])
    # The first delta is never merged with later ones: it goes alone, as the engine produced it.
    assert out[0] == items[0]
    counts = [d.completion_tokens for d in out]
    assert counts == sorted(counts) and len(set(counts)) == len(counts)


def test_the_first_delta_arrives_while_the_engine_is_still_generating() -> None:
    async def scenario() -> tuple[float, float]:
        released = asyncio.Event()

        async def engine() -> AsyncIterator[GenerationDelta]:
            yield GenerationDelta("a", None, 1, 1)
            await released.wait()  # the rest comes only when the test says so
            yield GenerationDelta("b", "stop", 1, 2)

        stream = coalesced(engine(), CoalescePolicy(max_delay_s=1.0, max_tokens=100))
        started = time.monotonic()
        first = await asyncio.wait_for(stream.__anext__(), timeout=0.5)
        waited = time.monotonic() - started
        assert first.text == "a"
        released.set()
        rest = [d async for d in stream]
        assert [d.text for d in rest] == ["b"]
        return waited, 0.0

    waited, _ = asyncio.run(scenario())
    assert waited < 0.1


def test_later_deltas_are_sent_in_batches_by_count_when_the_engine_is_fast() -> None:
    items = deltas_of([f"t{i} " for i in range(9)])
    out = asyncio.run(collect(coalesced(source(items, [0.0] * 9), ON)))
    assert [d.completion_tokens for d in out] == [1, 5, 9]


def test_a_held_batch_is_sent_when_its_window_closes_even_if_the_engine_goes_quiet() -> None:
    async def scenario() -> float:
        async def engine() -> AsyncIterator[GenerationDelta]:
            yield GenerationDelta("a", None, 1, 1)
            yield GenerationDelta("b", None, 1, 2)
            await asyncio.sleep(10)  # quiet: "b" must not wait for this
            yield GenerationDelta("c", "stop", 1, 3)

        stream = coalesced(engine(), CoalescePolicy(max_delay_s=0.05, max_tokens=100))
        await stream.__anext__()
        started = time.monotonic()
        second = await asyncio.wait_for(stream.__anext__(), timeout=2)
        assert second.text == "b"
        await stream.aclose()
        return time.monotonic() - started

    assert asyncio.run(scenario()) < 1.0


def test_an_engine_error_is_raised_after_the_deltas_before_it() -> None:
    async def engine() -> AsyncIterator[GenerationDelta]:
        yield GenerationDelta("a", None, 1, 1)
        yield GenerationDelta("b", None, 1, 2)
        raise RuntimeError("engine died")

    async def scenario() -> list[str]:
        seen: list[str] = []
        with pytest.raises(RuntimeError, match="engine died"):
            async for delta in coalesced(engine(), ON):
                seen.append(delta.text)
        return seen

    assert "".join(asyncio.run(scenario())) == "ab"


def test_closing_the_coalesced_stream_closes_the_engine_stream() -> None:
    closed = asyncio.Event()

    async def engine() -> AsyncIterator[GenerationDelta]:
        try:
            for i in range(1000):
                yield GenerationDelta("x", None, 1, i + 1)
                await asyncio.sleep(0.001)
        finally:
            closed.set()

    async def scenario() -> bool:
        stream = coalesced(engine(), ON)
        await stream.__anext__()
        await stream.aclose()
        return closed.is_set()

    assert asyncio.run(scenario())


@pytest.mark.parametrize("policy", [CoalescePolicy(0.0, 16), CoalescePolicy(0.05, 1)])
def test_a_zero_window_or_one_token_batches_pass_every_delta_through(policy: CoalescePolicy) -> None:
    items = deltas_of(["a", "b", "c"])
    assert not policy.enabled
    assert asyncio.run(collect(coalesced(source(items, [0.0] * 3), policy))) == items


def test_the_send_rule_follows_the_formula() -> None:
    assert ON.should_send(held_tokens=4, held_for_s=0.0, ended=False)
    assert ON.should_send(held_tokens=1, held_for_s=0.05, ended=False)
    assert ON.should_send(held_tokens=1, held_for_s=0.0, ended=True)
    assert not ON.should_send(held_tokens=3, held_for_s=0.049, ended=False)


def test_merge_joins_texts_and_keeps_the_last_counts_and_finish() -> None:
    merged = merge(deltas_of(["a", "b", "c"], finish="stop"))
    assert merged == GenerationDelta("abc", "stop", 7, 3)


def test_merge_keeps_the_prefix_cache_hits_the_engine_reported() -> None:
    deltas = [
        GenerationDelta("a", None, 5, 1, cached_tokens=4),
        GenerationDelta("b", "stop", 5, 2, cached_tokens=4),
    ]
    assert merge(deltas) == GenerationDelta("ab", "stop", 5, 2, cached_tokens=4)


@pytest.mark.parametrize(
    ("kwargs", "message"), [({"max_delay_s": -0.1}, "max_delay_s"), ({"max_tokens": 0}, "max_tokens")]
)
def test_an_impossible_policy_is_refused(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CoalescePolicy(**{"max_delay_s": 0.05, "max_tokens": 4, **kwargs})  # type: ignore[arg-type]


def test_coalescing_is_on_by_default_and_its_settings_name_the_field_when_bad() -> None:
    settings_ = LLMSettings()
    assert settings_.stream_coalesce_ms > 0 and settings_.stream_coalesce_max_tokens > 1
    with pytest.raises(ValueError, match="stream_coalesce_ms"):
        LLMSettings(stream_coalesce_ms=-1)
    with pytest.raises(ValueError, match="stream_coalesce_max_tokens"):
        LLMSettings(stream_coalesce_max_tokens=0)
