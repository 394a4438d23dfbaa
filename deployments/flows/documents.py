"""`/v1/documents`: synchronous upsert (chunk, embed, index; idempotent) and delete."""

from __future__ import annotations

from typing import Any

from deployments.openai_api import ApiError, DocumentsRequest
from deployments.principal import ANONYMOUS, Caller
from deployments.request_timeline import Timeline
from deployments.settings import GatewaySettings
from deployments.stage_client import EmbedderClient, RetrieverClient
from surge_core.chunking import chunk_text


class DocumentFlow:
    def __init__(
        self, settings: GatewaySettings, embedder: EmbedderClient, retriever: RetrieverClient
    ) -> None:
        self.settings = settings
        self.embedder = embedder
        self.retriever = retriever

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
        upserted: dict[str, Any] = {"written": 0, "unchanged": 0, "deleted": 0, "fenced": 0}
        if body.documents:
            chunks, embedding_version = await self._embedded_chunks(body)
            upserted = await self.retriever.replace_documents(chunks, versions, tenant, embedding_version)
        deleted = await self.retriever.delete_documents(body.delete, versions, tenant) if body.delete else 0
        return {
            "object": "documents.result",
            "upserted_documents": len(body.documents),
            "chunks_written": upserted["written"],
            "chunks_unchanged": upserted["unchanged"],
            "chunks_deleted": upserted["deleted"] + deleted,
            "documents_fenced": upserted.get("fenced", 0),
        }

    async def _embedded_chunks(
        self, body: DocumentsRequest
    ) -> tuple[dict[str, list[dict[str, Any]]], str | None]:
        """The chunks with their vectors, and the embedding version those vectors belong to."""
        chunks = [
            (doc, index, text)
            for doc in body.documents
            for index, text in enumerate(
                chunk_text(doc.text, self.settings.chunk_chars, self.settings.chunk_overlap_chars)
            )
        ]
        result = await self.embedder.embed([text for _, _, text in chunks], Timeline())
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
        return grouped, result.get("embedding_version")
