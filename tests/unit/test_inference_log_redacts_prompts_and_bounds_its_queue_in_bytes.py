"""The inference log: prompts are redacted (emails, phone numbers, keys) when kept, and the queue that rides
out a broker outage is bounded in bytes as well as in records (oldest dropped)."""

from __future__ import annotations

from surge_core.inference_log import InferenceLogSettings, KafkaInferenceLogPublisher
from surge_core.records import InferenceLogRecord
from surge_core.redaction import PROMPT_REDACTION


def test_the_redaction_policy_matches_its_worked_example() -> None:
    text = "mail ann@example.com or +44 20 7946 0958, key sk-abc123def456ghi789"
    assert PROMPT_REDACTION.apply(text) == "mail [email] or [phone], key [key]"
    assert PROMPT_REDACTION.apply("Authorization: Bearer abcdefghijklmnop") == "Authorization: [key]"
    assert PROMPT_REDACTION.apply("What is 2 + 2?") == "What is 2 + 2?"


def test_the_gateway_logger_keeps_only_a_redacted_prompt_and_names_the_principal() -> None:
    from deployments.inference_logging import InferenceLogger

    published: list[InferenceLogRecord] = []
    logger = InferenceLogger(InferenceLogSettings(include_prompt=True), "m")
    logger._publisher = type("P", (), {"publish": lambda self, r, headers=(): published.append(r)})()  # type: ignore[assignment]
    logger.record(
        route="/v1/completions",
        status_code=200,
        arrived_at=0.0,
        ttft_s=None,
        prompt_tokens=1,
        completion_tokens=1,
        retrieval_scores=[],
        prompt="I am bob@corp.io",
        principal="acme-app",
        tenant="acme",
    )
    assert published[0].prompt == "I am [email]"
    assert (published[0].principal, published[0].tenant) == ("acme-app", "acme")


def test_the_queue_drops_the_oldest_records_beyond_its_byte_bound() -> None:
    settings = InferenceLogSettings(
        enabled=True,
        max_queue_records=1000,
        max_queue_bytes=4096,
        kafka={"bootstrap_servers": "127.0.0.1:1"},  # nothing listens: records wait in the queue
    )
    publisher = KafkaInferenceLogPublisher(settings, delivery_timeout_s=0.5)
    try:
        for i in range(50):
            publisher.publish(
                InferenceLogRecord(
                    request_id=f"r{i}", route="/", model="m", status_code=200, latency_s=0, prompt="p" * 500
                )
            )
        stats = publisher.stats()
        assert stats.dropped >= 40 and stats.queued <= 8  # ~600 bytes each: at most 6 fit in 4096
        assert publisher._queued_bytes <= 4096
    finally:
        publisher.close(timeout_s=0.1)
