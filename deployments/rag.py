"""Retrieval-augmented prompts: retrieved chunks become a numbered context the model is told to cite."""

from __future__ import annotations

from typing import Any

CONTEXT_INSTRUCTIONS = (
    "Answer the question using the numbered context passages below. Cite passages as [1], [2]. "
    "If the context does not contain the answer, say so."
)


def context_message(hits: list[dict[str, Any]], max_chars: int) -> dict[str, str]:
    """A system message holding the retrieved passages, trimmed to `max_chars` in total."""
    lines = [CONTEXT_INSTRUCTIONS, ""]
    budget = max_chars - len(CONTEXT_INSTRUCTIONS)
    for number, hit in enumerate(hits, start=1):
        passage = f"[{number}] ({hit['doc_id']}#{hit['chunk_index']}) {hit['text']}"
        if len(passage) > budget:
            passage = passage[: max(budget, 0)]
        if not passage:
            break
        lines.append(passage)
        budget -= len(passage)
    return {"role": "system", "content": "\n".join(lines)}


def sources(hits: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the response reports about the passages it was given."""
    return [
        {
            "index": number,
            "doc_id": hit["doc_id"],
            "chunk_index": hit["chunk_index"],
            "score": round(float(hit["score"]), 6),
            "text": hit["text"],
            "metadata": hit.get("metadata", {}),
        }
        for number, hit in enumerate(hits, start=1)
    ]
