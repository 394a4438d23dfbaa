"""Session fixture for Prometheus tooling: a real `promtool` (Debian's prometheus package, unpacked into
.tools/bin by scripts/prometheus_tools.py on first use). It never skips: a missing promtool fails."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.fixtures_helm import REPO_ROOT, _load_script

RULES_FILE = REPO_ROOT / "helm" / "surge" / "files" / "prometheus-rules.yaml"
RULES_TESTS = REPO_ROOT / "tests" / "data" / "prometheus" / "surge-rules.test.yaml"


@pytest.fixture(scope="session")
def promtool() -> Path:
    path: Path = _load_script("prometheus_tools").ensure_promtool()
    version = subprocess.run([str(path), "--version"], capture_output=True, text=True, check=True)
    assert "promtool, version" in version.stdout + version.stderr
    return path
