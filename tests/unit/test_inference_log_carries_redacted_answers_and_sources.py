"""The gateway's inference-log records carry the answer and the retrieved passages (redacted, cut to the
record's bounds) for the drift monitor's quality signals, and admission refusals are logged too."""

from __future__ import annotations

from typing import Any

from deployments.inference_logging import InferenceLogger
from surge_core.inference_log import InferenceLogSettings
from surge_core.records import MAX_LOGGED_ANSWER_CHARS, MAX_LOGGED_SOURCE_CHARS, InferenceLogRecord


def capturing(settings: InferenceLogSettings) -> tuple[InferenceLogger, list[InferenceLogRecord]]:
    published: list[InferenceLogRecord] = []
    logger = InferenceLogger(settings, "m")
    logger._publisher = type("P", (), {"publish": lambda self, r, headers=(): published.append(r)})()  # type: ignore[assignment]
    return logger, published


def finished(logger: InferenceLogger, **fields: Any) -> None:
    base: dict[str, Any] = {
        "route": "/v1/chat/completions",
        "status_code": 200,
        "arrived_at": 0.0,
        "ttft_s": None,
        "prompt_tokens": 1,
        "completion_tokens": 1,
        "retrieval_scores": [0.5],
        "prompt": "q",
    }
    logger.record(**(base | fields))


def test_answer_and_sources_are_logged_redacted_by_default() -> None:
    logger, published = capturing(InferenceLogSettings())
    finished(logger, answer="Write to ann@example.com", sources=["call +44 20 7946 0958", "plain"])
    assert published[0].answer == "Write to [email]"
    assert published[0].sources == ["call [phone]", "plain"]
    assert published[0].prompt is None  # prompts stay off unless include_prompt


def test_long_answers_and_passages_are_cut_to_what_the_record_schema_accepts() -> None:
    logger, published = capturing(InferenceLogSettings())
    finished(
        logger, answer="a" * (MAX_LOGGED_ANSWER_CHARS + 10), sources=["b" * (MAX_LOGGED_SOURCE_CHARS * 2)]
    )
    record = InferenceLogRecord.model_validate_json(published[0].model_dump_json())  # what a consumer reads
    assert record.answer is not None and len(record.answer) == MAX_LOGGED_ANSWER_CHARS
    assert record.sources is not None and len(record.sources[0]) == MAX_LOGGED_SOURCE_CHARS


def test_include_answer_off_keeps_answer_and_sources_out_of_the_record() -> None:
    logger, published = capturing(InferenceLogSettings(include_answer=False))
    finished(logger, answer="secret", sources=["secret passage"])
    assert (published[0].answer, published[0].sources) == (None, None)


def test_a_request_without_retrieval_has_no_sources_and_an_empty_retrieval_has_an_empty_list() -> None:
    logger, published = capturing(InferenceLogSettings())
    finished(logger, answer="x", sources=None)
    finished(logger, answer="x", sources=[])
    assert [r.sources for r in published] == [None, []]


def test_an_admission_refusal_is_logged_with_its_status_and_no_principal() -> None:
    logger, published = capturing(InferenceLogSettings())
    logger.record_rejection(
        route="/v1/completions", status_code=429, arrived_at=0.0, principal=None, tenant=None
    )
    assert (published[0].status_code, published[0].model, published[0].answer) == (429, "m", None)
