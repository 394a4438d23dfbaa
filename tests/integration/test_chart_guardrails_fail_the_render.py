"""The chart enforces the deploy guardrails (files/guardrails.yaml) with a real `helm template`: each rule
fails the render with its message, `guardrails.allow` lets it through into the app's own check, and the
values schema knows exactly the rules' ids."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.fixtures_helm import CHART_DIR, SCENARIOS, HelmRenderError, Renderer

pytestmark = pytest.mark.integration

DEFAULT = SCENARIOS["default"]  # GPU LLM that scales to zero
CPU = SCENARIOS["cpu-only"]
# rule id -> --set pairs that break it (from the default scenario)
BREAKING = {
    "replica-budget": ("autoscaling.gateway.maxReplicas=30",),
    "gpu-idle-to-zero": (),  # plus a GPU model with minReplicas 1 (a models list cannot be --set in part)
}


def _one_model(tmp_path: Path, gpus: int, **autoscaling: object) -> Path:
    """A values file whose one model version has `gpus` GPUs and these autoscaling keys."""
    path = tmp_path / "models.yaml"
    model = {"name": "m", "version": "1", "model": "smollm2-135m-instruct", "gpus": gpus, "dtype": "float32"}
    path.write_text(yaml.safe_dump({"models": [{**model, "autoscaling": autoscaling}]}))
    return path


def _breaking(rule_id: str, tmp_path: Path) -> list[Path]:
    return [DEFAULT] + ([_one_model(tmp_path, 1, minReplicas=1)] if rule_id == "gpu-idle-to-zero" else [])


@pytest.mark.parametrize("rule_id", sorted(BREAKING))
def test_a_breaking_value_fails_the_render_naming_the_rule(
    render_chart: Renderer, rule_id: str, tmp_path: Path
) -> None:
    with pytest.raises(HelmRenderError, match=f"guardrail {rule_id}: "):
        render_chart(*_breaking(rule_id, tmp_path), sets=BREAKING[rule_id])


@pytest.mark.parametrize("rule_id", sorted(BREAKING))
def test_allowing_the_rule_renders_and_hands_the_override_to_the_app(
    render_chart: Renderer, rule_id: str, tmp_path: Path
) -> None:
    sets = (*BREAKING[rule_id], f"guardrails.allow={{{rule_id}}}")
    rendered = render_chart(*_breaking(rule_id, tmp_path), sets=sets)
    serve_config = yaml.safe_load(rendered.one("RayService")["spec"]["serveConfigV2"])
    assert serve_config["applications"][0]["args"]["guardrails"] == {"allow": [rule_id]}


def test_keep_warm_is_the_explicit_way_to_hold_a_gpu_replica(render_chart: Renderer, tmp_path: Path) -> None:
    render_chart(DEFAULT, _one_model(tmp_path, 1, minReplicas=1, keepWarm=True))


def test_a_cpu_llm_may_stay_up_without_keep_warm(render_chart: Renderer, tmp_path: Path) -> None:
    render_chart(CPU, _one_model(tmp_path, 0, minReplicas=1))


def test_the_default_render_passes_every_guardrail_and_carries_no_override(render_chart: Renderer) -> None:
    serve_config = yaml.safe_load(render_chart(DEFAULT).one("RayService")["spec"]["serveConfigV2"])
    assert "guardrails" not in serve_config["applications"][0]["args"]


def test_the_values_schema_accepts_exactly_the_rules_ids(render_chart: Renderer) -> None:
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    ids = [r["id"] for r in yaml.safe_load((CHART_DIR / "files" / "guardrails.yaml").read_text())["rules"]]
    assert schema["properties"]["guardrails"]["properties"]["allow"]["items"]["enum"] == ids
    with pytest.raises(HelmRenderError, match="guardrails/allow/0"):
        render_chart(DEFAULT, sets=("guardrails.allow={gateway-authh}",))
