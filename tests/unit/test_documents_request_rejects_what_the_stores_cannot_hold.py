"""`POST /v1/documents` and retrieval filters reject, at the schema (a 400 naming the field), the values
the stores would fail on with a 500: integers over 2^63, NUL characters, NaN, duplicate ids in one
request, and filters too large for SQLite."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from deployments.openai_api import MAX_FILTER_VALUES, DocumentsRequest, RetrievalOptions


def _doc(**overrides: Any) -> dict[str, Any]:
    return {"id": "a", "text": "hello", **overrides}


@pytest.mark.parametrize(
    "body",
    [
        {"documents": [_doc(metadata={"n": 2**63})]},
        {"documents": [_doc(metadata={"n": -(2**63) - 1})]},
        {"documents": [_doc(text="nul \x00 byte")]},
        {"documents": [_doc(metadata={"k": "v\x00"})]},
        {"documents": [_doc(metadata={"k\x00": "v"})]},
        {"documents": [_doc(metadata={"x": float("nan")})]},
        {"documents": [_doc(), _doc(text="other")]},
        {"documents": [_doc()], "delete": ["a"]},
        {"delete": ["../etc"]},
    ],
    ids=[
        "int over 2^63", "int under -2^63", "NUL in text", "NUL in metadata value", "NUL in metadata key",
        "NaN metadata", "duplicate ids", "upsert and delete one id", "bad delete id",
    ],
)  # fmt: skip
def test_documents_request_rejects_values_the_stores_cannot_hold(body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        DocumentsRequest.model_validate(body)


def test_documents_request_accepts_int64_extremes_and_plain_values() -> None:
    body = {"documents": [_doc(metadata={"max": 2**63 - 1, "min": -(2**63), "f": 1.5, "b": True})]}
    assert DocumentsRequest.model_validate(body).documents[0].metadata["max"] == 2**63 - 1


def test_filters_too_large_for_sqlite_are_rejected() -> None:
    with pytest.raises(ValidationError):
        RetrievalOptions.model_validate({"filter": {"k": list(range(MAX_FILTER_VALUES + 1))}})
    with pytest.raises(ValidationError):
        RetrievalOptions.model_validate({"filter": {f"k{i}": 1 for i in range(33)}})
    with pytest.raises(ValidationError):
        RetrievalOptions.model_validate({"filter": {"k": 2**64}})
    assert RetrievalOptions.model_validate({"filter": {"k": list(range(MAX_FILTER_VALUES))}}).filter
