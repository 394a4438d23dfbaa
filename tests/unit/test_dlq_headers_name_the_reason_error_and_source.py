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


def test_a_truncated_letter_keeps_the_reason_and_records_the_original_size_and_sha256() -> None:
    import hashlib

    original = b"x" * 100_000
    cut = _letter(value=original, key=b"k" * 5000).truncated(1000)
    headers = parse_dlq_headers(cut.headers())
    assert cut.value == original[:1000]
    assert cut.key is not None and len(cut.key) == 1024
    assert headers["reason"] == "not_json" and headers["source-offset"] == "1234"
    assert headers["truncated"] == "true"
    assert headers["original-size"] == "100000"
    assert headers["original-sha256"] == hashlib.sha256(original).hexdigest()
    assert ("trace-id", b"abc") not in cut.headers()  # the original headers may be what was too large
    # Cutting again keeps the digest of the original, not of the already-cut value.
    dropped = cut.truncated(0)
    assert dropped.value is None
    assert parse_dlq_headers(dropped.headers())["original-sha256"] == headers["original-sha256"]


def test_an_untruncated_letter_has_no_truncation_headers() -> None:
    assert "truncated" not in parse_dlq_headers(_letter().headers())


def test_dlq_topics_get_room_for_big_letters_and_min_insync_only_with_three_replicas() -> None:
    from surge_core.kafka_admin import DLQ_MAX_MESSAGE_BYTES, wanted_topics
    from surge_core.topics import DOCUMENTS

    def configs(factor: int) -> dict[str, dict[str, str]]:
        return {t.name: t.topic_configs for t in wanted_topics([DOCUMENTS], factor)}

    assert configs(-1)["documents.dlq"] == {"max.message.bytes": str(DLQ_MAX_MESSAGE_BYTES)}
    assert configs(1)["documents.dlq"] == {"max.message.bytes": str(DLQ_MAX_MESSAGE_BYTES)}
    assert configs(3)["documents.dlq"]["min.insync.replicas"] == "2"
    assert configs(5)["documents.dlq"]["min.insync.replicas"] == "4"
    assert configs(3)["documents"] == {"cleanup.policy": "compact"}
