"""Regenerate the figure tables of `benchmarks/README.md` from the benchmarks' JSON result files.

Hand-copied tables drift from the measurements (issue 13 found a README that said `top_k 4` of a run with
2); so every figure table in the README sits between marker comments and is rendered from JSON:

    <!-- generated: headlines from=benchmarks/measured -->   every result file's headline, one row each
    <!-- generated: table rag_latency -->                    that benchmark's table, headline and run facts
    ...anything here is replaced...
    <!-- /generated -->

A block reads `from=` (a folder relative to the repository root; the README's blocks name the committed
measurements) or, without it, `benchmarks/results/`; `--results DIR` makes every block read DIR.

    python -m benchmarks.render_readme                 # each block from its from= folder (or results/)
    python -m benchmarks.render_readme --results benchmarks/results   # everything from your own runs
    python -m benchmarks.render_readme --check         # exit 1 if the README is stale

A block whose result file is missing keeps its old content (a partial rerun does not erase the rest) and
is reported on stderr.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks._harness import REPO_ROOT, markdown_table
from benchmarks._headline import HEADLINE_HEADERS, Headline, headline_rows

README = REPO_ROOT / "benchmarks" / "README.md"
DEFAULT_RESULTS = REPO_ROOT / "benchmarks" / "results"
BLOCK = re.compile(
    r"(?P<open><!-- generated: (?P<kind>headlines|table) ?(?P<name>[a-z_0-9]*)(?: from=(?P<source>\S+))? -->\n)"
    r"(?P<body>.*?)"
    r"(?P<close><!-- /generated -->)",
    re.DOTALL,
)


def load_documents(results: Path) -> dict[str, dict[str, Any]]:
    """Every `<name>.json` in `results` that is a benchmark result (has a `benchmark` key), by name."""
    docs: dict[str, dict[str, Any]] = {}
    for path in sorted(results.glob("*.json")):
        doc = json.loads(path.read_text())
        if isinstance(doc, dict) and doc.get("benchmark") == path.stem:
            docs[path.stem] = doc
    return docs


def run_facts(doc: dict[str, Any]) -> str:
    """`Run <when> (<s> s) at commit <sha>, load average <start> -> <end> on <n> CPUs.`"""
    machine = doc.get("machine", {})
    commit = (doc.get("git_commit") or machine.get("git_commit") or "unknown")[:10]
    dirty = " (uncommitted changes)" if doc.get("git_dirty") else ""
    start = doc.get("load_average_at_start") or machine.get("load_average_at_start")
    end = doc.get("load_average_at_end")
    load = f"{start[0]:.1f}" if start else "?"
    if end:
        load += f" -> {end[0]:.1f}"
    when = doc.get("started_at", "?")
    duration = f" ({doc['duration_s']} s)" if "duration_s" in doc else ""
    return (
        f"Run {when}{duration} at commit `{commit}`{dirty}, load average (1 min) {load} "
        f"on {machine.get('cpu_count', '?')} CPUs."
    )


def render_table(doc: dict[str, Any]) -> str:
    parts = []
    if doc.get("headline"):
        parts.append(f"**Headline**: {Headline.from_dict(doc['headline']).line()}")
    parts.append(run_facts(doc))
    if "table" in doc:
        parts.append(markdown_table(doc["table"]["headers"], doc["table"]["rows"]))
    return "\n\n".join(parts) + "\n"


def render_headlines(docs: dict[str, dict[str, Any]]) -> str:
    return markdown_table(HEADLINE_HEADERS, headline_rows(dict(docs))) + "\n"


def render(
    text: str,
    load: Callable[[str | None], dict[str, dict[str, Any]]],
    warn: Callable[[str], None] | None = None,
) -> str:
    """`text` with every generated block re-rendered; `load(source)` gives the documents of a block's
    `from=` folder (None: the default). Blocks without a document keep their content."""

    def replace(match: re.Match[str]) -> str:
        kind, name = match["kind"], match["name"]
        docs = load(match["source"])
        if kind == "headlines":
            body = render_headlines(docs) if docs else match["body"]
        elif name in docs:
            body = render_table(docs[name])
        else:
            if warn is not None:
                warn(
                    f"no result file for '{name}' in {match['source'] or 'the results folder'}: left as it was"
                )
            body = match["body"]
        return match["open"] + body + match["close"]

    return BLOCK.sub(replace, text)


def loader(results: Path | None) -> Callable[[str | None], dict[str, dict[str, Any]]]:
    """Documents per block source: `results` for every block when given, else the block's from= folder."""
    cache: dict[Path, dict[str, dict[str, Any]]] = {}

    def load(source: str | None) -> dict[str, dict[str, Any]]:
        folder = results or (REPO_ROOT / source if source else DEFAULT_RESULTS)
        if folder not in cache:
            cache[folder] = load_documents(folder) if folder.is_dir() else {}
        return cache[folder]

    return load


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--results", type=Path, default=None, help="read every block from this folder")
    parser.add_argument("--readme", type=Path, default=README)
    parser.add_argument("--check", action="store_true", help="exit 1 if the README differs from a render")
    args = parser.parse_args(argv)
    before = args.readme.read_text()
    after = render(before, loader(args.results), warn=lambda message: print(message, file=sys.stderr))
    if args.check:
        if after != before:
            print(f"{args.readme} is stale: run python -m benchmarks.render_readme", file=sys.stderr)
            return 1
        return 0
    args.readme.write_text(after)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
