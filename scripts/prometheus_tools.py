"""Unpack Debian's `promtool` (package `prometheus`) into `.tools/bin`, idempotently, without root; and, for
the cost replay benchmark, the `prometheus` server binary of the same package (`ensure_prometheus`).

The test suite checks the alerting rules (`promtool check rules`, `promtool test rules`) and the metrics
the stack exposes (`promtool check metrics`). Only package registries are reachable where CI runs, and no
root: `apt-get download prometheus` fetches the .deb into a temporary folder (no install, no root) and
`dpkg-deb -x` unpacks it; only `usr/bin/promtool` is kept. Measured on a shared 2-core machine (load
average about 6): 6 s for the 19 MB .deb (Debian 12: prometheus 2.42.0), once per checkout.

    .venv/bin/python scripts/prometheus_tools.py     # prints the promtool path (fetches on first use)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
TOOLS_BIN = REPO_ROOT / ".tools" / "bin"
PACKAGE = "prometheus"
MEMBER = Path("usr/bin/promtool")


def _works(path: Path) -> bool:
    if not (path.is_file() and os.access(path, os.X_OK)):
        return False
    result = subprocess.run([str(path), "--version"], capture_output=True, text=True, check=False)
    return result.returncode == 0 and path.name in (result.stdout + result.stderr)


def ensure_promtool(bin_dir: Path = TOOLS_BIN) -> Path:
    """The path of a working promtool, fetched and unpacked when missing.

    Written under a temporary name and renamed, so concurrent callers (several checkouts share `.tools`)
    never run a half-written binary. Fails with apt's or dpkg's own message when the package cannot be had.
    """
    return _ensure(MEMBER, bin_dir)


def ensure_prometheus(bin_dir: Path = TOOLS_BIN) -> Path:
    """The path of a working Prometheus server (`usr/bin/prometheus` of the same package), like promtool."""
    return _ensure(Path("usr/bin/prometheus"), bin_dir)


def _ensure(member: Path, bin_dir: Path) -> Path:
    target = bin_dir / member.name
    if _works(target):
        return target
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise FileNotFoundError(
                f"{tool} not found: promtool comes from Debian's '{PACKAGE}' package (or put a promtool "
                f"binary at {target})"
            )
    bin_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="surge-promtool-") as work:
        fetched = subprocess.run(
            ["apt-get", "download", PACKAGE], cwd=work, capture_output=True, text=True, check=False
        )
        debs = sorted(Path(work).glob(f"{PACKAGE}_*.deb"))
        if fetched.returncode != 0 or not debs:
            raise RuntimeError(f"apt-get download {PACKAGE} failed: {fetched.stderr.strip()}")
        unpacked = Path(work) / "root"
        subprocess.run(["dpkg-deb", "-x", str(debs[-1]), str(unpacked)], check=True, capture_output=True)
        fd, tmp = tempfile.mkstemp(dir=bin_dir, prefix=f".{member.name}.")
        with os.fdopen(fd, "wb") as out, (unpacked / member).open("rb") as src:
            shutil.copyfileobj(src, out)
        os.chmod(tmp, 0o755)
        os.replace(tmp, target)
    if not _works(target):
        raise RuntimeError(f"{target} was unpacked but does not run")
    return target


def main(argv: list[str]) -> int:
    if argv:
        print("usage: prometheus_tools.py", file=sys.stderr)
        return 2
    print(ensure_promtool())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
