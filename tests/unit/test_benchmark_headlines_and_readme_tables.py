"""Benchmark headlines (one ratio, its goal and direction, in every result file) and README tables rendered
from the result JSON (fixtures in tests/data/bench_results)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from benchmarks import _harness as h
from benchmarks import render_readme, run_all
from benchmarks._headline import Headline, headline_rows

FIXTURES = Path(__file__).resolve().parent.parent / "data" / "bench_results"

README = """# benchmarks

prose stays

<!-- generated: headlines -->
old headline table
<!-- /generated -->

## RAG

<!-- generated: table rag_latency -->
| stale | table |
<!-- /generated -->

## Kafka

<!-- generated: table kafka_ingestion -->
stale
<!-- /generated -->

## Not run this time

<!-- generated: table cold_start -->
kept as it was
<!-- /generated -->
"""


def test_headline_is_the_measured_value_over_the_baseline_judged_against_the_goal() -> None:
    lower = Headline.ratio("total", 118.0, 110.0, goal=1.10, better="lower", baseline="in-process")
    assert lower.value == 1.073 and lower.met is True
    higher = Headline.ratio("rate", 45.0, 100.0, goal=0.9, better="higher", baseline="ceiling")
    assert higher.value == 0.45 and higher.met is False
    assert higher.as_dict() == {
        "metric": "rate",
        "value": 0.45,
        "goal": 0.9,
        "better": "higher",
        "baseline": "ceiling",
        "met": False,
    }


def test_a_headline_without_its_baseline_has_no_value_and_no_verdict() -> None:
    missing = Headline.ratio("total", 118.0, None, goal=1.1, better="lower", baseline="in-process")
    zero = Headline.ratio("total", 118.0, 0.0, goal=1.1, better="lower", baseline="in-process")
    assert missing.value is None and missing.met is None and zero.value is None
    assert "not measured" in missing.line()


def test_a_headline_must_say_which_direction_is_better_and_name_its_baseline() -> None:
    with pytest.raises(ValueError, match="better"):
        Headline("m", 1.0, 1.0, "faster", "b")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="baseline"):
        Headline("m", 1.0, 1.0, "lower", "")


def test_a_benchmark_without_a_headline_writes_no_result_file(tmp_path: Path) -> None:
    results = h.Results("no_headline", "a check", {}, {"x": 1}, ["a"], [[1]])
    with pytest.raises(ValueError, match="headline"):
        h.write_results(results, tmp_path, time.time(), machine={"git_commit": "abc"})
    assert not (tmp_path / "no_headline.json").exists()


def test_result_file_carries_headline_commit_and_load_average_at_top_level(tmp_path: Path) -> None:
    headline = Headline.ratio("total", 2.0, 1.0, goal=1.1, better="lower", baseline="in-process")
    results = h.Results("unit_check", "a check", {}, {"x": 1}, ["a"], [[1]], headline=headline)
    machine = {"git_commit": "abc123", "load_average_at_start": [0.5, 0.4, 0.3], "cpu_count": 2}
    doc = json.loads(h.write_results(results, tmp_path, time.time(), machine=machine).read_text())
    assert doc["headline"] == headline.as_dict() and doc["headline"]["met"] is False
    assert doc["git_commit"] == "abc123" and doc["load_average_at_start"] == [0.5, 0.4, 0.3]
    assert len(doc["load_average_at_end"]) == 3 and "git_dirty" in doc


def test_readme_tables_are_rendered_from_the_result_json() -> None:
    docs = render_readme.load_documents(FIXTURES)
    assert set(docs) == {"rag_latency", "kafka_ingestion"}  # a JSON without "benchmark" is not a result
    out = render_readme.render(README, render_readme.loader(FIXTURES))
    assert "prose stays" in out and "stale" not in out and "old headline table" not in out
    assert "| embed | 12.7 | 14.1 | 1.11 |" in out
    assert "| Kafka -> consumer -> index (docs/s) | 25.5 |" in out
    assert (
        "**Headline**: RAG total latency, surge / same models in-process (median of paired requests): " in out
    )
    assert "1.062 (goal <= 1.1, met" in out and "0.81 (goal >= 0.9, NOT met" in out
    assert "commit `0123456789`, load average (1 min) 1.5 -> 2.2" in out
    assert "commit `fedcba9876` (uncommitted changes)" in out
    headline_block = out.split("<!-- generated: headlines -->")[1].split("<!-- /generated -->")[0]
    assert "| rag_latency |" in headline_block and "| kafka_ingestion |" in headline_block
    assert render_readme.render(out, render_readme.loader(FIXTURES)) == out  # a second render changes nothing


def test_a_table_whose_result_file_is_missing_keeps_its_content_and_is_reported() -> None:
    warnings: list[str] = []
    out = render_readme.render(README, render_readme.loader(FIXTURES), warn=warnings.append)
    assert "<!-- generated: table cold_start -->\nkept as it was\n<!-- /generated -->" in out
    assert warnings == ["no result file for 'cold_start' in the results folder: left as it was"]


def test_a_block_reads_its_own_from_folder_unless_results_is_given(tmp_path: Path) -> None:
    folder = tmp_path / "measured"
    folder.mkdir()
    shutil.copy(FIXTURES / "kafka_ingestion.json", folder)
    source = (
        folder.relative_to(render_readme.REPO_ROOT)
        if folder.is_relative_to(render_readme.REPO_ROOT)
        else None
    )
    text = f"<!-- generated: table kafka_ingestion from={source or folder} -->\nold\n<!-- /generated -->\n"
    assert "| Kafka -> consumer -> index (docs/s) | 25.5 |" in render_readme.render(
        text, render_readme.loader(None)
    )
    assert "old" in render_readme.render(text, render_readme.loader(tmp_path))  # --results overrides from=


def test_check_mode_fails_on_a_stale_readme_and_passes_after_rendering(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(README)
    flags = ["--results", str(FIXTURES), "--readme", str(readme)]
    assert render_readme.main([*flags, "--check"]) == 1
    assert render_readme.main(flags) == 0
    assert render_readme.main([*flags, "--check"]) == 0


def test_run_all_lists_every_headline_including_runs_that_wrote_nothing(tmp_path: Path) -> None:
    for name in ("rag_latency", "kafka_ingestion"):
        shutil.copy(FIXTURES / f"{name}.json", tmp_path)
    table = run_all.headline_table(tmp_path, ["rag_latency", "kafka_ingestion", "cold_start"])
    assert "| rag_latency | RAG total latency" in table and "| 1.06 | <= 1.1 | yes |" in table
    assert "| kafka_ingestion |" in table and "| 0.81 | >= 0.9 | no |" in table
    assert "| cold_start | (no results: the run failed) |" in table
    rows = headline_rows({"old": {"benchmark": "old", "table": {}}})
    assert rows[0][1] == "(no headline in this result file)"
