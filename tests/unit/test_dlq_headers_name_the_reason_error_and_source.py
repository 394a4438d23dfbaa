"""Dead letters keep the original bytes and carry headers naming reason, error, source and attempts."""

from __future__ import annotations

from pipelines.dlq import MAX_ERROR_CHARS, DeadLetter, PoisonKind, build_dlq_headers, parse_dlq_headers


def _letter(**overrides: object) -> DeadLetter:
    fields: dict[str, object] = {
        "source_topic": "documents",
        "partition": 3,
        "offset": 1234,
        "key": b"doc-1",
        "value": b"{not json",
        "kind": PoisonKind.NOT_JSON,
        "error": "not JSON: Expecting property name",
        "attempts": 0,
        "group_id": "surge-ingestion",
        "original_headers": (("trace-id", b"abc"),),
        "timestamp_ms": 1_700_000_000_000,
    }
    fields.update(overrides)
    return DeadLetter(**fields)  # type: ignore[arg-type]


def test_headers_name_reason_error_source_and_attempts() -> None:
    headers = parse_dlq_headers(build_dlq_headers(_letter(kind=PoisonKind.PROCESSING_FAILED, attempts=4)))
    assert headers == {
        "reason": "processing_failed",
        "error": "not JSON: Expecting property name",
        "source-topic": "documents",
        "source-partition": "3",
        "source-offset": "1234",
        "attempts": "4",
        "consumer-group": "surge-ingestion",
        "timestamp": "1700000000000",
    }


def test_dead_letter_goes_to_the_topics_dlq() -> None:
    assert _letter().topic == "documents.dlq"
    assert _letter(source_topic="t1.documents").topic == "t1.documents.dlq"


def test_original_headers_are_kept_after_ours_and_old_dlq_headers_are_replaced() -> None:
    letter = _letter(original_headers=(("trace-id", b"abc"), ("surge-dlq-reason", b"oversized")))
    headers = letter.headers()
    assert headers[-1] == ("trace-id", b"abc")
    assert [v for k, v in headers if k == "surge-dlq-reason"] == [b"not_json"]


def test_long_errors_are_truncated() -> None:
    error = parse_dlq_headers(build_dlq_headers(_letter(error="x" * 5000)))["error"]
    assert len(error) == MAX_ERROR_CHARS and error.endswith("...")


def test_header_values_are_utf8_bytes() -> None:
    headers = build_dlq_headers(_letter(error="caf\u00e9 \u2603"))
    assert all(isinstance(k, str) and isinstance(v, bytes) for k, v in headers)
    assert parse_dlq_headers(headers)["error"] == "caf\u00e9 \u2603"
