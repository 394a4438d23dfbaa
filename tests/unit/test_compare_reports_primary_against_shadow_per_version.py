"""`surge compare`: per alias with shadow traffic, one row per version and side, from inference-log records."""

from __future__ import annotations

from typing import Any

from pipelines.cli import build_parser
from pipelines.model_compare import summarise
from surge_core.records import InferenceLogRecord


def _record(
    version: str, shadow: bool, status: int = 200, tokens: int = 10, **fields: Any
) -> InferenceLogRecord:
    name, _, number = version.partition("@")
    return InferenceLogRecord(
        request_id="r",
        route="/v1/chat/completions",
        model=name,
        model_version=number,
        status_code=status,
        latency_s=1.0,
        ttft_s=0.1,
        completion_tokens=tokens,
        shadow=shadow,
        **fields,
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
    assert shadow["answer_agreement"] is None  # answers are not in the log


def test_compare_is_a_surge_command() -> None:
    argv = ["compare", "--topic-prefix", "t."]
    args = build_parser(argv).parse_args(argv)
    assert args.topic_prefix == "t." and callable(args.handler)
