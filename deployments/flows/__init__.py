"""Request flows: one small, readable sequence per capability, callable without HTTP.

    edge (deployments.gateway: routes, schemas, SSE, errors)
      -> flows (this package: chat and RAG, completions, embeddings, documents)
        -> model router and stage clients (deployments.model_router, deployments.stage_client)
          -> the stages' DeploymentHandles (Embedder, Retriever, LLMServer)

A flow takes a validated request, calls stage clients in order and returns a result; the edge only renders
it. A request goes down these layers and back once.
"""

from deployments.flows.chat import ChatFlow
from deployments.flows.completions import CompletionFlow
from deployments.flows.documents import DocumentFlow
from deployments.flows.embeddings import EmbeddingFlow, check_texts
from deployments.flows.generation import Generation, OutcomeRecorder

__all__ = [
    "ChatFlow",
    "CompletionFlow",
    "DocumentFlow",
    "EmbeddingFlow",
    "Generation",
    "OutcomeRecorder",
    "check_texts",
]
