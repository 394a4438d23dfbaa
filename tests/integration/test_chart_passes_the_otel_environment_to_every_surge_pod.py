"""Issue 15, OTEL_* passthrough in the chart: `tracing.env` reaches every container the release runs surge in
(consumers, the feature-job trigger, the RayService's head and worker groups, the feature job's RayJob), and
no pod gets it when it is left empty (tracing stays off)."""

from __future__ import annotations

import pytest

from tests.fixtures_helm import SCENARIOS, Renderer
from tests.integration.chart_support import containers, pod_specs

pytestmark = pytest.mark.integration
OTEL = ("tracing.env[0].name=OTEL_EXPORTER_OTLP_ENDPOINT", "tracing.env[0].value=http://otel-collector:4318")


def env_of(container: dict[str, object]) -> dict[str, object]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}  # type: ignore[attr-defined]


@pytest.mark.parametrize("scenario", ["default", "gpu"])
def test_every_surge_container_gets_the_otel_variables(render_chart: Renderer, scenario: str) -> None:
    rendered = render_chart(SCENARIOS[scenario], sets=OTEL)
    seen = set()
    for where, pod in pod_specs(rendered):
        for container in containers(pod):
            assert env_of(container).get("OTEL_EXPORTER_OTLP_ENDPOINT") == "http://otel-collector:4318", (
                f"{where}/{container['name']}"
            )
            seen.add(where.split("/")[0])
    assert seen >= {"Deployment", "CronJob", "RayService", "RayJob"}, seen


def test_without_tracing_env_no_pod_is_told_to_export(render_chart: Renderer) -> None:
    for where, pod in pod_specs(render_chart(SCENARIOS["default"])):
        for container in containers(pod):
            assert not [k for k in env_of(container) if k.startswith("OTEL_")], f"{where}/{container['name']}"
