"""`surge compare`: per alias with shadow traffic, one row per version and side, from inference-log records."""

from __future__ import annotations

from functools import cache
from typing import Any

import pytest
from pydantic import ValidationError

from pipelines.cli import build_parser
from pipelines.model_compare import Embed, summarise
from surge_core.records import InferenceLogRecord


def _record(
    version: str, shadow: bool, status: int = 200, tokens: int = 10, **fields: Any
) -> InferenceLogRecord:
    name, _, number = version.partition("@")
    return InferenceLogRecord(
        **{"request_id": "r", **fields},
        route="/v1/chat/completions",
        model=name,
        model_version=number,
        status_code=status,
        latency_s=1.0,
        ttft_s=0.1,
        completion_tokens=tokens,
        shadow=shadow,
    )


def test_each_version_gets_error_rate_ttft_tokens_per_second_and_length_drift() -> None:
    records = [_record("m@1", False, alias="chat") for _ in range(4)]
    records += [_record("m@2", True, alias="chat", tokens=20) for _ in range(3)]
    records += [_record("m@2", True, status=502, alias="chat", tokens=0)]
    records += [_record("m@1", False, alias="no-shadow"), _record("m@1", False)]
    report = summarise(records)
    assert list(report) == ["chat"]  # only aliases with shadow traffic
    primary, shadow = report["chat"]
    assert primary["version"] == "m@1" and not primary["shadow"] and primary["error_rate"] == 0
    assert shadow["version"] == "m@2" and shadow["shadow"] and shadow["error_rate"] == 0.25
    assert shadow["tokens_per_s"] == 20 and primary["mean_output_tokens"] == 10
    assert shadow["output_length_drift_ks"] == 1.0 and primary["ttft_p95_s"] == 0.1
    assert shadow["answer_agreement"] is None  # no embedding model given
    assert shadow["agreement_pairs"] == 0  # no record names its primary


@cache
def _embed() -> Embed:
    """The Embedder's own model (all-MiniLM-L6-v2, from its wheel), loaded once for the module."""
    from surge_core.embedding import EmbeddingModelSettings, TextEmbedder

    return TextEmbedder(EmbeddingModelSettings()).embed


def _pair(n: int, primary_answer: str, shadow_answer: str) -> list[InferenceLogRecord]:
    primary = _record("m@1", False, alias="chat", answer=primary_answer, request_id=f"req-{n}")
    shadow = _record(
        "m@2", True, alias="chat", answer=shadow_answer, request_id=f"shadow-{n}", shadow_of=f"req-{n}"
    )
    return [primary, shadow]


QUESTIONS_ANSWERED = [
    "Paris is the capital of France.",
    "Water boils at 100 degrees Celsius at sea level.",
    "The mitochondria is the powerhouse of the cell.",
]
UNRELATED = [
    "My cat enjoys sleeping on the warm windowsill.",
    "The quarterly invoice is attached to this email.",
    "Bring an umbrella, rain is expected tomorrow.",
]


def test_equal_answers_agree_fully_and_unrelated_answers_barely() -> None:
    same = [r for n, a in enumerate(QUESTIONS_ANSWERED) for r in _pair(n, a, a)]
    unrelated = [
        r for n, (a, b) in enumerate(zip(QUESTIONS_ANSWERED, UNRELATED, strict=True)) for r in _pair(n, a, b)
    ]
    (_, agreeing) = summarise(same, _embed())["chat"]
    (_, disagreeing) = summarise(unrelated, _embed())["chat"]
    assert agreeing["agreement_pairs"] == disagreeing["agreement_pairs"] == 3
    assert agreeing["answer_agreement"] == pytest.approx(1.0, abs=1e-3)
    assert 0 <= disagreeing["answer_agreement"] < 0.3, disagreeing


def test_agreement_pairs_only_answered_shadows_with_their_answered_primary() -> None:
    records = _pair(0, "Paris is the capital of France.", "Paris is France's capital city.")
    records += [
        _record("m@2", True, alias="chat", answer="x", request_id="s-1", shadow_of="gone")
    ]  # no primary
    records += [_record("m@2", True, 502, alias="chat", request_id="s-2", shadow_of="req-0")]  # failed shadow
    records += [_record("m@2", True, alias="chat", request_id="s-3")]  # a version 1-style record: no link
    (_, shadow) = summarise(records, _embed())["chat"]
    assert shadow["agreement_pairs"] == 1 and shadow["requests"] == 4
    assert 0.7 < shadow["answer_agreement"] <= 1.0  # a paraphrase agrees closely


def test_a_version_1_record_still_reads_and_only_a_version_2_shadow_names_its_primary() -> None:
    old = InferenceLogRecord.model_validate(
        {"schema_version": 1, "request_id": "a", "route": "/v1/chat/completions", "model": "m",
         "status_code": 200, "latency_s": 0.5}
    )  # fmt: skip
    assert old.schema_version == 1 and old.shadow_of is None
    assert _record("m@2", True, shadow_of="req-1").schema_version == 2
    with pytest.raises(ValidationError, match="shadow_of"):
        InferenceLogRecord.model_validate({**old.model_dump(), "shadow": True, "shadow_of": "req-1"})
    with pytest.raises(ValidationError, match="shadow_of"):
        _record("m@1", False, shadow_of="req-1")  # a primary mirrors nothing


def test_compare_is_a_surge_command() -> None:
    argv = ["compare", "--topic-prefix", "t."]
    args = build_parser(argv).parse_args(argv)
    assert args.topic_prefix == "t." and callable(args.handler)
