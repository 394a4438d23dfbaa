"""CPU time of the server side of a local Serve app, so a benchmark can charge its load generator to no one.

On a 2-core machine the HTTP client that drives surge takes CPU the server would otherwise have, and an
in-process baseline has no client at all: wall-clock throughput then understates surge. Counting the CPU
seconds of the server processes (the Serve proxy and the app's replicas, found by the process titles Ray
gives its workers: `ray::ServeReplica:<app>:<deployment>`, `ray::ProxyActor`) gives work per server
CPU-second, which compares fairly with an in-process baseline's work per CPU-second.
Only works where the processes are visible (a local Ray); against `--base-url` the meter finds nothing and
benchmarks fall back to wall-clock ratios (and say so).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


def raylet_pid() -> int | None:
    """The raylet of the Ray node this process started (None when it started none, e.g. no local Ray).

    Workers are the raylet's children: looking only there keeps another session's `surge-bench` (other
    people run the same benchmarks on a shared machine) out of the count.
    """
    try:
        import ray
        from ray._private import ray_constants
        from ray._private import worker as ray_worker

        node = ray_worker._global_node
        if not ray.is_initialized() or node is None:
            return None
        raylets = node.all_processes.get(ray_constants.PROCESS_TYPE_RAYLET) or []
        return int(raylets[0].process.pid) if raylets else None
    except Exception:
        return None


def serve_pids(app: str, deployments: Iterable[str] | None = None, proxy: bool = True) -> dict[str, int]:
    """PIDs by role ("proxy", "<deployment>", "<deployment>#2"...) of `app`'s replicas and the proxy,
    among the workers of this process's Ray node ({} when there is none)."""
    import psutil

    raylet = raylet_pid()
    if raylet is None:
        return {}
    try:
        workers = psutil.Process(raylet).children(recursive=True)
    except psutil.Error:
        return {}
    wanted = set(deployments) if deployments is not None else None
    found: dict[str, int] = {}
    for process in workers:
        try:
            cmdline = process.cmdline()
        except psutil.Error:
            continue
        title = cmdline[0] if cmdline else ""
        if proxy and title.startswith("ray::ProxyActor"):
            found["proxy"] = process.pid
            continue
        prefix = f"ray::ServeReplica:{app}:"
        if not title.startswith(prefix):
            continue
        deployment = title[len(prefix) :].split(".", 1)[0].split()[0]
        if wanted is not None and deployment not in wanted:
            continue
        role, n = deployment, 1
        while role in found:
            n += 1
            role = f"{deployment}#{n}"
        found[role] = process.pid
    return found


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """user + system CPU seconds so far of each process, threads included (0 for one that is gone)."""
    import psutil

    totals: dict[str, float] = {}
    for role, pid in pids.items():
        try:
            times = psutil.Process(pid).cpu_times()
            totals[role] = times.user + times.system
        except psutil.Error:
            totals[role] = 0.0
    return totals


@dataclass
class CpuWindow:
    """CPU seconds each server process used between `start()` and `stop()`, and the wall time."""

    pids: dict[str, int]
    before: dict[str, float] | None = None
    used: dict[str, float] | None = None
    wall_s: float = 0.0
    _t0: float = 0.0

    def start(self) -> CpuWindow:
        self.before = cpu_seconds(self.pids)
        self._t0 = time.perf_counter()
        return self

    def stop(self) -> CpuWindow:
        after = cpu_seconds(self.pids)
        self.wall_s = time.perf_counter() - self._t0
        before = self.before or {}
        self.used = {role: max(0.0, after[role] - before.get(role, 0.0)) for role in after}
        return self

    @property
    def total_s(self) -> float | None:
        """Server CPU seconds in the window; None when no process was visible."""
        return sum(self.used.values()) if self.used and self.pids else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "wall_s": round(self.wall_s, 3),
            "cpu_s": {k: round(v, 3) for k, v in (self.used or {}).items()},
            "total_cpu_s": None if self.total_s is None else round(self.total_s, 3),
        }
