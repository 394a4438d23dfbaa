"""NOTES.txt tells the operator how to reach the API and where the API key is.

`helm template` does not render NOTES.txt and `helm install --dry-run` needs a cluster, so the test renders
it from a copy of the chart where the NOTES body is wrapped in a template that emits it as a YAML string.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.fixtures_helm import CHART_DIR, SCENARIOS

pytestmark = pytest.mark.integration


def render_notes(helm_bin: Path, workdir: Path, values: Path) -> str:
    chart = workdir / "surge"
    shutil.copytree(CHART_DIR, chart)
    notes = (chart / "templates" / "NOTES.txt").read_text()
    (chart / "templates" / "NOTES.txt").unlink()
    (chart / "templates" / "zz-notes-under-test.yaml").write_text(
        '{{- define "surge.notesUnderTest" }}' + notes + "{{- end }}\n"
        'notes: {{ include "surge.notesUnderTest" . | quote }}\n'
    )
    result = subprocess.run(
        [str(helm_bin), "template", "surge", str(chart), "-n", "surge", "-f", str(values),
         "--show-only", "templates/zz-notes-under-test.yaml"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    text: str = yaml.safe_load(result.stdout)["notes"]
    return text


def test_notes_should_show_the_api_key_secret_and_how_to_reach_the_api(
    helm_bin: Path, tmp_path: Path
) -> None:
    notes = render_notes(helm_bin, tmp_path, SCENARIOS["default"])
    assert 'Secret "surge-api-keys", key "api-keys"' in notes
    assert "kubectl -n surge port-forward svc/surge-serve 8000:8000" in notes
    assert "/v1/chat/completions" in notes and '"model": "smollm2-135m-instruct"' in notes
    assert "smollm2-135m-instruct@1 (1 GPU per replica) scales to zero after 600 s idle" in notes
    assert (
        "smollm2-135m-instruct@1: smollm2-135m-instruct (vllm, 1 GPU per replica, worker group gpu-1)"
        in notes
    )


def test_notes_should_list_every_model_version_and_alias(helm_bin: Path, tmp_path: Path) -> None:
    notes = render_notes(helm_bin, tmp_path, SCENARIOS["multi-gpu-groups"])
    assert "smollm2@2: smollm2-135m-instruct (vllm, 2 GPU per replica, worker group gpu-a100-2)" in notes
    assert "smollm2-cpu@1: smollm2-135m-instruct (vllm, CPU workers)" in notes
    assert "chat: smollm2@1 80, smollm2@2 20 (shadow smollm2-cpu@1, 0.05)" in notes


def test_notes_should_not_promise_gpu_scale_down_when_cpu_only(helm_bin: Path, tmp_path: Path) -> None:
    notes = render_notes(helm_bin, tmp_path, SCENARIOS["cpu-only"])
    assert "GPU" not in notes
    assert "port-forward" in notes


def test_notes_should_say_where_the_ray_token_secret_is_after_any_upgrade(
    helm_bin: Path, tmp_path: Path
) -> None:
    notes = render_notes(helm_bin, tmp_path, SCENARIOS["default"])
    # KubeRay names the Secret after the generated RayCluster: NOTES must look the name up, not print one.
    assert "get rayservice surge -o jsonpath='{.status.activeServiceStatus.rayClusterName}'" in notes
    assert "get secret \"$RAY_CLUSTER\" -o jsonpath='{.data.auth_token}'" in notes
    assert "NewCluster upgrade" in notes


def test_notes_should_say_why_no_service_monitor_exists_without_the_operator(
    helm_bin: Path, tmp_path: Path
) -> None:
    notes = render_notes(helm_bin, tmp_path, SCENARIOS["default"])  # helm template: no monitoring API
    assert "ServiceMonitor API is not installed" in notes
