"""Every kind of /metrics endpoint the stack exposes passes `promtool check metrics`, scraped from real
processes: the ingestion consumer, the drift monitor, and Ray's metrics export port serving the Serve app
(which also shows that Ray exports the gateway's series with the `ray_` prefix the dashboard reads).
Ray's own exporter does not lint clean (camelCase labels it adds to every series, abbreviated units in its
own names): for that endpoint the test accepts Ray's problems and requires none in surge's series beyond
Ray's labels."""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pipelines.broker import free_port
from surge_core.kafka_settings import KafkaSettings
from tests.fixtures_serve import SurgeApp
from tests.kafka_helpers import IngestionProcess, ingestion_args, wait_for

pytestmark = pytest.mark.integration
# The tag keys surge's Serve metrics declare (gateway_metrics.py, llm.py, observability.py): snake_case.
SURGE_TAG_KEYS = frozenset({"route", "status", "model", "stage", "finish_reason"})


def scrape(port: int) -> str:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3).read().decode()
    except OSError:
        return ""


def check_metrics(promtool: Path, text: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(promtool), "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_consumers_metrics_endpoints_pass_promtool(
    kafka_settings: KafkaSettings,
    topic_prefix: str,
    tmp_path: Path,
    spawn_ingestion: Callable[..., IngestionProcess],
    promtool: Path,
) -> None:
    ingest_port, drift_port = free_port(), free_port()
    # The HTTP sink (no document arrives, so it is never called) keeps MiniLM out of the process: the
    # endpoint, not the embedding model's load time, is what this test is about.
    ingestion = spawn_ingestion(
        "ingest",
        *ingestion_args(
            kafka_settings,
            topic_prefix,
            f"{topic_prefix}ingest",
            sink_url="http://127.0.0.1:9",
            metrics_port=ingest_port,
        ),
        env={"SURGE_API_KEY": "sk-unused"},
    )
    log = (tmp_path / "drift.log").open("ab")
    drift = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipelines.drift",
            "run",
            "--bootstrap-servers",
            kafka_settings.bootstrap_servers,
            "--topic-prefix",
            topic_prefix,
            "--metrics-port",
            str(drift_port),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        for name, port, series in (
            ("ingestion", ingest_port, "surge_consumer_records_processed"),
            ("drift monitor", drift_port, "surge_quality_requests"),
        ):
            wait_for(lambda p=port, s=series: f"# HELP {s}" in scrape(p), 120, f"{name} /metrics")  # type: ignore[misc]
            result = check_metrics(promtool, scrape(port))
            assert result.returncode == 0, f"{name}: {result.stdout}{result.stderr}"
        ingestion.assert_running()
        assert drift.poll() is None, (tmp_path / "drift.log").read_text()[-3000:]
    finally:
        drift.terminate()
        drift.wait(30)
        log.close()


def test_the_serve_apps_metrics_on_rays_export_port_pass_promtool(
    surge_app: SurgeApp, promtool: Path
) -> None:
    import ray

    httpx.get(f"{surge_app.base_url}/v1/models", headers=surge_app.headers(), timeout=30)
    (node,) = [n for n in ray.nodes() if n["Alive"]]
    port = int(node["MetricsExportPort"])
    # Ray reports replicas' metrics every few seconds: wait for the gateway's counter to reach the exporter.
    wait_for(
        lambda: "ray_surge_gateway_requests_total{" in scrape(port), 90, "the gateway's series on Ray's port"
    )
    text = scrape(port)
    result = check_metrics(promtool, text)
    # Exit 3 is "lint problems only" (1 would be a parse error). Ray's exporter itself has lint problems
    # (its own metric names, and camelCase labels such as SessionName it adds to every series); the series
    # surge defines may have no problem but that one.
    assert result.returncode in (0, 3), result.stdout + result.stderr
    ours = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("ray_surge_")]
    camel = "label names should be written in 'snake_case' not 'camelCase'"
    assert {line.split(" ", 1)[1] for line in ours} <= {camel}, ours
    surge_labels = {
        name
        for family in text_string_to_metric_families(text)
        if family.name.startswith("ray_surge_")
        for sample in family.samples
        for name in sample.labels
    }
    assert {"route", "status"} <= surge_labels
    camel_labels = {n for n in surge_labels if n != n.lower()}
    assert camel_labels.isdisjoint(SURGE_TAG_KEYS), camel_labels
