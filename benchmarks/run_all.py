"""Run every benchmark, each in its own process (each starts and stops what it needs), then write
`<out>/SUMMARY.md` with every result table, and print every benchmark's headline in one table.

    python -m benchmarks.run_all [--quick] [--out DIR] [--only hop_overhead cold_start ...]
    python -m benchmarks.run_all --base-url https://surge.example.com --api-key sk-...   # a cluster

Flags after `--` go to every benchmark (e.g. `-- --llm-model tiny-llama`).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks._harness import DEFAULT_OUT, REPO_ROOT, markdown_table
from benchmarks._headline import HEADLINE_HEADERS, headline_rows

BENCHMARKS = [
    "hop_overhead",
    "embedding_throughput",
    "rag_latency",
    "cold_start",
    "kafka_ingestion",
    "feature_and_drift",
    "trace_replay",
    "openai_load",
    "auth_overhead",
    "prefix_affinity",
    "stream_relay",
    "policy_sim",
    "cost_replay",
    "tracing_overhead",
]
# Need only Kafka (or nothing): against a cluster they would measure this machine, so --base-url skips them;
# prefix_affinity deploys both of its sides itself (the router is a deployment option); policy_sim simulates;
# cost_replay and tracing_overhead deploy their own apps (a usage topic, a traced twin); trace_replay deploys
# one app per compared policy.
LOCAL_ONLY = {
    "cost_replay",
    "tracing_overhead",
    "kafka_ingestion",
    "feature_and_drift",
    "auth_overhead",
    "prefix_affinity",
    "policy_sim",
    "trace_replay",
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        extra = argv[argv.index("--") + 1 :]
        argv = argv[: argv.index("--")]
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--base-url")
    parser.add_argument("--api-key")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS)
    args = parser.parse_args(argv)
    flags = ["--out", str(args.out)] + (["--quick"] if args.quick else [])
    if args.base_url:
        flags += ["--base-url", args.base_url] + (["--api-key", args.api_key] if args.api_key else [])
    outcomes: dict[str, tuple[int, float]] = {}
    for name in args.only or BENCHMARKS:
        if args.base_url and name in LOCAL_ONLY:
            continue
        print(f"\n=== {name} ===", flush=True)
        started = time.monotonic()
        rc = subprocess.call([sys.executable, "-m", f"benchmarks.{name}", *flags, *extra], cwd=REPO_ROOT)
        outcomes[name] = (rc, time.monotonic() - started)
    write_summary(args.out, list(outcomes))
    print(
        "\n"
        + markdown_table(
            ["benchmark", "exit code", "seconds"], [[n, rc, round(s, 1)] for n, (rc, s) in outcomes.items()]
        )
    )
    print("\n## Headlines\n\n" + headline_table(args.out, list(outcomes)))
    return 0 if all(rc == 0 for rc, _ in outcomes.values()) else 1


def load_results(out: Path, names: list[str]) -> dict[str, dict[str, Any] | None]:
    """Each benchmark's result document (None where its run wrote none)."""
    docs: dict[str, dict[str, Any] | None] = {}
    for name in names:
        path = out / f"{name}.json"
        docs[name] = json.loads(path.read_text()) if path.exists() else None
    return docs


def headline_table(out: Path, names: list[str]) -> str:
    """Markdown table of every benchmark's headline (value, goal, met, baseline, commit, load)."""
    return markdown_table(HEADLINE_HEADERS, headline_rows(load_results(out, names)))


def write_summary(out: Path, names: list[str]) -> Path:
    """SUMMARY.md: each benchmark's description, table and notes, from its JSON."""
    parts = ["# surge benchmark results\n", "## Headlines\n\n" + headline_table(out, names) + "\n"]
    for name in names:
        path = out / f"{name}.json"
        if not path.exists():
            parts.append(f"## {name}\n\n(no results: the run failed)\n")
            continue
        doc = json.loads(path.read_text())
        if "table" not in doc:  # auth_overhead writes its own flat document
            continue
        machine = doc["machine"]
        parts.append(
            f"## {name}\n\n{doc['description']}\n\nRun {doc['started_at']} ({doc['duration_s']} s), "
            f"{machine['cpu_count']} CPUs, load average at start {machine['load_average_at_start']}.\n\n"
            + markdown_table(doc["table"]["headers"], doc["table"]["rows"])
            + "".join(f"\n- {note}" for note in doc["notes"])
            + "\n"
        )
    summary = out / "SUMMARY.md"
    out.mkdir(parents=True, exist_ok=True)
    summary.write_text("\n".join(parts))
    return summary


if __name__ == "__main__":
    raise SystemExit(main())
