"""Quality signals from inference-log records: rejections, retrieval hits, answers, refusals, groundedness."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from pipelines.drift import DriftHandler, DriftMonitor, DriftMonitorSettings, WindowResult
from pipelines.quality import (
    QualityMetrics,
    QualityPolicy,
    QualitySignals,
    assess,
    content_tokens,
    groundedness,
    is_refusal,
    rejection_kind,
)
from surge_core.records import DriftAlertRecord, InferenceLogRecord

PARIS = "Paris is the capital of France and its largest city."


def record(**fields: Any) -> InferenceLogRecord:
    base: dict[str, Any] = {
        "request_id": "r",
        "route": "/v1/chat/completions",
        "model": "m",
        "status_code": 200,
        "latency_s": 0.1,
        "completion_tokens": 5,
    }
    return InferenceLogRecord(**(base | fields))


def sample(metrics: QualityMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_the_docstrings_worked_example_scores_two_of_five_tokens_supported() -> None:
    answer = "The capital is Paris, founded in 250 BC"
    assert content_tokens(answer) == ["capital", "paris", "founded", "250", "bc"]
    assert groundedness(answer, ["Paris is the capital of France"]) == pytest.approx(0.4)


def test_an_answer_copied_from_its_sources_is_fully_grounded_and_an_unrelated_one_not_at_all() -> None:
    assert groundedness("The capital of France is Paris.", [PARIS]) == 1.0
    assert groundedness("Bananas grow on tropical plants quickly.", [PARIS]) == 0.0


def test_short_answers_and_answers_without_sources_get_no_groundedness_score() -> None:
    assert groundedness("Paris.", [PARIS]) is None
    assert groundedness("The capital of France is Paris.", []) is None


def test_refusals_are_recognised_by_phrase_and_plain_answers_are_not() -> None:
    assert is_refusal("I'm sorry, but I cannot help with that.")
    assert is_refusal("I cannot answer that question.")
    assert is_refusal("The context does not mention the capital.")
    assert not is_refusal("Paris is the capital of France.")


@pytest.mark.parametrize(
    ("status", "kind"),
    [(200, None), (400, "4xx"), (401, "4xx"), (429, "429"), (499, None), (500, "5xx"), (504, "5xx")],
)
def test_status_codes_fall_into_rejection_kinds_and_a_client_abandon_is_not_one(
    status: int, kind: str | None
) -> None:
    assert rejection_kind(status) == kind


def test_a_rag_answer_counts_a_hit_its_top_score_length_and_groundedness_under_its_version() -> None:
    signals = QualitySignals(QualityPolicy(hit_score=0.5))
    signals.observe(
        [
            record(
                model_version="2",
                retrieval_scores=[0.3, 0.8],
                sources=[PARIS],
                answer="The capital of France is Paris.",
                completion_tokens=7,
            ),
            record(model_version="2", retrieval_scores=[0.2], sources=["x"], answer="", completion_tokens=0),
            record(model_version="2", status_code=429, completion_tokens=0),
        ]
    )
    m, v2 = signals.metrics, {"model": "m", "version": "2"}
    assert sample(m, "surge_quality_requests_total", **v2) == 3
    assert sample(m, "surge_quality_rejections_total", **v2, kind="429") == 1
    assert sample(m, "surge_quality_retrievals_total", **v2) == 2
    assert sample(m, "surge_quality_retrieval_hits_total", **v2) == 1
    assert sample(m, "surge_quality_retrieval_top_score_sum", **v2) == pytest.approx(1.0)
    assert sample(m, "surge_quality_answers_total", **v2) == 2
    assert sample(m, "surge_quality_empty_answers_total", **v2) == 1
    assert sample(m, "surge_quality_answer_tokens_sum", **v2) == 7
    assert sample(m, "surge_quality_groundedness_count", **v2) == 1
    assert sample(m, "surge_quality_groundedness_sum", **v2) == 1.0
    # Nothing leaked under the default version.
    assert sample(m, "surge_quality_requests_total", model="m", version="1") == 0


def test_refusals_are_counted_only_among_answers_whose_text_was_logged() -> None:
    signals = QualitySignals()
    signals.observe(
        [record(answer="I'm sorry, but I can't help."), record(answer=None), record(answer="Yes")]
    )
    m, v1 = signals.metrics, {"model": "m", "version": "1"}
    assert sample(m, "surge_quality_answers_total", **v1) == 3
    assert sample(m, "surge_quality_answers_inspected_total", **v1) == 2
    assert sample(m, "surge_quality_refusals_total", **v1) == 1


def test_a_request_without_retrieval_counts_no_retrieval_and_no_groundedness() -> None:
    q = assess(record(answer="The capital of France is Paris."), QualityPolicy())
    assert (q.retrieved, q.hit, q.top_score, q.groundedness) == (False, False, None, None)


def test_a_retrieval_that_found_nothing_is_a_miss() -> None:
    q = assess(record(sources=[], answer="I do not know."), QualityPolicy())
    assert (q.retrieved, q.hit, q.groundedness) == (True, False, None)


def test_quality_policy_rejects_out_of_range_thresholds_naming_the_field() -> None:
    with pytest.raises(ValidationError, match="hit_score"):
        QualityPolicy(hit_score=2.0)
    with pytest.raises(ValidationError, match="min_answer_tokens"):
        DriftMonitorSettings(quality={"min_answer_tokens": 0})


def test_a_batch_that_fails_is_not_counted_and_its_retry_is_counted_once() -> None:
    settings = DriftMonitorSettings()
    failures = [RuntimeError("broker down")]

    def publish(alerts: Any) -> None:
        if failures:
            raise failures.pop()

    signals = QualitySignals(metrics=QualityMetrics(CollectorRegistry()))
    handler = DriftHandler(DriftMonitor(settings), publish, quality=signals)
    closed = WindowResult(
        "m",
        0,
        3,
        {},
        (
            DriftAlertRecord(
                model="m",
                feature="f",
                test="t",
                score=1,
                threshold=0,
                window_index=0,
                window_size=3,
                reference_size=3,
            ),
        ),
        0.0,
    )
    handler.monitor.observe = lambda r: [closed]  # type: ignore[method-assign]  # every record closes a window
    batch = [record(request_id=str(i)) for i in range(3)]
    with pytest.raises(RuntimeError):
        handler.process(batch, [(0, i) for i in range(3)])
    assert sample(signals.metrics, "surge_quality_requests_total", model="m", version="1") == 0
    handler.process(batch, [(0, i) for i in range(3)])
    handler.process(batch, [(0, i) for i in range(3)])  # a replay of counted offsets
    assert sample(signals.metrics, "surge_quality_requests_total", model="m", version="1") == 3


untrusted_text = st.text(st.characters(codec="utf-8"), max_size=400)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    answer=st.one_of(st.none(), untrusted_text),
    sources=st.one_of(st.none(), st.lists(untrusted_text, max_size=5)),
    scores=st.lists(st.floats(-1, 1, allow_nan=False), max_size=5),
    status=st.integers(100, 599),
    tokens=st.integers(0, 10_000),
    version=st.text(max_size=20),
)
def test_any_record_content_gives_bounded_signals_and_never_raises(
    answer: str | None, sources: list[str] | None, scores: list[float], status: int, tokens: int, version: str
) -> None:
    r = record(
        answer=answer,
        sources=sources,
        retrieval_scores=scores,
        status_code=status,
        completion_tokens=tokens,
        model_version=version,
    )
    q = assess(r, QualityPolicy())
    assert q.groundedness is None or 0.0 <= q.groundedness <= 1.0
    assert q.version == (version or "1")
    assert not (q.empty or q.refusal or q.inspected) or q.answered
    QualityMetrics().observe(q)  # any label text is accepted by the registry
