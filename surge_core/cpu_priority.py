"""Run a whole process at a lower CPU priority (a higher nice value), threads and future children included.

Why per thread: on Linux the nice value belongs to a thread, and `os.nice` or `setpriority(PRIO_PROCESS, 0)`
changes only the calling one (see setpriority(2), "BUGS"). A Ray replica's constructor does not run on the
process's main thread, and an engine has started threads of its own by the time it loads, so each thread in
`/proc/self/task` is set. Threads and processes started afterwards inherit the value of the thread that starts
them, which is now the lowered one: torch's intra-op pool and vLLM's engine-core process included.

What it is for: a shadow model version (issue 14) answers copies of requests nobody waits for. On a node whose
cores it shares with the primary, nice 19 makes the kernel's scheduler give the primary's threads the CPU
whenever both are runnable (CFS weight 15 against 1024 at nice 0), so the shadow uses idle cycles only.
Raising the value needs no privilege; lowering it again does, which is why nothing here goes back.

Measured (tests/integration/test_model_versions_split_stick_roll_back_and_shadow.py, tiny Llama on the
transformers engine, 2 cores, requests back to back so that each shadow overlaps the next caller, 3 x 15
requests a side, load 3-6): the caller's p50 with the shadow on / off was 1.02x and 1.09x with the shadow at
nice 0, and 1.10x, 0.96x and 0.95x at nice 19. The tiny model generates in a few milliseconds, so the
difference is within this test's noise; the lever is for shadows whose generation is long enough to overlap
the primary's (a real model on CPU), where an un-niced shadow takes half the cores.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["lower_cpu_priority", "thread_nice_values"]


def _thread_ids() -> list[int]:
    """Every thread of this process (the calling one included); [0], the calling thread, without /proc."""
    try:
        return [int(tid.name) for tid in Path("/proc/self/task").iterdir()]
    except OSError:  # no /proc (not Linux)
        return [0]


def lower_cpu_priority(nice: int) -> int:
    """Set every thread of this process to `nice` (0..19) unless it is already at or above it; returns the
    calling thread's nice value afterwards. `nice` 0 changes nothing."""
    if not 0 <= nice <= 19:
        raise ValueError(f"nice must be within 0..19, got {nice}")
    if nice == 0:
        return os.getpriority(os.PRIO_PROCESS, 0)
    for tid in _thread_ids():
        try:
            if os.getpriority(os.PRIO_PROCESS, tid) < nice:
                os.setpriority(os.PRIO_PROCESS, tid, nice)
        except ProcessLookupError:  # the thread ended meanwhile
            continue
    return os.getpriority(os.PRIO_PROCESS, 0)


def thread_nice_values(pid: int | None = None) -> dict[int, int]:
    """{thread id: nice value} of every thread of `pid` (this process by default), read from /proc."""
    base = Path(f"/proc/{pid or os.getpid()}/task")
    values: dict[int, int] = {}
    for task in base.iterdir():
        try:
            # Field 19 of stat is the nice value; the command name (field 2) may hold spaces, so split after ')'.
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        values[int(task.name)] = int(fields[16])
    return values
