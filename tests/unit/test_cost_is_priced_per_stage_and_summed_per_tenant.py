"""Cost attribution: the price of a replica and of a request's stage seconds (surge_core.cost), a replica's live
and idle-warm seconds (deployments.cost_metrics), and `surge cost`'s totals from usage records."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from deployments.cost_metrics import ReplicaMeter
from deployments.request_timeline import Timeline
from deployments.settings import AppSettings, LLMSettings
from deployments.usage_recording import UsageRecorder, stage_costs
from pipelines.cost_report import parse_since, report_from_records
from surge_core.cost import CostSettings, PriceTable, ReplicaCost
from surge_core.records import UsageRecord


def test_the_docstrings_worked_example_an_l4_llm_replica_costs_0_912_usd_per_hour() -> None:
    cost = ReplicaCost.of(PriceTable(), "nvidia-l4", num_cpus=4, num_gpus=1, memory_gib=16, slots=16)
    assert cost.usd_per_hour == pytest.approx(0.912)
    assert cost.usd_for(2.5) == pytest.approx(0.0000396, abs=1e-7)
    assert cost.always_on_usd(24) == pytest.approx(21.888)


def test_requests_sharing_a_replica_pay_its_busy_seconds_once_not_once_each() -> None:
    # 16 requests side by side for 2.5 s in a 16-slot replica: together they pay its 2.5 s, no more.
    cost = ReplicaCost.of(PriceTable(), "nvidia-l4", num_cpus=4, num_gpus=1, memory_gib=16, slots=16)
    assert 16 * cost.usd_for(2.5) == pytest.approx(2.5 * cost.usd_per_hour / 3600)
    with pytest.raises(ValidationError, match="slots"):
        ReplicaCost(usd_per_hour=1.0, slots=0)


def test_a_cpu_replica_pays_no_accelerator_and_negative_seconds_cost_nothing() -> None:
    cost = ReplicaCost.of(PriceTable(), "nvidia-h100", num_cpus=1, num_gpus=0, memory_gib=4)
    assert cost.usd_per_hour == pytest.approx(0.035 + 4 * 0.0045)
    assert cost.gpus == 0
    assert cost.usd_for(-3) == 0


def test_replica_cost_is_an_immutable_value() -> None:
    cost = ReplicaCost(usd_per_hour=1.0)
    with pytest.raises(ValidationError):
        cost.usd_per_hour = 2.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"prices": {"cpu_usd_per_hour": -1}}, "cpu_usd_per_hour"),
        ({"prices": {"memory_usd_per_gib_hour": float("nan")}}, "memory_usd_per_gib_hour"),
        ({"prices": {"accelerator_usd_per_hour": {"Bad Name": 1}}}, "accelerator_usd_per_hour"),
        ({"accelerator": "tpu-v9"}, "tpu-v9"),
        ({"stages": {"reranker": {"memory_gib": 1}}}, "reranker"),
        ({"stages": {"llm": {"memory_gib": -2}}}, "memory_gib"),
        ({"currency": "EUR"}, "currency"),
    ],
)
def test_a_bad_price_table_fails_at_load_naming_the_field(config: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        AppSettings.model_validate({"cost": config})


def test_a_requests_stage_seconds_are_priced_by_each_stages_replica() -> None:
    settings = AppSettings.model_validate(
        {
            "llm": {"num_cpus": 4, "num_gpus": 1, "device": "cuda"},
            "cost": {"stages": {"llm": {"memory_gib": 16}}},
        }
    )
    costs = stage_costs(settings)
    assert costs["llm"].usd_per_hour == pytest.approx(0.912)
    # Each stage's slots are its max_ongoing_requests (the LLM's equal its engine's max_num_seqs, 16).
    assert costs["llm"].slots == settings.llm.max_ongoing_requests == 16
    assert costs["embedder"].slots == settings.embedder.max_ongoing_requests
    recorder = UsageRecorder(settings, "smollm2@3")
    timeline = Timeline()
    timeline.add_stage_seconds("llm", 2.5)
    timeline.add_stage_seconds("embedder", 0.1)
    timeline.add_stage_seconds("embedder", 0.1)
    seconds, usd = recorder.charge(timeline)
    assert seconds["embedder"] == pytest.approx(0.2)
    assert usd["llm"] == pytest.approx(0.000633 / 16, abs=1e-7)
    assert usd["embedder"] == pytest.approx(
        0.2 * costs["embedder"].usd_per_hour / 3600 / costs["embedder"].slots
    )
    assert "gateway" in usd
    record = recorder.charge_and_publish(
        route="/v1/chat/completions",
        status_code=200,
        timeline=timeline,
        tokens_in=10,
        tokens_out=5,
        principal="alice",
        tenant="acme",
    )
    assert (record.model, record.version, record.tenant) == ("smollm2", "3", "acme")
    assert record.cost_usd == pytest.approx(sum(usd.values()), rel=1e-3)


def test_every_meter_tick_sets_the_price_gauges_again() -> None:
    # Ray's OpenTelemetry recorder clears a gauge after exporting it: set once, it vanished from
    # Prometheus (the cost replay's always-on read "unknown").
    now = [0.0]
    prices: list[int] = []
    meter = ReplicaMeter(
        "gateway", "m", gpus=0, started_at=0.0, clock=lambda: now[0], on_tick=lambda: prices.append(1)
    )
    for _ in range(3):
        now[0] += 5
        meter.tick()
    assert len(prices) == 3


def test_a_requests_llm_seconds_are_priced_by_the_replica_of_the_version_that_answered() -> None:
    # A CPU primary and an L4 canary: the same 2 s in the LLM cost what each version's replica costs.
    settings = AppSettings.model_validate({"cost": {"stages": {"llm": {"memory_gib": 16}}}})
    cpu = LLMSettings(num_cpus=1)
    gpu = LLMSettings(num_cpus=4, num_gpus=1, device="cuda")
    recorder = UsageRecorder(settings, "m@1", {"m@1": cpu, "m@2": gpu})
    timeline = Timeline()
    timeline.add_stage_seconds("llm", 2.0)
    _, on_cpu = recorder.charge(timeline, "m@1")
    _, on_gpu = recorder.charge(timeline, "m@2")
    assert on_cpu["llm"] == pytest.approx(2.0 * (0.035 + 16 * 0.0045) / 3600 / 16)
    assert on_gpu["llm"] == pytest.approx(2.0 * 0.912 / 3600 / 16)
    record = recorder.charge_and_publish(
        route="/v1/chat/completions",
        status_code=200,
        timeline=timeline,
        tokens_in=1,
        tokens_out=1,
        principal=None,
        tenant=None,
        served_model="m@2",
    )
    assert record.stage_usd_per_hour["llm"] == pytest.approx(0.912)


def test_a_replica_accrues_live_seconds_always_and_idle_seconds_only_with_nothing_in_flight() -> None:
    now = [100.0]
    meter = ReplicaMeter("llm", "m", gpus=1, started_at=time.time(), clock=lambda: now[0])
    now[0] += 2  # idle
    meter.enter()
    now[0] += 3  # one request in flight
    meter.enter()
    meter.leave()  # a second one came and went: still busy
    now[0] += 1
    assert meter.tick() == (6.0, 2.0)
    meter.leave()
    now[0] += 4  # idle again
    assert meter.tick() == (4.0, 4.0)


def test_parse_since_reads_durations_and_names_the_flag_when_wrong() -> None:
    assert parse_since("24h") == 86400
    assert parse_since("90m") == 5400
    assert parse_since("7d") == 7 * 86400
    for bad in ("", "24", "-1h", "0h", "1w", "h"):
        with pytest.raises(ValueError, match="--since"):
            parse_since(bad)


def usage(tenant: str, cost: float, age: timedelta = timedelta(minutes=5), **fields: object) -> bytes:
    record = UsageRecord(
        request_id=f"r-{tenant}-{cost}",
        timestamp=datetime.now(UTC) - age,
        tenant=tenant,
        model="smollm2",
        version="1",
        route="/v1/chat/completions",
        status_code=200,
        tokens_in=10,
        tokens_out=4,
        cost_usd=cost,
        stage_usd_per_hour={"gateway": 0.1, "llm": 0.9},
        **fields,  # type: ignore[arg-type]
    )
    return record.model_dump_json().encode()


def test_the_cost_report_sums_per_model_version_and_tenant_within_the_window() -> None:
    values = [
        usage("acme", 0.001),
        usage("acme", 0.002),
        usage("globex", 0.004),
        usage("acme", 1.0, age=timedelta(days=2)),  # outside 24 h
        b"not json",
        None,
    ]
    report = report_from_records(values, window_s=86400)
    acme = report.rows[("smollm2", "1", "acme")]
    assert (acme.requests, acme.tokens_in, acme.tokens_out) == (2, 20, 8)
    assert acme.cost_usd == pytest.approx(0.003)
    assert report.rows[("smollm2", "1", "globex")].cost_usd == pytest.approx(0.004)
    assert report.skipped == 2
    assert report.always_on_usd("smollm2", "1") == pytest.approx(24.0)  # (0.1 + 0.9) USD/h x 24 h
    text = report.render()
    assert "always-on" in text and "24.0000 USD" in text and "globex" in text


def test_default_cost_settings_price_every_stage() -> None:
    settings = CostSettings()
    assert set(settings.stages) == {"gateway", "embedder", "retriever", "llm"}
    assert settings.accelerator in settings.prices.accelerator_usd_per_hour


def test_an_embeddings_request_is_charged_to_its_tenant_under_the_embedding_model() -> None:
    import asyncio

    import numpy as np

    from deployments.flows import EmbeddingFlow
    from deployments.openai_api import EmbeddingRequest
    from deployments.principal import Caller, Principal

    settings = AppSettings()
    recorded: list[UsageRecord] = []

    class Capturing(UsageRecorder):
        def record(self, **fields: object) -> UsageRecord | None:
            record = super().record(**fields)
            assert record is not None
            recorded.append(record)
            return record

    class Embedder:
        async def embed(self, texts: list[str], timeline: Timeline) -> dict[str, object]:
            timeline.add_stage_seconds("embedder", 0.5)
            return {"embeddings": np.ones((len(texts), 4), np.float32), "tokens": 7}

    class Router:
        def check_embedding_model(self, model: str) -> None:
            return None

    flow = EmbeddingFlow(Router(), Embedder(), settings.embedder, Capturing(settings, "llm-name"))  # type: ignore[arg-type]
    caller = Caller(Principal(name="alice", tenant="acme", scopes=frozenset({"admin"})))
    asyncio.run(flow.run(EmbeddingRequest(model="all-MiniLM-L6-v2", input=["hi"]), caller))
    (record,) = recorded
    assert (record.model, record.version, record.tenant, record.principal) == (
        "all-MiniLM-L6-v2",
        "1",
        "acme",
        "alice",
    )
    assert (record.tokens_in, record.tokens_out, record.route) == (7, 0, "/v1/embeddings")
    assert record.stage_seconds["embedder"] == 0.5


def test_the_cost_report_reads_usd_and_tokens_per_tenant_from_prometheus() -> None:
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer
    from urllib.parse import parse_qs, urlparse

    from pipelines.cost_report import report_from_prometheus

    queries: list[str] = []

    def vector(query: str) -> list[dict[str, object]]:
        labels = {"model": "smollm2", "version": "1", "tenant": "acme"}
        if "unless" in query:  # series born inside the window: their first value (globex's only)
            born = {**labels, "tenant": "globex"}
            if "surge_cost_usd_total" in query:
                return [{"metric": born, "value": [0, "0.5"]}]
            return [{"metric": {**born, "direction": "in"}, "value": [0, "7"]}]
        if "surge_cost_usd_total" in query:
            return [{"metric": labels, "value": [0, "0.25"]}]
        if "surge_cost_replica_usd_per_hour" in query:
            # Ray exports a gauge once per setting: only a read over the window is sure to find it.
            assert "max_over_time(ray_surge_cost_replica_usd_per_hour[" in query
            return [
                {"metric": {"stage": "llm"}, "value": [0, "0.9"]},
                {"metric": {"stage": "gateway"}, "value": [0, "0.1"]},
            ]
        return [
            {"metric": {**labels, "direction": "in"}, "value": [0, "120"]},
            {"metric": {**labels, "direction": "out"}, "value": [0, "30.4"]},
        ]

    class Prometheus(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            query = parse_qs(urlparse(self.path).query)["query"][0]
            queries.append(query)
            body = json.dumps(
                {"status": "success", "data": {"resultType": "vector", "result": vector(query)}}
            )
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args: object) -> None:
            return None

    server = HTTPServer(("127.0.0.1", 0), Prometheus)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        report = report_from_prometheus(f"http://127.0.0.1:{server.server_address[1]}", window_s=86400)
    finally:
        server.shutdown()
        server.server_close()
    row = report.rows[("smollm2", "1", "acme")]
    assert (row.cost_usd, row.tokens_in, row.tokens_out) == (0.25, 120, 30)
    born = report.rows[("smollm2", "1", "globex")]
    assert (born.cost_usd, born.tokens_in, born.tokens_out) == (0.5, 7, 0)
    assert sum("increase(" in q and "[86400s]" in q for q in queries) == 2
    assert sum("unless" in q and "offset 86400s" in q for q in queries) == 2
    assert all("ray_surge_cost_" in q for q in queries)  # Ray's exporter prefixes Serve metrics with ray_
    assert report.app_always_on_usd_per_hour == pytest.approx(1.0)
    assert "would have cost 24.0000 USD" in report.render()
    assert "unknown" not in report.render()  # the app's always-on line stands for every model
