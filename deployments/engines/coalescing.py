"""Coalescing streamed deltas: the first at once, later ones in batches by time or count.

Why: every delta the LLM stage yields is one Ray streaming item (an object put and a message to the
gateway) and then one SSE event (JSON encoding, an HTTP chunk, a client parse). At GPU rates (thousands of
tokens/s per replica) that per-token cost, not the engine, caps the stream; Ray Serve LLM batches its
stream for the same reason (`stream_batching_interval_ms`, 50 ms by default). Merged deltas keep the
contract of `GenerationDelta`: texts concatenate, token counts stay cumulative, the last carries
`finish_reason`, so what a client reassembles is unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass

from deployments.engines.base import GenerationDelta


@dataclass(frozen=True)
class CoalescePolicy:
    """When a held batch of deltas is sent: a small immutable value that validates itself.

    The first delta of a stream is sent at once (time to first token is never delayed). After it, deltas
    are held; the batch is sent when

        held_tokens >= max_tokens  or  now - first_held_at >= max_delay_s  or  the stream ended,

    where `held_tokens` is the growth of the cumulative `completion_tokens` since the last sent delta.
    `max_tokens == 1` or `max_delay_s == 0` sends every delta as it comes (coalescing off).

    Worked example: max_delay_s=0.05, max_tokens=16, an engine at 100 tokens/s per sequence (one token every
    10 ms) and 40 tokens: token 1 is sent at 0 ms; tokens 2-6 are held from 10 ms and sent when the 50 ms
    window closes at 60 ms; 7-11 at 110 ms, ...: about 1 + 8 messages instead of 40, each token at most
    50 ms late. At 1,000 tokens/s the count limit closes batches first (16 tokens every 16 ms): 1 + 3
    messages (16, 16, 7 tokens).
    """

    max_delay_s: float
    max_tokens: int

    def __post_init__(self) -> None:
        if not (0 <= self.max_delay_s <= 1):
            raise ValueError(f"max_delay_s must lie in [0, 1] seconds, got {self.max_delay_s}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")

    @property
    def enabled(self) -> bool:
        return self.max_tokens > 1 and self.max_delay_s > 0

    def should_send(self, held_tokens: int, held_for_s: float, ended: bool) -> bool:
        """The formula above, for a batch of `held_tokens` held for `held_for_s`."""
        return ended or held_tokens >= self.max_tokens or held_for_s >= self.max_delay_s


def merge(deltas: list[GenerationDelta]) -> GenerationDelta:
    """One delta standing for `deltas` in order: their texts joined, the last one's counts, finish and
    prefix-cache hits (every field but the text is the last delta's)."""
    if len(deltas) == 1:
        return deltas[0]
    return dataclasses.replace(deltas[-1], text="".join(d.text for d in deltas))


async def coalesced(
    deltas: AsyncIterator[GenerationDelta], policy: CoalescePolicy
) -> AsyncGenerator[GenerationDelta, None]:
    """`deltas` re-batched by `policy`. A reader task drains the engine into a buffer, so a slow engine is
    never waited on past the window (one timer per batch, not per token); closing this stream cancels the
    reader and closes `deltas` (which aborts the request in the engine)."""
    if not policy.enabled:
        async for delta in deltas:
            yield delta
        return
    loop = asyncio.get_running_loop()
    held: list[GenerationDelta] = []
    wake = asyncio.Event()
    state = _ReaderState()
    sent_tokens = 0

    def held_tokens() -> int:
        return held[-1].completion_tokens - sent_tokens if held else 0

    def window_closed() -> None:
        state.timer = None  # asyncio may fire a timer a clock tick early: the loop re-arms what is left
        wake.set()

    def from_batch(batch: list[GenerationDelta]) -> GenerationDelta:
        nonlocal sent_tokens
        if state.timer is not None:
            state.timer.cancel()
            state.timer = None
        sent_tokens = batch[-1].completion_tokens
        state.sent_first = True
        return merge(batch)

    async def read() -> None:
        try:
            async for delta in deltas:
                held.append(delta)
                if len(held) == 1:
                    state.first_held_at = loop.time()
                    if state.sent_first:
                        state.timer = loop.call_later(policy.max_delay_s, window_closed)
                if not state.sent_first or held_tokens() >= policy.max_tokens:
                    wake.set()
        except Exception as error:  # handed to the consumer, raised after what was held
            state.error = error
        finally:
            state.ended = True
            wake.set()

    reader = asyncio.ensure_future(read())
    try:
        while True:
            await wake.wait()
            wake.clear()
            if held and not state.sent_first:
                # The first delta goes alone and at once; anything that came with it opens a window.
                batch, held[:] = held[:1], held[1:]
                state.first_held_at = loop.time()
                yield from_batch(batch)
                wake.set()  # look at the rest (ended? enough tokens?) without waiting for news
            elif held and policy.should_send(held_tokens(), loop.time() - state.first_held_at, state.ended):
                batch, held[:] = list(held), []
                yield from_batch(batch)
            if held and state.timer is None and not state.ended:
                # Deltas arrived while a batch was being sent and no window is open for them yet.
                left = policy.max_delay_s - (loop.time() - state.first_held_at)
                state.timer = loop.call_later(max(left, 0.0), window_closed)
            if state.ended and not held:
                break
        if state.error is not None:
            raise state.error
    finally:
        if state.timer is not None:
            state.timer.cancel()
        if not reader.done():
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        aclose = getattr(deltas, "aclose", None)
        if aclose is not None:
            await aclose()


@dataclass
class _ReaderState:
    sent_first: bool = False
    ended: bool = False
    first_held_at: float = 0.0
    timer: asyncio.TimerHandle | None = None
    error: Exception | None = None
