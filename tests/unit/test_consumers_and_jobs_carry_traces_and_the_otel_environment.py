"""OTEL_* passthrough beyond the Serve replicas: the drift monitor continues the trace of a request whose
inference-log record it judges (the record's `traceparent` header), and the feature-job trigger hands its
own OTEL_* variables to the RayJob's pods. Spans are collected with the SDK's in-memory exporter."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace

import numpy as np
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from pydantic import ValidationError

from pipelines.cluster import FeatureRayJobSpec, feature_rayjob_body
from pipelines.drift import DriftHandler, DriftMonitor, DriftMonitorSettings
from surge_core import tracing
from tests.drift_streams import inference_logs

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
OTEL = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel-collector:4318", "OTEL_SERVICE_NAME": "surge-features"}


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracing.configure_tracing("surge-drift-monitor", exporter=exporter)
    yield exporter
    tracing.shutdown_tracing()


def messages(count: int, traced: set[int]) -> list[SimpleNamespace]:
    records = inference_logs(np.random.default_rng(3), count)
    return [
        SimpleNamespace(
            partition=0,
            offset=i,
            value=record.model_dump_json().encode(),
            headers=[("traceparent", f"00-{TRACE}-{PARENT}-01".encode())] if i in traced else [],
        )
        for i, record in enumerate(records)
    ]


def test_a_batch_with_a_traced_record_is_judged_under_a_span_continuing_its_trace(
    spans: InMemorySpanExporter,
) -> None:
    handler = DriftHandler(DriftMonitor(DriftMonitorSettings()), lambda alerts: None, topic="inference-log")
    batch = messages(5, traced={2})
    records = [handler.decode(m) for m in batch]
    handler.process(records, [(m.partition, m.offset) for m in batch])
    (span,) = spans.get_finished_spans()
    assert span.name == "drift.process" and span.kind == SpanKind.CONSUMER
    assert format(span.context.trace_id, "032x") == TRACE
    assert span.parent is not None and format(span.parent.span_id, "016x") == PARENT
    assert (span.attributes or {})["messaging.destination.name"] == "inference-log"
    assert (span.attributes or {})["surge.records"] == 5


def test_an_untraced_batch_makes_no_span(spans: InMemorySpanExporter) -> None:
    handler = DriftHandler(DriftMonitor(DriftMonitorSettings()), lambda alerts: None)
    batch = messages(3, traced=set())
    handler.process([handler.decode(m) for m in batch], [(m.partition, m.offset) for m in batch])
    assert spans.get_finished_spans() == ()


def test_the_feature_rayjob_pods_get_the_triggers_otel_variables() -> None:
    body = feature_rayjob_body(FeatureRayJobSpec(image="registry.example.com/surge:0.1", env=OTEL))
    cluster = body["spec"]["rayClusterSpec"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    for group in groups:
        (container,) = group["template"]["spec"]["containers"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert {k: env.get(k) for k in OTEL} == OTEL, container["name"]


def test_a_bad_environment_name_fails_the_spec_naming_env() -> None:
    with pytest.raises(ValidationError, match="env"):
        FeatureRayJobSpec(image="registry.example.com/surge:0.1", env={"OTEL EXPORTER": "x"})
