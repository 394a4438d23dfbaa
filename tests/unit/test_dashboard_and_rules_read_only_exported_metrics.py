"""The Grafana dashboard and the Prometheus rules read only series the code exports, and the dashboard
covers latency, rejections, drift, quality and cost per model and version."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from tests.exported_metrics import (
    REPO_ROOT,
    RULES_FILE,
    client_metric_names,
    exported_names,
    metric_names,
    serve_metric_names,
)

DASHBOARD = REPO_ROOT / "helm" / "surge" / "files" / "grafana-dashboard.json"


def dashboard_exprs() -> dict[str, str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return {f"{p['title']} [{t['refId']}]": t["expr"] for p in panels for t in p["targets"]}


def rule_exprs() -> dict[str, str]:
    groups = yaml.safe_load(RULES_FILE.read_text())["groups"]
    return {r.get("alert") or r["record"]: r["expr"] for g in groups for r in g["rules"]}


def unknown_names(exprs: dict[str, str]) -> dict[str, set[str]]:
    known = exported_names()
    return {where: missing for where, expr in exprs.items() if (missing := metric_names(expr) - known)}


def test_the_name_extractor_finds_metrics_and_skips_functions_labels_keywords_and_numbers() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, route) (rate(ray_x_bucket{namespace="$ns", le=~"2(\\\\.0)?"}[5m])))'
        " / ignoring (kind) group_left sum(rate(y_total[1d] offset 1h)) * 3600 > 1e3 and surge:rec:ratio"
    )
    assert metric_names(expr) == {"ray_x_bucket", "y_total", "surge:rec:ratio"}


def test_the_exported_names_include_each_source_with_its_suffixes() -> None:
    client = client_metric_names()
    assert {
        "surge_quality_refusals_total",
        "surge_quality_groundedness_bucket",
        "surge_consumer_lag",
    } <= client
    assert {"ray_surge_gateway_requests_total", "ray_surge_llm_time_to_first_token_seconds_bucket"} <= (
        serve_metric_names()
    )


def test_a_misspelt_metric_in_an_expression_is_reported() -> None:
    assert unknown_names({"panel": "sum(rate(surge_quality_refusal_total[5m]))"}) == {
        "panel": {"surge_quality_refusal_total"}
    }


def test_every_dashboard_expression_reads_only_exported_metrics() -> None:
    assert unknown_names(dashboard_exprs()) == {}


def test_every_rule_expression_reads_only_exported_metrics() -> None:
    read = set().union(*(metric_names(e) for e in rule_exprs().values()))
    assert {"surge_consumer_lag", "surge_quality_groundedness_count", "ray_surge_cost_usd_total"} <= read
    assert unknown_names(rule_exprs()) == {}


@pytest.mark.parametrize(
    ("topic", "needed"),
    [
        (
            "latency",
            {"ray_surge_gateway_request_seconds_bucket", "ray_surge_llm_time_to_first_token_seconds_bucket"},
        ),
        ("rejections", {"ray_surge_gateway_requests_total", "surge_quality_rejections_total"}),
        ("drift", {"surge_drift_score", "surge_drift_alerts_total"}),
        (
            "quality",
            {
                "surge_quality_retrieval_hits_total",
                "surge_quality_retrieval_top_score_bucket",
                "surge_quality_groundedness_sum",
                "surge_quality_refusals_total",
                "surge_quality_empty_answers_total",
                "surge_quality_answer_tokens_bucket",
            },
        ),
        (
            "cost",
            {
                "ray_surge_cost_usd_total",
                "ray_surge_cost_replica_seconds_total",
                "ray_surge_cost_gpu_seconds_total",
                "ray_surge_cost_idle_warm_seconds_total",
                "ray_surge_cost_tokens_total",
                "ray_surge_cost_cold_starts_total",
                "ray_surge_cost_cold_start_seconds_total",
            },
        ),
    ],
)
def test_the_dashboard_covers(topic: str, needed: set[str]) -> None:
    read = set().union(*(metric_names(e) for e in dashboard_exprs().values()))
    assert needed <= read, f"{topic}: no panel reads {sorted(needed - read)}"


def test_quality_and_cost_panels_break_down_by_model_and_version() -> None:
    for where, expr in dashboard_exprs().items():
        cost_or_quality = {n for n in exported_names() if "cost" in n} | {
            n for n in client_metric_names() if "quality" in n
        }
        if metric_names(expr) & cost_or_quality:
            if where.startswith("Spend by tenant"):
                continue  # tenants, across models on purpose
            assert "model, version" in expr, where


def test_the_dashboard_json_is_what_its_generator_makes() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "grafana_dashboard.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
