"""Property: every consumer's decoder turns any bytes into a record or a PoisonRecord with a reason.

Nothing else may escape decoding (a RecursionError or ValueError escaping is what killed the ingestion
consumer on `[[[[...`), for ingestion, the drift monitor and the feature job alike. The broker-backed
version (the loop stays alive and commits past the record) is
tests/integration/test_fuzzed_records_never_stop_a_consumer.py.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka.consumer.fetcher import ConsumerRecord

from pipelines.consumer import AtLeastOnceConsumer
from pipelines.dlq import PoisonKind, PoisonRecord
from pipelines.drift import DriftHandler, DriftMonitor, DriftMonitorSettings
from pipelines.feature_reading import _parse
from pipelines.ingestion import DocumentHandler, DocumentOp, IngestionSettings
from tests.poison_values import DOCUMENT, EVENT, INFERENCE, KINDS, bad_values

EXAMPLES = 600
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TRIED: Counter[tuple[str, str]] = Counter()


@pytest.fixture(scope="module", autouse=True)
def _report_counts() -> Iterator[None]:
    yield
    for consumer in ("ingestion", "drift", "feature_job"):
        kinds = {kind: TRIED[(consumer, kind)] for kind in KINDS}
        print(f"\nfuzzed {consumer}: {sum(kinds.values())} cases, {json.dumps(kinds)}")


def _message(value: bytes | None, key: bytes | None = None) -> ConsumerRecord:
    fields: dict[str, Any] = {name: None for name in ConsumerRecord._fields}
    fields.update(
        topic="t", partition=0, offset=7, key=key, value=value, headers=[],
        serialized_key_size=len(key or b""), serialized_value_size=len(value or b""),
    )  # fmt: skip
    return ConsumerRecord(**fields)


class _NoSink:
    def write(self, ops: Any, versions: Any = None) -> None:
        raise AssertionError("decoding must not write")

    def close(self) -> None:
        pass


def _assert_poison_or_record(decode: Any, message: ConsumerRecord) -> None:
    try:
        decode(message)
    except PoisonRecord as poison:
        assert poison.kind in PoisonKind
        assert poison.kind != PoisonKind.UNDECODABLE, f"unclassified: {poison}"
        assert str(poison), "a dead letter must say why"


@FUZZ
@given(bad_values(DOCUMENT), st.sampled_from([None, b"doc-1", b"\xff", b"other"]))
def test_ingestion_decodes_any_value_to_a_document_op_or_a_reasoned_poison(
    drawn: tuple[str, bytes | None], key: bytes | None
) -> None:
    kind, value = drawn
    TRIED[("ingestion", kind)] += 1
    loop: AtLeastOnceConsumer[DocumentOp] = AtLeastOnceConsumer(
        IngestionSettings(), "documents", DocumentHandler(_NoSink())
    )
    _assert_poison_or_record(loop._decode, _message(value, key))


@FUZZ
@given(bad_values(INFERENCE))
def test_drift_monitor_decodes_any_value_to_a_log_record_or_a_reasoned_poison(
    drawn: tuple[str, bytes | None],
) -> None:
    kind, value = drawn
    TRIED[("drift", kind)] += 1
    settings_ = DriftMonitorSettings()
    handler = DriftHandler(DriftMonitor(settings_), publish=lambda alerts: None)
    _assert_poison_or_record(handler.decode, _message(value))


@FUZZ
@given(bad_values(EVENT))
def test_feature_job_parses_any_value_to_an_event_or_a_dead_letter_with_a_reason(
    drawn: tuple[str, bytes | None],
) -> None:
    kind, value = drawn
    TRIED[("feature_job", kind)] += 1
    events: list[dict[str, Any]] = []
    dead: list[Any] = []
    _parse(_message(value), events, dead)  # must not raise
    assert len(events) + len(dead) == 1
    if dead:
        assert dead[0].kind != PoisonKind.UNDECODABLE, dead[0].error
        assert dead[0].error and dead[0].offset == 7


@pytest.mark.parametrize(
    "value",
    [
        b"[" * 200_000 + b"]" * 200_000,
        b'{"op": "upsert", "doc_id": "a", "text": "x", "metadata": {"n": ' + b"9" * 5000 + b"}}",
        b'{"op": "upsert", "doc_id": "a", "text": NaN}',
        b'{"op": "upsert", "doc_id": "a", "text": "x", "metadata": {"n": 9223372036854775808}}',
        b'{"op": "upsert", "doc_id": "a", "text": "nul \\u0000 here"}',
        json.dumps({"op": "upsert", "doc_id": "a", "text": "x"}).encode("utf-16"),
    ],
    ids=["deep", "4301+ digits", "NaN", "over int64", "escaped NUL", "utf-16"],
)
def test_the_values_from_the_issue_are_dead_lettered_not_fatal(value: bytes) -> None:
    loop: AtLeastOnceConsumer[DocumentOp] = AtLeastOnceConsumer(
        IngestionSettings(max_record_bytes=1_000_000), "documents", DocumentHandler(_NoSink())
    )
    with pytest.raises(PoisonRecord) as raised:
        loop._decode(_message(value))
    assert raised.value.kind in (PoisonKind.NOT_JSON, PoisonKind.SCHEMA_INVALID)


def test_a_keyed_tombstone_deletes_its_document_and_a_keyless_one_is_poison() -> None:
    loop: AtLeastOnceConsumer[DocumentOp] = AtLeastOnceConsumer(
        IngestionSettings(), "documents", DocumentHandler(_NoSink())
    )
    op = loop._decode(_message(None, key=b"doc-9"))
    assert op.op == "delete" and op.doc_id == "doc-9"
    for key in (None, b"../x", b"\xff"):
        with pytest.raises(PoisonRecord):
            loop._decode(_message(None, key=key))
