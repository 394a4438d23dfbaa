"""Rendering a flow's result as OpenAI's response objects: JSON bodies and SSE streams (`data: ...`).

Part of the HTTP edge: flows return `Generation`s and `Embeddings`; this module turns them into the exact
shapes OpenAI clients parse (chat.completion, chat.completion.chunk, text_completion, embedding lists).
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import numpy as np

from deployments.flows import Generation
from deployments.flows.embeddings import Embeddings
from deployments.openai_api import ApiError, chat_chunk, completion_chunk, new_id, usage

DONE = "data: [DONE]\n\n"


def sse(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"


def _error_event(exc: Exception) -> str:
    # The status line is gone once a stream started: the failure is reported in-band, as OpenAI does.
    error = (
        exc if isinstance(exc, ApiError) else ApiError(502, "the stream failed", error_type="server_error")
    )
    return sse(error.body())


async def chat_response(generation: Generation) -> dict[str, Any]:
    text, last = await generation.collect()
    return {
        "id": new_id("chatcmpl"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": generation.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": last["finish_reason"],
                "logprobs": None,
            }
        ],
        "usage": usage(last["prompt_tokens"], last["completion_tokens"], last.get("cached_tokens")),
        **generation.extra,
        "surge": surge_fields(generation),
    }


async def chat_events(generation: Generation, include_usage: bool) -> AsyncIterator[str]:
    completion_id, model = new_id("chatcmpl"), generation.model
    last: dict[str, Any] = {"prompt_tokens": 0, "completion_tokens": 0}
    try:
        yield sse(
            chat_chunk(completion_id, model, {"role": "assistant", "content": ""}, None, **generation.extra)
        )
        async for delta in generation.deltas:
            last = delta
            chunk = chat_chunk(completion_id, model, {"content": delta["text"]}, delta["finish_reason"])
            yield sse(_with_version(chunk, delta, generation))
        if include_usage:
            final = chat_chunk(completion_id, model, {}, None)
            final["choices"] = []
            final["usage"] = usage(
                last["prompt_tokens"], last["completion_tokens"], last.get("cached_tokens")
            )
            final["surge"] = surge_fields(generation)
            yield sse(final)
    except Exception as exc:
        yield _error_event(exc)
    yield DONE


async def completion_response(generation: Generation) -> dict[str, Any]:
    text, last = await generation.collect()
    return {
        "id": new_id("cmpl"),
        "object": "text_completion",
        "created": int(time.time()),
        "model": generation.model,
        "choices": [{"index": 0, "text": text, "finish_reason": last["finish_reason"], "logprobs": None}],
        "usage": usage(last["prompt_tokens"], last["completion_tokens"], last.get("cached_tokens")),
        "surge": surge_fields(generation),
    }


async def completion_events(generation: Generation, include_usage: bool) -> AsyncIterator[str]:
    completion_id, model = new_id("cmpl"), generation.model
    last: dict[str, Any] = {"prompt_tokens": 0, "completion_tokens": 0}
    try:
        async for delta in generation.deltas:
            last = delta
            chunk = completion_chunk(completion_id, model, delta["text"], delta["finish_reason"])
            yield sse(_with_version(chunk, delta, generation))
        if include_usage:
            final = completion_chunk(completion_id, model, "", None)
            final["choices"] = []
            final["usage"] = usage(
                last["prompt_tokens"], last["completion_tokens"], last.get("cached_tokens")
            )
            yield sse(final)
    except Exception as exc:
        yield _error_event(exc)
    yield DONE


def surge_fields(generation: Generation, timings: bool = True) -> dict[str, Any]:
    """The body's `surge` object: timings, the version that answered and, when it used one, its
    system-prompt template version (`prompt_version`)."""
    fields: dict[str, Any] = {"timings": generation.timeline.marks} if timings else {}
    fields["version"] = generation.version
    if generation.prompt_version is not None:
        fields["prompt_version"] = generation.prompt_version
    return fields


def _with_version(chunk: dict[str, Any], delta: dict[str, Any], generation: Generation) -> dict[str, Any]:
    # The chunk that finishes the choice says which version answered (streams without usage too).
    if delta["finish_reason"] is not None:
        chunk["surge"] = surge_fields(generation, timings=False)
    return chunk


def _encode_vector(vector: np.ndarray, encoding: str) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(np.asarray(vector, dtype=np.float32).tobytes()).decode()
    return [float(x) for x in vector]


def embeddings_response(result: Embeddings, model: str, encoding: str) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": _encode_vector(v, encoding)}
            for i, v in enumerate(result.vectors)
        ],
        "model": model,
        "usage": {"prompt_tokens": result.tokens, "total_tokens": result.tokens},
    }
