"""The gateway's Ray Serve metrics: requests by route/status, latency, tokens, cold starts."""

from __future__ import annotations

from ray.serve import metrics

from deployments.observability import LATENCY_BUCKETS_S, record_cold_start

# Known routes keep the label set bounded; anything else (404s, scans) is folded into "other".
KNOWN_ROUTES = frozenset(
    {
        "/v1/models",
        "/v1/embeddings",
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/documents",
        "/healthz",
        "/readyz",
    }
)


class GatewayMetrics:
    def __init__(self) -> None:
        self._requests = metrics.Counter(
            "surge_gateway_requests_total",
            description="Requests answered by the gateway, by route and HTTP status.",
            tag_keys=("route", "status"),
        )
        self._latency = metrics.Histogram(
            "surge_gateway_request_seconds",
            description="Seconds from request to response headers, by route.",
            boundaries=LATENCY_BUCKETS_S,
            tag_keys=("route",),
        )
        self._prompt_tokens = metrics.Counter(
            "surge_gateway_prompt_tokens_total", description="Prompt tokens by model.", tag_keys=("model",)
        )
        self._completion_tokens = metrics.Counter(
            "surge_gateway_completion_tokens_total",
            description="Generated tokens by model.",
            tag_keys=("model",),
        )

    def observe(self, route: str, status: int, seconds: float) -> None:
        route = route if route in KNOWN_ROUTES else "other"
        self._requests.inc(tags={"route": route, "status": str(status)})
        self._latency.observe(seconds, tags={"route": route})

    def tokens(self, model: str, prompt_tokens: int, completion_tokens: int) -> None:
        if prompt_tokens:
            self._prompt_tokens.inc(prompt_tokens, tags={"model": model})
        if completion_tokens:
            self._completion_tokens.inc(completion_tokens, tags={"model": model})

    def cold_start(self, stage: str, request_arrived_at: float, ready_at: float) -> None:
        record_cold_start(stage, request_arrived_at, ready_at)
