"""`render_span_tree`: the spans a collector received, printed as one indented line per span under its parent
(name, service, milliseconds, the chosen attributes), the client's continued parent marked remote."""

from __future__ import annotations

from benchmarks.otlp_receiver import ReceivedSpan, render_span_tree


def span(
    span_id: str, parent: str | None, name: str, start_ms: int, end_ms: int, **attrs: object
) -> ReceivedSpan:
    return ReceivedSpan(
        trace_id="t" * 32,
        span_id=span_id,
        parent_id=parent,
        name=name,
        service="surge",
        start_ns=start_ms * 1_000_000,
        end_ns=end_ms * 1_000_000,
        attributes=dict(attrs),
    )


SPANS = [
    span("c", "a", "retriever.call search", 40, 50, **{"surge.stage": "retriever"}),
    span("a", "client0000000001", "POST /v1/chat/completions", 0, 400, **{"surge.tenant": "acme"}),
    span("b", "a", "embedder.call embed", 5, 35, **{"surge.stage": "embedder", "surge.cold_start": False}),
    span("d", "b", "embedder.embed", 10, 30, **{"surge.tokens_in": 7}),
]


def test_children_sit_under_their_parent_in_start_order_with_durations_and_chosen_attributes() -> None:
    text = render_span_tree(SPANS, ["surge.tenant", "surge.stage", "surge.tokens_in"])
    assert text.splitlines() == [
        "POST /v1/chat/completions [surge] 400.0 ms (parent client0000000001, remote) surge.tenant=acme",
        "  embedder.call embed [surge] 30.0 ms surge.stage=embedder",
        "    embedder.embed [surge] 20.0 ms surge.tokens_in=7",
        "  retriever.call search [surge] 10.0 ms surge.stage=retriever",
    ]


def test_attributes_not_asked_for_are_not_shown_and_no_spans_render_empty() -> None:
    assert "surge.cold_start" not in render_span_tree(SPANS)
    assert render_span_tree([]) == ""
