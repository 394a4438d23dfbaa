"""The model router: the one place where a request's `model` becomes the deployment that serves it.

Names a client may use today: the served LLM name, the same with the `rag/` prefix (retrieval-augmented),
and the embedding model's name. Flows ask the router and get a route back, so adding model versions,
aliases and weighted canaries (the model-lifecycle work) changes this module, not the flows or the edge.
"""

from __future__ import annotations

from dataclasses import dataclass

from deployments.openai_api import RAG_MODEL_PREFIX, ApiError
from deployments.stage_client import LLMClient


@dataclass(frozen=True)
class LLMRoute:
    """Where a chat or completion request goes: the LLM client, and whether the name asked for RAG."""

    requested: str
    served_name: str
    llm: LLMClient
    rag: bool


class ModelRouter:
    def __init__(self, llm_name: str, llm: LLMClient, embedding_name: str) -> None:
        self.llm_name = llm_name
        self.llm = llm
        self.embedding_name = embedding_name

    def model_ids(self) -> list[str]:
        """What `/v1/models` lists."""
        return [self.llm_name, f"{RAG_MODEL_PREFIX}{self.llm_name}", self.embedding_name]

    def llm_route(self, model: str) -> LLMRoute:
        """Resolve a chat/completions `model`; 404 naming the servable names when it is unknown."""
        base = model.removeprefix(RAG_MODEL_PREFIX)
        if base != self.llm_name:
            raise ApiError(
                404,
                f"model {model!r} is not served here; use {self.llm_name!r} or '{RAG_MODEL_PREFIX}{self.llm_name}'",
                param="model",
                error_type="model_not_found",
            )
        return LLMRoute(
            requested=model, served_name=base, llm=self.llm, rag=model.startswith(RAG_MODEL_PREFIX)
        )

    def check_embedding_model(self, model: str) -> None:
        if model != self.embedding_name:
            raise ApiError(
                404,
                f"embedding model {model!r} is not served; use {self.embedding_name!r}",
                param="model",
                error_type="model_not_found",
            )
