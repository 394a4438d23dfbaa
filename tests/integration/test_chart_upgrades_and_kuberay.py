"""Upgrades keep the Ray cluster; the KubeRay version floor is checked where Helm can see the CRDs.

Both need a modified copy of the chart: a bumped Chart.yaml, or the CRD `lookup` replaced by a file (Helm's
`lookup` returns nothing without a cluster, which is also why `helm template` never fails the check).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures_helm import CHART_DIR, SCENARIOS, crds_dir, load_documents

pytestmark = pytest.mark.integration


def _copy_chart(tmp_path: Path) -> Path:
    chart = tmp_path / "surge"
    shutil.copytree(CHART_DIR, chart)
    return chart


def _template(helm_bin: Path, chart: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(helm_bin), "template", "surge", str(chart), "-n", "surge", "-f", str(SCENARIOS["default"]), *args],
        capture_output=True, text=True,
    )  # fmt: skip


def _ray_cluster_config(output: str) -> dict[str, Any]:
    service = next(d for d in load_documents(output) if d["kind"] == "RayService")
    config: dict[str, Any] = service["spec"]["rayClusterConfig"]
    return config


@pytest.mark.parametrize("pin_tag", [False, True], ids=["chart-version", "chart-and-app-version-tag-pinned"])
def test_chart_version_bump_keeps_the_cluster_spec_identical(
    helm_bin: Path, tmp_path: Path, pin_tag: bool
) -> None:
    """KubeRay starts a new RayCluster when rayClusterConfig changes: a chart release alone must not."""
    sets = ["--set", "image.tag=0.1.0"] if pin_tag else []
    before = _template(helm_bin, CHART_DIR, *sets)
    assert before.returncode == 0, before.stderr
    chart = _copy_chart(tmp_path)
    meta = (chart / "Chart.yaml").read_text()
    bumped = re.sub(r"(?m)^version: .*$", "version: 9.9.9", meta)
    if pin_tag:
        bumped = re.sub(r"(?m)^appVersion: .*$", 'appVersion: "9.9.9"', bumped)
    assert bumped != meta
    (chart / "Chart.yaml").write_text(bumped)
    after = _template(helm_bin, chart, *sets)
    assert after.returncode == 0, after.stderr
    assert "9.9.9" in after.stdout, "the bump must be visible somewhere (labels of other resources)"
    assert yaml.safe_dump(_ray_cluster_config(after.stdout)) == yaml.safe_dump(
        _ray_cluster_config(before.stdout)
    )


def _chart_with_crds(tmp_path: Path, drop: tuple[str, ...] = ()) -> Path:
    """The chart with `lookup` of the KubeRay CRDs replaced by the vendored CRD files (minus `drop`ped fields
    of spec.rayClusterConfig / spec.rayClusterSpec, to play an older KubeRay)."""
    chart = _copy_chart(tmp_path)
    (chart / "crds-under-test").mkdir()
    for plural in ("rayservices", "rayjobs"):
        crd = yaml.load((crds_dir() / f"ray.io_{plural}.yaml").read_bytes(), Loader=yaml.CSafeLoader)
        for version in crd["spec"]["versions"]:
            spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
            for parent in ("rayClusterConfig", "rayClusterSpec"):
                for field in drop:
                    spec.get(parent, {}).get("properties", {}).pop(field, None)
        (chart / "crds-under-test" / f"{plural}.yaml").write_text(yaml.safe_dump(crd))
        helpers = chart / "templates" / "_helpers.tpl"
        text = helpers.read_text()
        call = f'(lookup "apiextensions.k8s.io/v1" "CustomResourceDefinition" "" "{plural}.ray.io")'
        assert call in text
        helpers.write_text(text.replace(call, f'(.Files.Get "crds-under-test/{plural}.yaml" | fromYaml)'))
    return chart


def test_install_fails_with_a_clear_message_when_kuberay_is_older_than_1_5_1(
    helm_bin: Path, tmp_path: Path
) -> None:
    result = _template(helm_bin, _chart_with_crds(tmp_path, drop=("authOptions",)))
    assert result.returncode != 0
    assert "rayservices.ray.io on this cluster has no spec.rayClusterConfig.authOptions" in result.stderr
    assert "KubeRay operator >= 1.5.1" in result.stderr


def test_install_passes_the_kuberay_check_with_current_crds(helm_bin: Path, tmp_path: Path) -> None:
    result = _template(helm_bin, _chart_with_crds(tmp_path))
    assert result.returncode == 0, result.stderr


def test_the_kuberay_check_can_be_turned_off(helm_bin: Path, tmp_path: Path) -> None:
    chart = _chart_with_crds(tmp_path, drop=("authOptions",))
    assert _template(helm_bin, chart, "--set", "kuberay.checkCRDs=false").returncode == 0


def _spec_fields(node: Any, prefix: str = "") -> set[str]:
    """Every field name under a rendered KubeRay spec that is KubeRay's own (not a Kubernetes PodTemplate)."""
    fields: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key in (
                "template",
                "metadata",
                "resources",
                "securityContext",
                "serveConfigV2",
                "volumeMounts",
            ):
                fields.add(key)
                continue
            fields.add(key)
            fields |= _spec_fields(value)
    elif isinstance(node, list):
        for item in node:
            fields |= _spec_fields(item)
    return fields


def test_readme_lists_every_kuberay_field_the_chart_renders_with_its_first_release(
    scenarios: dict[str, Any],
) -> None:
    readme = (CHART_DIR / "README.md").read_text()
    table = readme.split("## KubeRay fields")[1].split("\n## ")[0]
    listed: dict[str, str] = {}
    for row in re.findall(r"^\| (`.*?) \| v?(\d+\.\d+\.\d+) \|", table, re.MULTILINE):
        for name in re.findall(r"`([A-Za-z0-9]+)`", row[0]):
            listed[name] = row[1]
    rendered: set[str] = set()
    for rendered_scenario in scenarios.values():
        for service in rendered_scenario.of_kind("RayService"):
            rendered |= _spec_fields({k: v for k, v in service["spec"].items() if k != "serveService"})
        job = rendered_scenario.feature_rayjob()
        rendered |= _spec_fields(job["spec"])
    # Plain values of KubeRay fields (policy names, statuses) are not fields.
    rendered -= {"requests", "limits", "nvidia.com/gpu", "cpu", "memory", "valueFrom", "secretKeyRef", "name",
                 "key", "mountPath", "policy", "condition", "jobStatus", "ttlSeconds", "type"}  # fmt: skip
    rendered = {f for f in rendered if "-" not in f}  # rayStartParams keys are Ray's flags
    missing = sorted(rendered - set(listed))
    assert not missing, f"KubeRay fields rendered but not in the README table: {missing}"
    assert listed["authOptions"] == "1.5.1"
    assert "1.5.1" in (CHART_DIR / "Chart.yaml").read_text()
