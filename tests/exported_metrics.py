"""What the project exports to Prometheus, and which metric names a PromQL expression reads.

Used by the dashboard and rules tests: every name an expression reads must be a series the code exports.

- Consumers and the drift monitor (prometheus-client): their metric classes are instantiated into one
  registry and the families read back with their type's suffixes (`_total`; `_bucket`, `_sum`, `_count`).
- Serve deployments (`ray.serve.metrics`): found in the source by their constructor calls; Ray exports them
  with the `ray_` prefix (as the dashboard's existing panels, measured against a running cluster, read them).
- Ray's own series the dashboard reads, each checked to occur in the installed Ray's source.
- Recording rules of the rules file (they become series).
  The cost counters (`deployments/cost_metrics.py`) are built through a cached `_counter("name", ...)`
  helper: its calls count as counters too.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import ray
import yaml
from prometheus_client import CollectorRegistry

REPO_ROOT = Path(__file__).resolve().parent.parent
RULES_FILE = REPO_ROOT / "helm" / "surge" / "files" / "prometheus-rules.yaml"
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
RAY_BUILTIN = {"ray_serve_deployment_replica_healthy": "serve_deployment_replica_healthy"}
PROMQL_KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "offset", "bool"}
)


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression reads (not functions, label names, keywords, numbers or durations)."""
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)  # string literals (label values)
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range and subquery durations
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)  # label lists
    names = set()
    for match in re.finditer(r"(?<![\w.])[A-Za-z_:][A-Za-z0-9_:]*", text):
        name = match.group()
        if name in PROMQL_KEYWORDS or text[match.end() :].lstrip().startswith("("):
            continue  # a keyword or a function call
        if re.fullmatch(r"(?:\d+[smhdwy])+|[eE]\d*|inf|nan|Inf|NaN", name):
            continue
        names.add(name)
    return names


def client_metric_names() -> set[str]:
    from pipelines.drift_windows import DriftMetrics
    from pipelines.metrics import ConsumerMetrics
    from pipelines.quality import QualityMetrics

    registry = CollectorRegistry()
    DriftMetrics(registry)
    ConsumerMetrics("group", registry=registry)
    QualityMetrics(registry)
    return {f.name + s for f in registry.collect() for s in SUFFIXES.get(f.type, ("",))}


def serve_metric_names() -> set[str]:
    """`ray_<name>` (+ histogram suffixes) of every `metrics.Counter/Gauge/Histogram("name", ...)` call."""
    names = set()
    for path in (REPO_ROOT / "deployments").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "_counter"
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                names.add(f"ray_{node.args[0].value}")
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "metrics"
                and node.func.attr in ("Counter", "Gauge", "Histogram")
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                kind = node.func.attr.lower()
                suffixes = SUFFIXES[kind] if kind == "histogram" else ("",)  # Ray keeps a counter's name
                names |= {f"ray_{node.args[0].value}{s}" for s in suffixes}
    return names


def ray_builtin_names() -> set[str]:
    source = Path(ray.__file__).parent / "serve" / "_private" / "deployment_state.py"
    text = source.read_text()
    return {exported for exported, defined in RAY_BUILTIN.items() if f'"{defined}"' in text}


def recording_rule_names() -> set[str]:
    groups = yaml.safe_load(RULES_FILE.read_text())["groups"]
    return {r["record"] for g in groups for r in g["rules"] if "record" in r}


def exported_names() -> set[str]:
    """Every series name an expression of this project may read."""
    return client_metric_names() | serve_metric_names() | ray_builtin_names() | recording_rule_names()
