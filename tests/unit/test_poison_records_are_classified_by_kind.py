"""Decoding sorts a bad record into the right poison kind (the DLQ reason), before any processing."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest
from kafka.consumer.fetcher import ConsumerRecord

from pipelines.consumer import AtLeastOnceConsumer
from pipelines.dlq import PoisonKind, PoisonRecord
from pipelines.ingestion import DocumentHandler, DocumentOp, IngestionSettings
from surge_core.records import DocumentDelete, DocumentUpsert


class RecordingSink:
    """Our own sink interface, recording writes (the unit under test is decoding, not the index)."""

    def __init__(self) -> None:
        self.writes: list[Sequence[DocumentOp]] = []

    def write(self, ops: Sequence[DocumentOp], versions: Any = None) -> None:
        self.writes.append(ops)

    def close(self) -> None:
        pass


def _message(value: bytes | None, key: bytes | None = None) -> ConsumerRecord:
    fields: dict[str, Any] = {name: None for name in ConsumerRecord._fields}
    fields.update(
        topic="documents", partition=0, offset=7, key=key, value=value, headers=[],
        serialized_key_size=len(key or b""), serialized_value_size=len(value or b""),
    )  # fmt: skip
    return ConsumerRecord(**fields)


def _loop(max_record_bytes: int = 1000) -> AtLeastOnceConsumer[DocumentOp]:
    settings = IngestionSettings(max_record_bytes=max_record_bytes)
    return AtLeastOnceConsumer(settings, "documents", DocumentHandler(RecordingSink()))


def _kind(message: ConsumerRecord, max_record_bytes: int = 1000) -> PoisonKind:
    with pytest.raises(PoisonRecord) as raised:
        _loop(max_record_bytes)._decode(message)
    return raised.value.kind


@pytest.mark.parametrize(
    "value",
    [b"{not json", b"\xff\xfe\x00", b"", None, b"[1, 2", b"NaN-ish text"],
)
def test_undecodable_values_are_not_json(value: bytes | None) -> None:
    assert _kind(_message(value)) == PoisonKind.NOT_JSON


@pytest.mark.parametrize(
    "record",
    [
        {"op": "upsert", "doc_id": "a"},  # no text
        {"op": "upsert", "doc_id": "a", "text": ""},  # empty text
        {"op": "upsert", "doc_id": "a", "text": "x", "extra": 1},  # unknown field
        {"op": "rename", "doc_id": "a"},  # unknown op
        {"doc_id": "a", "text": "x"},  # no op
        {"op": "upsert", "doc_id": "../etc", "text": "x"},  # id outside the pattern
        {"op": "upsert", "doc_id": "a", "text": "x", "schema_version": 2},  # unknown version
        {"op": "upsert", "doc_id": "a", "text": "x", "metadata": {"nested": {"no": 1}}},
        [1, 2, 3],
        "just a string",
    ],
)
def test_records_breaking_the_schema_are_schema_invalid(record: object) -> None:
    assert _kind(_message(json.dumps(record).encode())) == PoisonKind.SCHEMA_INVALID


def test_a_key_that_is_not_the_doc_id_is_schema_invalid() -> None:
    value = json.dumps({"op": "delete", "doc_id": "a"}).encode()
    assert _kind(_message(value, key=b"b")) == PoisonKind.SCHEMA_INVALID


def test_records_over_max_record_bytes_are_oversized_before_parsing() -> None:
    value = json.dumps({"op": "upsert", "doc_id": "a", "text": "y" * 2000}).encode()
    assert _kind(_message(value), max_record_bytes=1000) == PoisonKind.OVERSIZED
    assert _kind(_message(b"{" * 2000), max_record_bytes=1000) == PoisonKind.OVERSIZED


def test_valid_upserts_and_deletes_decode_with_or_without_a_key() -> None:
    loop = _loop()
    upsert = loop._decode(_message(json.dumps({"op": "upsert", "doc_id": "a/b.md", "text": "hi"}).encode()))
    assert upsert == DocumentUpsert(doc_id="a/b.md", text="hi")
    delete = loop._decode(_message(json.dumps({"op": "delete", "doc_id": "a"}).encode(), key=b"a"))
    assert delete == DocumentDelete(doc_id="a")
