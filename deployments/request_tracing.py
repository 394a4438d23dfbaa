"""The gateway's span: one per HTTP request, the root of the request's trace inside surge.

A client's W3C `traceparent` header is continued (only the trace context: a client's `baggage` is not
believed, since stages read the tenant from it); without one the request starts a trace. Once the caller
is admitted, its tenant goes into the span and into the baggage every stage call carries. The span ends
when the response has been sent: for a stream, at its last chunk.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextvars import Token
from typing import Any

from opentelemetry import baggage, context, trace
from opentelemetry.context import Context
from opentelemetry.trace import INVALID_SPAN, Span, SpanKind, Status, StatusCode

from deployments.stage_tracing import stage_attributes
from surge_core import tracing


class RequestSpan:
    """Begun before auth, told the tenant once admitted, finished with the status code."""

    def __init__(self, method: str, route: str, headers: Mapping[str, str], traced: bool = True) -> None:
        self.span: Span = INVALID_SPAN
        self._token: Token[Context] | None = None
        if not traced or not tracing.enabled():
            return
        parent = tracing.context_from(dict(headers), incoming=True)
        self.span = tracing.start_span(
            f"{method} {route}",
            parent=parent,
            kind=SpanKind.SERVER,
            attributes={**stage_attributes("gateway"), "http.request.method": method, "http.route": route},
        )
        self._token = context.attach(trace.set_span_in_context(self.span))

    def admitted(self, tenant: str, principal: str) -> None:
        """Name the tenant on this span and pass it on (baggage) to every stage the request calls."""
        if self._token is None:
            return
        tracing.set_attributes(self.span, **{tracing.TENANT: tenant, "surge.principal": principal})
        context.detach(self._token)
        with_tenant = baggage.set_baggage(
            tracing.TENANT_BAGGAGE, tenant, trace.set_span_in_context(self.span)
        )
        self._token = context.attach(with_tenant)

    def detach(self) -> None:
        """Leave the request's context (the handler returned); the span itself may still be running."""
        if self._token is not None:
            context.detach(self._token)
            self._token = None

    def finish(self, status_code: int) -> None:
        self.detach()
        if not self.span.is_recording():
            return
        self.span.set_attribute("http.response.status_code", status_code)
        if status_code >= 500:
            self.span.set_status(Status(StatusCode.ERROR))
        self.span.end()

    def failed(self, error: BaseException) -> None:
        self.detach()
        if self.span.is_recording():
            self.span.record_exception(error)
            self.span.set_status(Status(StatusCode.ERROR, type(error).__name__))
            self.span.end()

    async def finished_at_end(self, body: AsyncIterator[Any], status_code: int) -> AsyncIterator[Any]:
        """Pass a streamed body through; the span ends after its last chunk."""
        try:
            async for chunk in body:
                yield chunk
        finally:
            self.finish(status_code)
