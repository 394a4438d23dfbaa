"""`lower_cpu_priority` sets the nice value of every thread of the process, not only the caller's (Linux keeps
it per thread), and threads and processes started afterwards inherit it. Run in a child interpreter: a
raised nice value cannot be lowered again without privilege, and the test process must keep its own."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from surge_core.cpu_priority import lower_cpu_priority

SCRIPT = r"""
import json, os, subprocess, sys, threading
from surge_core.cpu_priority import lower_cpu_priority, thread_nice_values

stop = threading.Event()
before = threading.Thread(target=stop.wait, daemon=True)  # exists before the call
before.start()
# Called from a thread that is not the main one, as in a Ray replica's constructor.
result = {}
caller = threading.Thread(target=lambda: result.update(nice=lower_cpu_priority(15)))
caller.start(); caller.join()
after = threading.Thread(target=stop.wait, daemon=True)  # started afterwards
after.start()
child = subprocess.run(
    [sys.executable, "-c", "import os; print(os.getpriority(os.PRIO_PROCESS, 0))"],
    capture_output=True, text=True, check=True,
)
print(json.dumps({
    "returned": result["nice"],
    "threads": sorted(thread_nice_values().values()),
    "after": thread_nice_values()[after.native_id],
    "child": int(child.stdout),
}))
stop.set()
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are Linux's")
def test_every_thread_existing_or_started_later_and_every_child_process_runs_at_the_lowered_priority() -> (
    None
):
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True)
    seen = json.loads(out.stdout)
    assert seen["returned"] == 15
    assert set(seen["threads"]) == {15}, seen  # the main thread and the one started before, too
    assert seen["after"] == 15 and seen["child"] == 15


def test_nice_zero_changes_nothing_and_values_outside_0_to_19_are_refused() -> None:
    import os

    before = os.getpriority(os.PRIO_PROCESS, 0)
    assert lower_cpu_priority(0) == before
    for bad in (-1, 20):
        with pytest.raises(ValueError, match="nice must be within 0..19"):
            lower_cpu_priority(bad)
