"""The one figure each benchmark is judged by, built in one place so every result file says it the same way.

Every `benchmarks/results/<name>.json` carries a top-level

    "headline": {"metric", "value", "goal", "better": "higher" | "lower", "baseline", "met"}

`value` is a ratio against the fairest baseline measured in the same run (e.g. surge's RAG total p50 / the
same models in-process), `goal` the figure it should reach, `better` which way is good, `baseline` says in
words what the denominator was. `met` is derived: value <= goal when lower is better, >= when higher.

Worked example: `Headline.ratio("RAG total p50, surge / in-process", 1180.0, 1100.0, goal=1.10,
better="lower", baseline="same models in-process")` -> value 1.073, met True.
A benchmark that could not measure its baseline still writes a headline, with value None and met None, so
a reader (and `run_all`'s table) sees the gap instead of a missing key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Better = Literal["higher", "lower"]
HEADLINE_FIELDS = ("metric", "value", "goal", "better", "baseline")


@dataclass(frozen=True)
class Headline:
    """One benchmark's headline: a measured ratio, its goal and which direction is better."""

    metric: str
    value: float | None
    goal: float | None
    better: Better
    baseline: str
    # Figures that qualify the headline and travel with it (e.g. trace replay's `slo_attainment` and its goal).
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.metric or not self.baseline:
            raise ValueError("a headline names its metric and its baseline")
        if self.better not in ("higher", "lower"):
            raise ValueError(f"better must be 'higher' or 'lower', got {self.better!r}")

    @classmethod
    def ratio(
        cls,
        metric: str,
        measured: float | None,
        baseline_value: float | None,
        *,
        goal: float | None,
        better: Better,
        baseline: str,
        digits: int = 3,
    ) -> Headline:
        """measured / baseline_value (None when either is missing or the baseline is zero)."""
        value = (
            round(measured / baseline_value, digits)
            if measured is not None and baseline_value not in (None, 0)
            else None
        )
        return cls(metric=metric, value=value, goal=goal, better=better, baseline=baseline)

    @property
    def met(self) -> bool | None:
        """Whether the value reaches the goal (None when either is unknown)."""
        if self.value is None or self.goal is None:
            return None
        return self.value <= self.goal if self.better == "lower" else self.value >= self.goal

    def as_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "value": self.value,
            "goal": self.goal,
            "better": self.better,
            "baseline": self.baseline,
            "met": self.met,
            **self.details,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Headline:
        missing = [k for k in HEADLINE_FIELDS if k not in data]
        if missing:
            raise ValueError(f"headline lacks {missing}")
        details = {k: v for k, v in data.items() if k not in (*HEADLINE_FIELDS, "met")}
        return cls(**{k: data[k] for k in HEADLINE_FIELDS}, details=details)

    def goal_text(self) -> str:
        if self.goal is None:
            return "(none)"
        return f"{'<=' if self.better == 'lower' else '>='} {self.goal:g}"

    def line(self) -> str:
        """One line for a summary: `metric: 1.07 (goal <= 1.1, met; baseline: ...)`."""
        value = "not measured" if self.value is None else f"{self.value:g}"
        met = {True: "met", False: "NOT met", None: "no verdict"}[self.met]
        return f"{self.metric}: {value} (goal {self.goal_text()}, {met}; baseline: {self.baseline})"


def headline_rows(docs: dict[str, dict[str, Any] | None]) -> list[list[Any]]:
    """Rows `[benchmark, metric, value, goal, met, baseline, commit, load]` for result documents by name
    (None for a benchmark whose run wrote nothing)."""
    rows: list[list[Any]] = []
    for name, doc in docs.items():
        if doc is None:
            rows.append([name, "(no results: the run failed)", None, None, None, None, None, None])
            continue
        data = doc.get("headline")
        if not data:
            rows.append([name, "(no headline in this result file)", None, None, None, None, None, None])
            continue
        headline = Headline.from_dict(data)
        machine = doc.get("machine", {})
        commit = (doc.get("git_commit") or machine.get("git_commit") or "")[:10] or None
        load = doc.get("load_average_at_start") or machine.get("load_average_at_start")
        rows.append(
            [
                name,
                headline.metric,
                headline.value,
                headline.goal_text(),
                {True: "yes", False: "no", None: "?"}[headline.met],
                headline.baseline,
                commit,
                f"{load[0]:.1f}" if load else None,
            ]
        )
    return rows


HEADLINE_HEADERS = ["benchmark", "headline", "value", "goal", "met", "baseline", "commit", "load (1 min)"]
