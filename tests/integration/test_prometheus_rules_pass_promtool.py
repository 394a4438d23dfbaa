"""The alerting rules: one file, valid for promtool, behaving as their unit tests say, and rendered by the
chart as a PrometheusRule only where the prometheus-operator's API exists."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from tests.fixtures_helm import SCENARIOS, load_documents
from tests.fixtures_prometheus import RULES_FILE, RULES_TESTS

pytestmark = pytest.mark.integration

RULE_API = "monitoring.coreos.com/v1/PrometheusRule"


def promtool_run(promtool: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(promtool), *args], capture_output=True, text=True, timeout=120, check=False)


def rendered_rules(render_k8s: ModuleType, *sets: str, api: bool = True) -> list[dict]:
    apis = render_k8s.API_VERSIONS if api else tuple(a for a in render_k8s.API_VERSIONS if a != RULE_API)
    assert RULE_API in render_k8s.API_VERSIONS  # k8s/ carries the rules too
    text = render_k8s.helm_template(values_files=[SCENARIOS["default"]], set_values=sets, api_versions=apis)
    return [d for d in load_documents(text) if d["kind"] == "PrometheusRule"]


def test_the_rules_file_passes_promtool_check_rules(promtool: Path) -> None:
    result = promtool_run(promtool, "check", "rules", str(RULES_FILE))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_rules_fire_and_stay_quiet_as_their_promtool_unit_tests_say(promtool: Path) -> None:
    result = promtool_run(promtool, "test", "rules", str(RULES_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_broken_rule_fails_promtool_check_rules(promtool: Path, tmp_path: Path) -> None:
    """The check is not vacuous: promtool rejects a rule with bad PromQL."""
    broken = tmp_path / "broken.yaml"
    broken.write_text("groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: sum(rate(x[5m])\n")
    assert promtool_run(promtool, "check", "rules", str(broken)).returncode != 0


def test_the_chart_renders_the_rules_file_as_the_prometheusrule_spec(
    render_k8s: ModuleType, promtool: Path
) -> None:
    (rule,) = rendered_rules(render_k8s)
    assert rule["spec"] == yaml.safe_load(RULES_FILE.read_text())  # one source, nothing templated in it
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"  # what the Prometheus selects
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as spec:
        yaml.safe_dump(rule["spec"], spec)
        spec.flush()
        result = promtool_run(promtool, "check", "rules", spec.name)
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_prometheusrule_without_the_operators_api_or_when_turned_off(render_k8s: ModuleType) -> None:
    assert rendered_rules(render_k8s, api=False) == []
    assert rendered_rules(render_k8s, "monitoring.prometheusRule.enabled=false") == []
    assert rendered_rules(render_k8s, "monitoring.enabled=false") == []
