"""The in-process OTLP receiver, now in `benchmarks.otlp_receiver` (the tracing benchmark uses it too)."""

from benchmarks.otlp_receiver import OtlpReceiver, ReceivedSpan, render_span_tree

__all__ = ["OtlpReceiver", "ReceivedSpan", "render_span_tree"]
