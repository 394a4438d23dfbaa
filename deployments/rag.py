"""Prompt context: retrieved chunks become a numbered context the model is told to cite, and online
features (from the Kafka-fed feature job) become a short note about the user."""

from __future__ import annotations

import json
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


def prompt_features(features: dict[str, Any]) -> dict[str, Any]:
    """The scalar features worth showing a model (vectors such as text embeddings are left out)."""
    return {
        key: value
        for key, value in features.items()
        if isinstance(value, str | int | float | bool) or (isinstance(value, dict) and len(value) <= 16)
    }


def features_message(user: str, features: dict[str, Any]) -> dict[str, str]:
    """A system message with what the feature store knows about the user."""
    facts = json.dumps(prompt_features(features), sort_keys=True, default=str)
    return {"role": "system", "content": f"Recent activity of user {user} (from the feature store): {facts}"}
