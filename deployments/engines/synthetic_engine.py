"""A synthetic engine **for benchmarks only**: it emits tokens at a set rate and computes nothing.

It measures what serving costs on top of an engine: with no model in the way, the rate at which clients
receive tokens through surge, divided by the rate this engine produces them in-process, is the relay's
efficiency (`benchmarks/stream_relay.py`). Never a default: `llm.engine` must name it explicitly.

Behaviour, through the same interface as the real engines:
- Each sequence emits `synthetic_output_tokens` tokens (capped by the request's `max_tokens`, finish
  "length"), one `GenerationDelta` per token, on an absolute schedule: token i (from 0) is due at
  `start + (i + 1) / synthetic_tokens_per_s`, one engine step per token, the first included (so the
  in-process time to first token is one step, as with a real engine's prefill, not zero). A consumer that
  falls behind gets the late tokens back to back, so the engine's own rate does not drift down with the
  event loop's delays. E.g. 100 tokens/s and 50 tokens: due at 10 ms, 20 ms, ..., 500 ms.
- `start()` takes `synthetic_load_s` (0 by default): `benchmarks/trace_replay.py` sets the load time it
  measured for the real tiny engine, so Serve's cold starts are real and only the model load is stood in for.
- A token is one word and a space (`"w17 "`); the prompt is counted in whitespace-separated words. There is
  no tokenizer, so there are no special tokens to neutralise.
- A stop string ends the sequence with finish "stop" (the stop string is not returned); `abort()` ends it
  with finish "abort"; closing the stream early frees the slot.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from deployments.engines.base import GenerationDelta, InvalidRequestError, LLMEngine, SamplingSettings

if TYPE_CHECKING:
    from deployments.settings import LLMSettings


def synthetic_token(index: int) -> str:
    """The text of token `index`: a short word and a space, e.g. `synthetic_token(17) == "w17 "`."""
    return f"w{index} "


class SyntheticEngine(LLMEngine):
    """Tokens at `settings.synthetic_tokens_per_s` per sequence, no model: a benchmark's stand-in engine."""

    needs_model_files: ClassVar[bool] = False

    def __init__(self, settings: LLMSettings, model_path: Path) -> None:
        super().__init__(settings, model_path)
        self._specials = ()  # no tokenizer, so no special tokens to break up
        self._running: set[str] = set()
        self._aborted: set[str] = set()
        self._interval_s = 1.0 / settings.synthetic_tokens_per_s

    async def start(self) -> None:
        # A replay gives it the load time measured for a real engine, so cold starts cost what they would.
        if self.settings.synthetic_load_s:
            await asyncio.sleep(self.settings.synthetic_load_s)

    def render_chat(self, messages: list[dict[str, str]]) -> str:
        return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant: "

    async def generate(
        self, prompt: str, sampling: SamplingSettings, request_id: str
    ) -> AsyncIterator[GenerationDelta]:
        if request_id in self._running:
            raise InvalidRequestError(f"request_id {request_id!r} is already running")
        prompt_tokens = len(prompt.split())
        if prompt_tokens >= self.settings.max_model_len:
            raise InvalidRequestError(
                f"prompt is {prompt_tokens} tokens; llm.max_model_len is {self.settings.max_model_len}"
            )
        length = min(self.settings.synthetic_output_tokens, sampling.max_tokens)
        self._running.add(request_id)
        started = time.monotonic()
        text = ""
        try:
            for index in range(length):
                delay = started + (index + 1) * self._interval_s - time.monotonic()
                # sleep(0) when late still yields, as a real engine's output handler does between steps.
                await asyncio.sleep(max(delay, 0.0))
                if request_id in self._aborted:
                    yield GenerationDelta("", "abort", prompt_tokens, index)
                    return
                token = synthetic_token(index)
                stop_at = _first_stop(text + token, sampling.stop)
                if stop_at is not None:
                    yield GenerationDelta(
                        (text + token)[len(text) : stop_at], "stop", prompt_tokens, index + 1
                    )
                    return
                text += token
                finish = "length" if index == length - 1 else None
                yield GenerationDelta(token, finish, prompt_tokens, index + 1)
        finally:
            self._running.discard(request_id)
            self._aborted.discard(request_id)

    async def abort(self, request_id: str) -> None:
        if request_id in self._running:
            self._aborted.add(request_id)

    def running_requests(self) -> int:
        return len(self._running)

    async def check_health(self) -> None:
        return None

    async def shutdown(self) -> None:
        return None


def _first_stop(text: str, stops: tuple[str, ...]) -> int | None:
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(found) if found else None
