"""Prometheus metrics of a Kafka consumer process (prometheus-client, outside Ray), on its own port.

Each consumer process owns one registry and serves it on `--metrics-port` (0: no HTTP endpoint). Names
follow Prometheus conventions; labels are the topic (and partition where it matters) and the group.
"""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

PROCESSING_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class ConsumerMetrics:
    """The series every consumer exports."""

    def __init__(self, group_id: str, registry: CollectorRegistry | None = None) -> None:
        self.group_id = group_id
        self.registry = registry or CollectorRegistry()
        labels = ("topic", "group")
        self.processed = Counter(
            "surge_consumer_records_processed",
            "Records written to the sink (durably) and then committed.",
            labels,
            registry=self.registry,
        )
        self.failed = Counter(
            "surge_consumer_records_failed",
            "Processing attempts that raised (each retry counts once).",
            labels,
            registry=self.registry,
        )
        self.dead_lettered = Counter(
            "surge_consumer_records_dead_lettered",
            "Records sent to the dead-letter topic, by reason.",
            (*labels, "reason"),
            registry=self.registry,
        )
        self.processing_seconds = Histogram(
            "surge_consumer_processing_seconds",
            "Seconds to process one polled batch (decode, sink write, dead letters, commit).",
            labels,
            buckets=PROCESSING_BUCKETS_S,
            registry=self.registry,
        )
        self.lag = Gauge(
            "surge_consumer_lag",
            "Records behind the partition's high watermark, after the last commit.",
            ("topic", "partition", "group"),
            registry=self.registry,
        )
        self.committed_offset = Gauge(
            "surge_consumer_committed_offset",
            "Last committed offset (the next record to read) per partition.",
            ("topic", "partition", "group"),
            registry=self.registry,
        )

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        """Expose /metrics on host:port (a background thread of prometheus-client)."""
        start_http_server(port, addr=host, registry=self.registry)

    def forget_partition(self, topic: str, partition: int) -> None:
        """Drop per-partition series of a partition this consumer no longer owns (after a rebalance)."""
        for gauge in (self.lag, self.committed_offset):
            with contextlib.suppress(KeyError):
                gauge.remove(topic, str(partition), self.group_id)
