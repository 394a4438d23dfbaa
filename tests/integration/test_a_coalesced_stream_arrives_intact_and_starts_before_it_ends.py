"""Through the real app (Serve proxy -> Gateway -> LLMServer on vLLM), a streamed chat whose deltas the LLM
stage coalesces still arrives intact as OpenAI chunks the official client parses, and its first chunk
comes while the generation is still running."""

from __future__ import annotations

import time

import openai
import pytest

from tests.fixtures_serve import SurgeApp

pytestmark = pytest.mark.integration

MESSAGES = [{"role": "user", "content": "Tell me a long story about the sea."}]


def test_a_streamed_chat_equals_the_unstreamed_answer_and_its_first_chunk_comes_before_the_end(
    surge_app: SurgeApp,
) -> None:
    client = openai.OpenAI(base_url=f"{surge_app.base_url}/v1", api_key=surge_app.api_key, timeout=300)
    whole = client.chat.completions.create(
        model="tiny-llama",
        messages=MESSAGES,
        max_tokens=64,
        temperature=0,  # type: ignore[arg-type]
    )
    started = time.monotonic()
    stream = client.chat.completions.create(
        model="tiny-llama",
        messages=MESSAGES,  # type: ignore[arg-type]
        max_tokens=64,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    arrivals: list[tuple[float, str]] = []
    finish_reasons: list[str] = []
    usage = None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                arrivals.append((time.monotonic() - started, choice.delta.content))
            if choice.finish_reason is not None:
                finish_reasons.append(choice.finish_reason)
    ended = time.monotonic() - started

    assert "".join(text for _, text in arrivals) == whole.choices[0].message.content
    assert finish_reasons == [whole.choices[0].finish_reason]
    assert usage is not None and whole.usage is not None
    assert usage.completion_tokens == whole.usage.completion_tokens
    assert usage.prompt_tokens == whole.usage.prompt_tokens
    # Coalescing never makes more events than tokens; the stream starts well before it ends.
    assert 2 <= len(arrivals) <= usage.completion_tokens
    first_at = arrivals[0][0]
    assert first_at < arrivals[-1][0] <= ended
    assert first_at < 0.8 * ended, f"first chunk at {first_at:.2f} s of {ended:.2f} s"
