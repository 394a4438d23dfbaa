"""A throwaway local Prometheus server scraping Ray's metrics export port, for benchmarks that read the
`surge_cost_*` counters the way an operator's Prometheus would (`surge cost --prometheus URL`).

The binary is Debian's (`scripts/prometheus_tools.py ensure_prometheus`: the package that carries promtool
carries the server too), unpacked into `.tools/bin` on first use. It scrapes every second, keeps its data in
a temporary folder and listens on 127.0.0.1 only.
"""

from __future__ import annotations

import importlib.util
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from benchmarks._harness import REPO_ROOT, free_port, wait_http_ok


def prometheus_binary() -> Path:
    spec = importlib.util.spec_from_file_location(
        "prometheus_tools", REPO_ROOT / "scripts" / "prometheus_tools.py"
    )
    if spec is None or spec.loader is None:
        raise ImportError("scripts/prometheus_tools.py not found")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    path: Path = module.ensure_prometheus()
    return path


def ray_metrics_export_port() -> int:
    """The metrics export port of this process's (single-node) Ray: where Serve's metrics are served."""
    import ray

    (node,) = [n for n in ray.nodes() if n["Alive"]]
    return int(node["MetricsExportPort"])


@contextmanager
def local_prometheus(target_port: int, scrape_interval_s: float = 1.0) -> Iterator[str]:
    """Prometheus scraping 127.0.0.1:`target_port`; yields its URL, stops it (SIGTERM, by PID) at the end."""
    with tempfile.TemporaryDirectory(prefix="surge-bench-prometheus-") as tmp:
        config = Path(tmp) / "prometheus.yml"
        config.write_text(
            f"global:\n  scrape_interval: {scrape_interval_s:g}s\n  evaluation_interval: {scrape_interval_s:g}s\n"
            "scrape_configs:\n  - job_name: ray\n    static_configs:\n"
            f"      - targets: ['127.0.0.1:{target_port}']\n"
        )
        port = free_port()
        log = (Path(tmp) / "prometheus.log").open("wb")
        process = subprocess.Popen(
            [
                str(prometheus_binary()),
                f"--config.file={config}",
                f"--storage.tsdb.path={Path(tmp) / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_http_ok(f"{url}/-/ready", 60)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
            log.close()
