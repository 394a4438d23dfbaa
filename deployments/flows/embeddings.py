"""`/v1/embeddings`: check the inputs, embed them (batched across requests by the Embedder).

A request of one text is a query (a client embedding what it will search for): it goes where RAG questions
go (`gateway.embed_queries`), so with `gateway` it is embedded in the gateway replica without a hop, as a
question is. Several texts go to the Embedder, whose batching pays for them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deployments.model_router import ModelRouter
from deployments.openai_api import ApiError, EmbeddingRequest
from deployments.principal import ANONYMOUS, Caller
from deployments.query_embedding import QueryEmbedder
from deployments.request_timeline import Timeline
from deployments.settings import EmbedderSettings
from deployments.stage_client import EmbedderClient
from deployments.usage_recording import UsageRecorder


def check_texts(texts: list[str], field: str, limits: EmbedderSettings) -> None:
    """400 naming the field when texts are missing, too many, empty or too long for the Embedder."""
    if not texts:
        raise ApiError(400, f"{field} must not be empty", param=field)
    if len(texts) > limits.max_inputs_per_request:
        raise ApiError(
            400, f"{field} has {len(texts)} items; at most {limits.max_inputs_per_request}", param=field
        )
    for i, text in enumerate(texts):
        if not text:
            raise ApiError(400, f"{field}[{i}] is empty", param=field)
        if len(text) > limits.max_input_chars:
            raise ApiError(
                400,
                f"{field}[{i}] is {len(text)} characters; the limit is {limits.max_input_chars}",
                param=field,
            )


@dataclass(frozen=True)
class Embeddings:
    vectors: np.ndarray
    tokens: int


class EmbeddingFlow:
    def __init__(
        self,
        router: ModelRouter,
        embedder: EmbedderClient,
        limits: EmbedderSettings,
        usage: UsageRecorder | None = None,
        queries: QueryEmbedder | None = None,
    ) -> None:
        self.router = router
        self.embedder = embedder
        self.queries: QueryEmbedder = queries or embedder
        self.limits = limits
        self.usage = usage

    async def run(self, body: EmbeddingRequest, caller: Caller = ANONYMOUS) -> Embeddings:
        self.router.check_embedding_model(body.model)
        texts = body.texts
        check_texts(texts, "input", self.limits)
        timeline = Timeline()
        result = await (self.queries if len(texts) == 1 else self.embedder).embed(texts, timeline)
        caller.spend_tokens(int(result["tokens"]))
        if self.usage is not None:
            self.usage.record(
                route="/v1/embeddings",
                status_code=200,
                timeline=timeline,
                tokens_in=int(result["tokens"]),
                tokens_out=0,
                principal=caller.principal.name,
                tenant=caller.principal.tenant,
                served_model=body.model,
            )
        return Embeddings(vectors=result["embeddings"], tokens=result["tokens"])
