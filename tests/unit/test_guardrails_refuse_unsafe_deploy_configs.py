"""Guardrails on the deploy config: each rule refuses its unsafe config and accepts the safe one, an
override (`guardrails.allow`, `--allow`) lets it through and is logged, and the rules are one list."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import yaml

from deployments.app import build_app
from deployments.guardrails import CHECKS, RULES_FILE, DeployFacts, enforce, evaluate, load_rules
from deployments.guardrails import main as guardrails_cli
from deployments.model_registry import SurgeAppSettings

REPO_ROOT = Path(__file__).resolve().parents[2]
GPU_LLM = {"device": "cuda", "num_gpus": 1}


def settings(**sections: Any) -> SurgeAppSettings:
    return SurgeAppSettings.model_validate(sections)


# (rule id, the unsafe facts, the safe facts that differ in that one respect)
CASES: list[tuple[str, DeployFacts, DeployFacts]] = [
    (
        "gateway-auth",
        DeployFacts(settings(gateway={"allow_unauthenticated": True}), "0.0.0.0"),
        DeployFacts(settings(gateway={"allow_unauthenticated": True}), "127.0.0.1"),
    ),
    (
        "replica-budget",
        DeployFacts(settings(gateway={"autoscaling": {"min_replicas": 1, "max_replicas": 30}}), "0.0.0.0"),
        DeployFacts(settings(gateway={"autoscaling": {"min_replicas": 1, "max_replicas": 8}}), "0.0.0.0"),
    ),
    (
        "gpu-idle-to-zero",
        DeployFacts(
            settings(llm={**GPU_LLM, "autoscaling": {"min_replicas": 1, "max_replicas": 2}}), "0.0.0.0"
        ),
        DeployFacts(
            settings(llm={**GPU_LLM, "autoscaling": {"min_replicas": 0, "downscale_to_zero_delay_s": 600}}),
            "0.0.0.0",
        ),
    ),
    (
        "prompt-redaction",
        DeployFacts(
            settings(gateway={"inference_log": {"include_prompt": True, "redact_prompt": False}}), None
        ),
        DeployFacts(
            settings(gateway={"inference_log": {"include_prompt": True, "redact_prompt": True}}), None
        ),
    ),
]


@pytest.mark.parametrize(("rule_id", "unsafe", "safe"), CASES, ids=[c[0] for c in CASES])
def test_each_rule_refuses_its_unsafe_config_and_accepts_the_safe_one(
    rule_id: str, unsafe: DeployFacts, safe: DeployFacts
) -> None:
    with pytest.raises(ValueError, match=f"guardrail {rule_id}:"):
        enforce(unsafe)
    assert [v.rule.id for v in evaluate(safe)] == []


@pytest.mark.parametrize(("rule_id", "unsafe", "safe"), CASES, ids=[c[0] for c in CASES])
def test_allowing_a_rule_lets_its_config_through_with_a_logged_warning(
    rule_id: str, unsafe: DeployFacts, safe: DeployFacts, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="ray.serve"):
        allowed = enforce(unsafe, allow=[rule_id])
    assert [v.rule.id for v in allowed] == [rule_id]
    assert f"guardrail {rule_id} overridden by guardrails.allow" in caplog.text


def test_keep_warm_is_the_explicit_way_to_hold_a_gpu() -> None:
    warm = settings(llm={**GPU_LLM, "autoscaling": {"min_replicas": 1, "keep_warm": True}})
    assert evaluate(DeployFacts(warm, "0.0.0.0")) == []


def test_an_unknown_host_is_not_treated_as_loopback() -> None:
    with pytest.raises(ValueError, match="gateway-auth.*http host unknown"):
        enforce(DeployFacts(settings(gateway={"allow_unauthenticated": True}), None))


def test_allowing_an_unknown_rule_id_fails_naming_it() -> None:
    with pytest.raises(ValueError, match=r"guardrails.allow: unknown rule id\(s\) \['gateway-authh'\]"):
        enforce(DeployFacts(settings(), "127.0.0.1"), allow=["gateway-authh"])


def test_building_the_app_enforces_the_guardrails_and_honours_the_config_override(
    caplog: pytest.LogCaptureFixture,
) -> None:
    unsafe = {"gateway": {"inference_log": {"include_prompt": True, "redact_prompt": False}}}
    with pytest.raises(ValueError, match="guardrail prompt-redaction"):
        build_app(unsafe)
    with caplog.at_level(logging.WARNING, logger="ray.serve"):
        build_app({**unsafe, "guardrails": {"allow": ["prompt-redaction"]}})
    assert "guardrail prompt-redaction overridden" in caplog.text


def test_the_cli_checks_a_serve_config_and_takes_allow_overrides(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    shipped = REPO_ROOT / "deployments" / "serve_config.yaml"
    assert guardrails_cli(["check", str(shipped)]) == 0
    config = yaml.safe_load(shipped.read_text())
    config["http_options"]["host"] = "0.0.0.0"
    config["applications"][0]["args"]["gateway"]["allow_unauthenticated"] = True
    unsafe = tmp_path / "serve_config.yaml"
    unsafe.write_text(yaml.safe_dump(config))
    assert guardrails_cli(["check", str(unsafe)]) == 1
    assert "guardrail gateway-auth:" in capsys.readouterr().err
    with caplog.at_level(logging.WARNING, logger="ray.serve"):
        assert guardrails_cli(["check", str(unsafe), "--allow", "gateway-auth"]) == 0
    assert "guardrail gateway-auth overridden" in caplog.text


def test_every_rule_has_a_case_here_and_a_check_on_both_sides() -> None:
    rules = load_rules()
    assert {r.id for r in rules} == {c[0] for c in CASES}
    template = (REPO_ROOT / "helm" / "surge" / "templates" / "_guardrails.tpl").read_text()
    for rule in rules:
        assert rule.check in CHECKS
        assert f'eq $rule.check "{rule.check}"' in template, f"the chart does not implement {rule.check}"


def test_the_chart_reads_a_byte_identical_copy_of_the_rules() -> None:
    assert (
        REPO_ROOT / "helm" / "surge" / "files" / "guardrails.yaml"
    ).read_bytes() == RULES_FILE.read_bytes()
