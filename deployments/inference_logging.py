"""Turns a finished gateway request into an `inference-log` record and hands it to the publisher.

The publisher (surge_core.inference_log) never blocks and never raises: a broker outage costs a warning,
not a failed or slower request. Raw prompts are left out unless `include_prompt` is on, and then redacted
(emails, phone numbers, keys: `surge_core.redaction`) unless `redact_prompt` is off; records name the
caller's principal and tenant, never its key. The prompt's
embedding (when the request computed one, i.e. RAG) travels as a small fixed random projection.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from functools import cache

import numpy as np

from surge_core.inference_log import InferenceLogSettings
from surge_core.records import (
    MAX_LOGGED_ANSWER_CHARS,
    MAX_LOGGED_SOURCE_CHARS,
    MAX_LOGGED_SOURCES,
    InferenceLogRecord,
)
from surge_core.redaction import PROMPT_REDACTION

SKETCH_DIMENSIONS = 16


def embedding_sketch(embedding: Sequence[float], dimensions: int = SKETCH_DIMENSIONS) -> list[float]:
    """Project an embedding onto `dimensions` fixed random directions (seeded, so every process agrees).

    Random projections roughly preserve distances and means (Johnson-Lindenstrauss), which is all the
    drift monitor's embedding distance needs, at a fraction of the record size.
    """
    vector = np.asarray(embedding, dtype=np.float32)
    return [round(float(x), 5) for x in vector @ _projection(vector.shape[0], dimensions)]


@cache
def _projection(input_dimensions: int, dimensions: int) -> np.ndarray:
    rng = np.random.default_rng(20231116)
    return (rng.standard_normal((input_dimensions, dimensions)) / np.sqrt(dimensions)).astype(np.float32)


class InferenceLogger:
    def __init__(self, settings: InferenceLogSettings, model: str) -> None:
        self.settings = settings
        self.model = model
        self._publisher = None
        if settings.enabled:
            from surge_core.inference_log import build_inference_log_publisher

            self._publisher = build_inference_log_publisher(settings)

    def record(
        self,
        *,
        route: str,
        status_code: int,
        arrived_at: float,
        ttft_s: float | None,
        prompt_tokens: int,
        completion_tokens: int,
        retrieval_scores: list[float],
        prompt: str,
        prompt_embedding: Sequence[float] | None = None,
        principal: str | None = None,
        tenant: str | None = None,
        model: str | None = None,
        model_version: str | None = None,
        alias: str | None = None,
        shadow: bool = False,
        answer: str | None = None,
        sources: Sequence[str] | None = None,
        trace_headers: list[tuple[str, bytes]] | None = None,
        request_id: str | None = None,
        shadow_of: str | None = None,
        prompt_version: str | None = None,
    ) -> None:
        """`trace_headers` (`surge_core.tracing.kafka_headers()`) ride on the record: a consumer of the
        inference log can continue the request's trace. `request_id`: the LLM request's id (a fresh one when
        None); `shadow_of`: on a shadow record, the primary's, so `surge compare` pairs the two answers."""
        if self._publisher is None:
            return
        record = InferenceLogRecord(
            request_id=request_id or uuid.uuid4().hex,
            shadow_of=shadow_of,
            prompt_version=prompt_version,
            route=route,
            model=model or self.model,
            model_version=model_version or "1",
            alias=alias,
            shadow=shadow,
            status_code=status_code,
            latency_s=max(0.0, time.time() - arrived_at),
            ttft_s=ttft_s,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            retrieval_scores=retrieval_scores,
            prompt_embedding=embedding_sketch(prompt_embedding) if prompt_embedding is not None else None,
            prompt=self._prompt(prompt),
            principal=principal,
            tenant=tenant,
            answer=self._text(answer, MAX_LOGGED_ANSWER_CHARS),
            sources=self._sources(sources),
        )
        self._publisher.publish(record, trace_headers or [])

    def record_rejection(
        self, *, route: str, status_code: int, arrived_at: float, principal: str | None, tenant: str | None
    ) -> None:
        """A request refused before any flow ran (401, 403, 429 at admission): logged so the drift monitor's
        rejection rates see it; the flows log every request they start themselves."""
        if self._publisher is None:
            return
        self._publisher.publish(
            InferenceLogRecord(
                request_id=uuid.uuid4().hex,
                route=route,
                model=self.model,
                status_code=status_code,
                latency_s=max(0.0, time.time() - arrived_at),
                principal=principal,
                tenant=tenant,
            )
        )

    def _text(self, text: str | None, limit: int) -> str | None:
        if text is None or not self.settings.include_answer:
            return None
        # Cut before redacting (bounded regex work), then again: a replacement may lengthen the text.
        text = text[:limit]
        return (PROMPT_REDACTION.apply(text) if self.settings.redact_prompt else text)[:limit]

    def _sources(self, sources: Sequence[str] | None) -> list[str] | None:
        if sources is None or not self.settings.include_answer:
            return None
        return [t for s in sources[:MAX_LOGGED_SOURCES] if (t := self._text(s, MAX_LOGGED_SOURCE_CHARS))]

    def _prompt(self, prompt: str) -> str | None:
        if not self.settings.include_prompt:
            return None
        return PROMPT_REDACTION.apply(prompt) if self.settings.redact_prompt else prompt

    def close(self) -> None:
        if self._publisher is not None:
            self._publisher.close()
