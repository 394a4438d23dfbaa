"""`/v1/documents`: synchronous upsert (chunk, embed, index; idempotent) and delete.

Each accepted request (an upsert, a delete, or one that changed nothing) is charged like any other
(`UsageRecorder`): one `usage` record under the embedding model, the chunks' embedding tokens as tokens in,
the Embedder's and Retriever's seconds.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from deployments.openai_api import ApiError, DocumentsRequest
from deployments.principal import ANONYMOUS, Caller
from deployments.request_timeline import Timeline
from deployments.settings import GatewaySettings
from deployments.stage_client import EmbedderClient, RetrieverClient
from deployments.usage_recording import UsageRecorder
from surge_core.chunking import chunk_text


class DocumentFlow:
    def __init__(
        self,
        settings: GatewaySettings,
        embedder: EmbedderClient,
        retriever: RetrieverClient,
        usage: UsageRecorder | None = None,
        embedding_model: str | None = None,
    ) -> None:
        self.settings = settings
        self.embedder = embedder
        self.retriever = retriever
        self.usage = usage
        self.embedding_model = embedding_model

    async def run(self, body: DocumentsRequest, caller: Caller = ANONYMOUS) -> dict[str, Any]:
        """Returns what changed: chunks written, unchanged and deleted, all within the caller's tenant.

        `tenant` in the body (the HTTP sink sends the Kafka record's) must be the caller's: a key of one
        tenant can never write another's documents, whatever the record says.
        """
        tenant = caller.principal.tenant
        if body.tenant is not None and body.tenant != tenant:
            raise ApiError(
                403,
                f"tenant {body.tenant!r} is not the tenant of principal {caller.principal.name!r}",
                param="tenant",
                error_type="permission_error",
            )
        total = len(body.documents) + len(body.delete)
        if total == 0:
            raise ApiError(400, "give documents to upsert and/or ids to delete", param="documents")
        if total > self.settings.max_documents_per_request:
            raise ApiError(
                400,
                f"{total} documents in one request; at most {self.settings.max_documents_per_request}",
                param="documents",
            )
        versions = body.store_versions()
        timeline = Timeline()
        upserted: dict[str, Any] = {"written": 0, "unchanged": 0, "deleted": 0, "fenced": 0}
        tokens, model = 0, self.embedding_model
        if body.documents:
            chunks, embedded = await self._embedded_chunks(body, timeline)
            tokens, model = int(embedded.get("tokens") or 0), embedded.get("model") or model
            with stage_seconds(timeline, "retriever"):
                upserted = await self.retriever.replace_documents(
                    chunks, versions, tenant, embedded.get("embedding_version")
                )
        deleted = 0
        if body.delete:
            with stage_seconds(timeline, "retriever"):
                deleted = await self.retriever.delete_documents(body.delete, versions, tenant)
        if self.usage is not None and model:
            self.usage.record(
                route="/v1/documents",
                status_code=200,
                timeline=timeline,
                tokens_in=tokens,
                tokens_out=0,
                principal=caller.principal.name,
                tenant=tenant,
                served_model=model,
            )
        return {
            "object": "documents.result",
            "upserted_documents": len(body.documents),
            "chunks_written": upserted["written"],
            "chunks_unchanged": upserted["unchanged"],
            "chunks_deleted": upserted["deleted"] + deleted,
            "documents_fenced": upserted.get("fenced", 0),
        }

    async def _embedded_chunks(
        self, body: DocumentsRequest, timeline: Timeline
    ) -> tuple[dict[str, list[dict[str, Any]]], dict[str, Any]]:
        """The chunks with their vectors, and the Embedder's answer (tokens, model, embedding version)."""
        chunks = [
            (doc, index, text)
            for doc in body.documents
            for index, text in enumerate(
                chunk_text(doc.text, self.settings.chunk_chars, self.settings.chunk_overlap_chars)
            )
        ]
        result = await self.embedder.embed([text for _, _, text in chunks], timeline)
        grouped: dict[str, list[dict[str, Any]]] = {doc.id: [] for doc in body.documents}
        for (doc, index, text), vector in zip(chunks, result["embeddings"], strict=True):
            grouped[doc.id].append(
                {
                    "doc_id": doc.id,
                    "chunk_index": index,
                    "text": text,
                    "embedding": vector.tolist(),
                    "metadata": doc.metadata,
                }
            )
        return grouped, result


@contextmanager
def stage_seconds(timeline: Timeline, stage: str) -> Iterator[None]:
    """Charge the block's wall time to `stage` (the Retriever client does not time its writes itself)."""
    started = time.monotonic()
    try:
        yield
    finally:
        timeline.add_stage_seconds(stage, time.monotonic() - started)
