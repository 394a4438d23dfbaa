"""Generate the chart's Grafana dashboard (helm/surge/files/grafana-dashboard.json) from the panels below.

The dashboard is code so that a test can read every panel's PromQL and check each metric name against the
series the project's code registers (tests/integration/test_dashboard_and_rules_use_exported_metrics.py):
a renamed metric fails a test instead of leaving an empty panel. Sections: serving latency and
rejections, Kafka pipelines, drift and answer quality per model version, cost per model and version.

    .venv/bin/python scripts/grafana_dashboard.py           # rewrite the JSON
    .venv/bin/python scripts/grafana_dashboard.py --check   # exit 1 when the JSON is not what this makes
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = REPO_ROOT / "helm" / "surge" / "files" / "grafana-dashboard.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
NS = 'namespace="$namespace"'
MV = "model, version"  # quality and cost series are per model and version (`name@version`)
REJECTED = 'status=~"401|413|429|503"'  # the gateway's refusals: auth, body size, rate limit, back-pressure


def sel(metric: str, matchers: str = "") -> str:
    """`metric{namespace="$namespace", ...}`: every panel is scoped to the chosen install."""
    return f"{metric}{{{NS}{', ' + matchers if matchers else ''}}}"


def ratio(numerator: str, denominator: str, by: str = MV, window: str = "15m") -> str:
    """Per-group ratio of two counters' rates, e.g. refusals per inspected answer."""
    return f"sum by ({by}) (rate({sel(numerator)}[{window}])) / sum by ({by}) (rate({sel(denominator)}[{window}]))"


def quantile(q: float, histogram: str, by: str, window: str = "5m") -> str:
    return f"histogram_quantile({q}, sum by (le, {by}) (rate({sel(histogram + '_bucket')}[{window}])))"


@dataclass(frozen=True)
class Panel:
    title: str
    targets: tuple[tuple[str, str], ...]  # (PromQL, legend)
    unit: str = "short"
    description: str = ""


PANELS: tuple[Panel, ...] = (
    # -- serving: latency and rejections
    Panel(
        "Gateway latency (p50 / p95 / p99)",
        tuple(
            (quantile(q, "ray_surge_gateway_request_seconds", "route"), f"p{p} {{{{route}}}}")
            for q, p in ((0.5, 50), (0.95, 95), (0.99, 99))
        ),
        "s",
        "Seconds from request to response headers, by route (Ray exports Serve metrics with the ray_ prefix).",
    ),
    Panel(
        "Requests by status",
        ((f"sum by (status) (rate({sel('ray_surge_gateway_requests_total')}[5m]))", "{{status}}"),),
        "reqps",
    ),
    Panel(
        "Rejections (401 / 413 / 429 / 503)",
        (
            (
                f"sum by (status, route) (rate({sel('ray_surge_gateway_requests_total', REJECTED)}[5m]))",
                "{{status}} {{route}}",
            ),
        ),
        "reqps",
        "Auth failures, oversized bodies, rate limits and back-pressure 503s (queue full or stage not up in time).",
    ),
    Panel(
        "Healthy replicas per stage",
        ((f"sum by (deployment) ({sel('ray_serve_deployment_replica_healthy')})", "{{deployment}}"),),
        description="Serve replicas per deployment; 0 means the stage scaled to zero.",
    ),
    Panel(
        "Cold starts (request waiting for a stage at zero)",
        (
            (
                f"sum by (stage) (rate({sel('ray_surge_cold_start_seconds_count')}[15m])) * 900",
                "cold starts / 15 min {{stage}}",
            ),
            (quantile(0.95, "ray_surge_cold_start_seconds", "stage", "1h"), "p95 seconds {{stage}}"),
        ),
    ),
    Panel(
        "Tokens per second",
        (
            (
                f"sum by (model) (rate({sel('ray_surge_gateway_prompt_tokens_total')}[5m]))",
                "prompt {{model}}",
            ),
            (
                f"sum by (model) (rate({sel('ray_surge_gateway_completion_tokens_total')}[5m]))",
                "completion {{model}}",
            ),
        ),
    ),
    Panel(
        "Time to first token (p50 / p95)",
        tuple(
            (
                f"histogram_quantile({q}, sum by (le) (rate({sel('ray_surge_llm_time_to_first_token_seconds_bucket')}[5m])))",
                f"p{p}",
            )
            for q, p in ((0.5, 50), (0.95, 95))
        ),
        "s",
    ),
    # -- Kafka pipelines
    Panel(
        "Kafka consumer lag",
        ((f"sum by (group, topic) ({sel('surge_consumer_lag')})", "{{group}} {{topic}}"),),
        description="Records behind the high watermark (KEDA scales the consumers on the same lag).",
    ),
    Panel(
        "Dead-lettered records",
        (
            (
                f"sum by (topic, reason) (rate({sel('surge_consumer_records_dead_lettered_total')}[5m]))",
                "{{topic}} {{reason}}",
            ),
        ),
    ),
    # -- drift and quality, per model version
    Panel(
        "Drift scores",
        ((f"max by (model, feature, test) ({sel('surge_drift_score')})", "{{model}} {{feature}} {{test}}"),),
        description="Per-feature drift test statistics from the drift monitor.",
    ),
    Panel(
        "Drift alerts (per hour)",
        (
            (
                f"sum by (model, feature, test) (increase({sel('surge_drift_alerts_total')}[1h]))",
                "{{model}} {{feature}} {{test}}",
            ),
        ),
        description="Windows whose drift score crossed its threshold (published to drift-alerts).",
    ),
    Panel(
        "Rejection rate by model version (4xx / 429 / 5xx)",
        (
            (
                f"sum by ({MV}, kind) (rate({sel('surge_quality_rejections_total')}[15m])) / ignoring (kind) "
                f"group_left sum by ({MV}) (rate({sel('surge_quality_requests_total')}[15m]))",
                "{{model}}@{{version}} {{kind}}",
            ),
        ),
        "percentunit",
        "From the inference log (drift monitor). 4xx excludes 429 and client aborts (499).",
    ),
    Panel(
        "Retrieval hit rate and top score",
        (
            (
                ratio("surge_quality_retrieval_hits_total", "surge_quality_retrievals_total"),
                "hit rate {{model}}@{{version}}",
            ),
            (
                quantile(0.5, "surge_quality_retrieval_top_score", MV, "15m"),
                "median top score {{model}}@{{version}}",
            ),
        ),
        "percentunit",
        "Share of RAG requests whose best passage reached the hit score; median best cosine similarity.",
    ),
    Panel(
        "Groundedness (proxy) by model version",
        (
            (
                ratio("surge_quality_groundedness_sum", "surge_quality_groundedness_count", window="1h"),
                "mean {{model}}@{{version}}",
            ),
        ),
        "percentunit",
        "Share of an answer's content tokens found in its retrieved passages (pipelines/quality.py): a trend "
        "signal, blind to paraphrase and negation, not a hallucination detector.",
    ),
    Panel(
        "Empty answers and refusals",
        (
            (
                ratio("surge_quality_empty_answers_total", "surge_quality_answers_total"),
                "empty {{model}}@{{version}}",
            ),
            (
                ratio("surge_quality_refusals_total", "surge_quality_answers_inspected_total"),
                "refusals {{model}}@{{version}}",
            ),
        ),
        "percentunit",
    ),
    Panel(
        "Answer length (completion tokens, p50 / p95)",
        tuple(
            (quantile(q, "surge_quality_answer_tokens", MV, "15m"), f"p{p} {{{{model}}}}@{{{{version}}}}")
            for q, p in ((0.5, 50), (0.95, 95))
        ),
    ),
    # -- cost per model and version (exported by the cost attribution, ray_surge_cost_*)
    Panel(
        "Spend by stage, model and version (USD / hour)",
        (
            (
                f"sum by (stage, {MV}) (rate({sel('ray_surge_cost_usd_total')}[1h])) * 3600",
                "{{stage}} {{model}}@{{version}}",
            ),
        ),
        "currencyUSD",
    ),
    Panel(
        "Spend by tenant (USD / hour)",
        ((f"sum by (tenant) (rate({sel('ray_surge_cost_usd_total')}[1h])) * 3600", "{{tenant}}"),),
        "currencyUSD",
    ),
    Panel(
        "Tokens by model version and direction",
        (
            (
                f"sum by ({MV}, direction) (rate({sel('ray_surge_cost_tokens_total')}[5m]))",
                "{{model}}@{{version}} {{direction}}",
            ),
        ),
        description="Tokens per second as charged (input / output).",
    ),
    Panel(
        "Replica, GPU and idle-warm seconds (per second)",
        tuple(
            (
                f"sum by (stage, {MV}) (rate({sel(metric)}[15m]))",
                f"{label} {{{{stage}}}} {{{{model}}}}@{{{{version}}}}",
            )
            for metric, label in (
                ("ray_surge_cost_replica_seconds_total", "replicas"),
                ("ray_surge_cost_gpu_seconds_total", "GPUs"),
                ("ray_surge_cost_idle_warm_seconds_total", "idle warm"),
            )
        ),
        description="Replicas (or GPUs) held on average; idle warm is replica time with no request in flight.",
    ),
    Panel(
        "Cold starts by model version (count and seconds per hour)",
        (
            (
                f"sum by (stage, {MV}) (increase({sel('ray_surge_cost_cold_starts_total')}[1h]))",
                "starts {{stage}} {{model}}@{{version}}",
            ),
            (
                f"sum by (stage, {MV}) (increase({sel('ray_surge_cost_cold_start_seconds_total')}[1h]))",
                "seconds {{stage}} {{model}}@{{version}}",
            ),
        ),
    ),
)


def panel_json(number: int, panel: Panel) -> dict[str, Any]:
    return {
        "id": number,
        "type": "timeseries",
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": 8, "w": 12, "x": 12 * ((number - 1) % 2), "y": 8 * ((number - 1) // 2)},
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}},
        "targets": [
            {"refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend}
            for i, (expr, legend) in enumerate(panel.targets)
        ],
    }


def dashboard() -> dict[str, Any]:
    return {
        "title": "surge",
        "uid": "surge-overview",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "tags": ["surge", "ray-serve", "kafka"],
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "30s",
        "templating": {
            "list": [
                {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Data source"},
                {
                    "name": "namespace",
                    "type": "query",
                    "label": "Namespace",
                    "datasource": DATASOURCE,
                    "query": "label_values(ray_serve_deployment_replica_healthy, namespace)",
                    "refresh": 2,
                },
            ]
        },
        "panels": [panel_json(i, p) for i, p in enumerate(PANELS, start=1)],
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    if argv == ["--check"]:
        if DASHBOARD.read_text() != render():
            print(f"{DASHBOARD} is stale: run scripts/grafana_dashboard.py", file=sys.stderr)
            return 1
        return 0
    if argv:
        print("usage: grafana_dashboard.py [--check]", file=sys.stderr)
        return 2
    DASHBOARD.write_text(render())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
