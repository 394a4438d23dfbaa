"""A tiny in-process OTLP/HTTP trace receiver: what a collector would see, for tests and benchmarks.

Replicas and consumers run in other processes; pointing their `OTEL_EXPORTER_OTLP_ENDPOINT` here collects
their spans (protobuf decoded with `opentelemetry-proto`), so a test can assert the span tree and a
benchmark can print it (`render_span_tree`). It lives with the benchmarks (an installed package) so
`benchmarks.tracing_overhead` can use it; `tests.otlp_receiver` re-exports it.
"""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue


@dataclass(frozen=True)
class ReceivedSpan:
    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    service: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any] = field(default_factory=dict)
    links: tuple[str, ...] = ()  # span ids linked to


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    return getattr(value, kind) if kind else None


class OtlpReceiver:
    """`endpoint` is what `OTEL_EXPORTER_OTLP_ENDPOINT` should be; spans arrive on POST /v1/traces."""

    def __init__(self) -> None:
        self._spans: list[ReceivedSpan] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                receiver._add(request)
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def _add(self, request: ExportTraceServiceRequest) -> None:
        received: list[ReceivedSpan] = []
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    received.append(
                        ReceivedSpan(
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_id=span.parent_span_id.hex() or None,
                            name=span.name,
                            service=str(resource.get("service.name", "")),
                            start_ns=span.start_time_unix_nano,
                            end_ns=span.end_time_unix_nano,
                            attributes={a.key: _value(a.value) for a in span.attributes},
                            links=tuple(link.span_id.hex() for link in span.links),
                        )
                    )
        with self._lock:
            self._spans.extend(received)

    def trace(self, trace_id: str) -> list[ReceivedSpan]:
        with self._lock:
            return sorted((s for s in self._spans if s.trace_id == trace_id), key=lambda s: s.start_ns)

    def named(self, name: str) -> list[ReceivedSpan]:
        """Every received span called `name`, oldest first (e.g. to find the trace a producer started)."""
        with self._lock:
            return sorted((s for s in self._spans if s.name == name), key=lambda s: s.start_ns)

    def wait_for_trace(
        self, trace_id: str, names: Iterable[str], timeout_s: float = 60
    ) -> dict[str, ReceivedSpan]:
        """The trace's spans by name once every one of `names` arrived; fails naming the missing ones."""
        wanted = set(names)
        deadline = time.monotonic() + timeout_s
        while True:
            spans = {s.name: s for s in self.trace(trace_id)}
            if wanted <= set(spans):
                return spans
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"spans {sorted(wanted - set(spans))} of trace {trace_id} never arrived; got {sorted(spans)}"
                )
            time.sleep(0.2)

    def tree(self, trace_id: str, keys: Iterable[str] = ()) -> str:
        """The trace as an indented tree (see `render_span_tree`)."""
        return render_span_tree(self.trace(trace_id), keys)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def render_span_tree(spans: Iterable[ReceivedSpan], keys: Iterable[str] = ()) -> str:
    """Spans of one trace as an indented tree, one line per span: name, [service], duration in ms, and the
    attributes named in `keys` that the span has; children under their parent, siblings by start time. A
    root whose parent is not among `spans` (the client's span, continued) says so.

    e.g. `POST /v1/chat/completions [surge] 412.0 ms (parent 1a2b..., remote) surge.tenant=acme`
         `  embedder.call embed [surge] 35.2 ms surge.stage=embedder`
    """
    ordered = sorted(spans, key=lambda s: s.start_ns)
    ids = {s.span_id for s in ordered}
    children: dict[str | None, list[ReceivedSpan]] = {}
    for s in ordered:
        children.setdefault(s.parent_id if s.parent_id in ids else None, []).append(s)
    shown = list(keys)
    lines: list[str] = []

    def walk(parent: str | None, depth: int) -> None:
        for s in children.get(parent, []):
            attrs = " ".join(f"{k}={s.attributes[k]}" for k in shown if k in s.attributes)
            remote = f" (parent {s.parent_id}, remote)" if depth == 0 and s.parent_id else ""
            ms = (s.end_ns - s.start_ns) / 1e6
            lines.append(f"{'  ' * depth}{s.name} [{s.service}] {ms:.1f} ms{remote} {attrs}".rstrip())
            walk(s.span_id, depth + 1)

    walk(None, 0)
    return "\n".join(lines)
