"""`surge cost --since 24h`: what serving cost per model, version and tenant, and what always-on would have.

From the `usage` topic (one record per request, written by the gateway) by default, or from Prometheus
with `--prometheus URL` (the `surge_cost_*` counters; there the always-on price is the app's, from the
`surge_cost_replica_usd_per_hour` gauge, and requests are not counted). The always-on figure prices one replica of every
stage a model's requests used, kept up for the whole window (`ReplicaCost.always_on_usd`): e.g. the
default CPU stages (gateway 0.25 vCPU + 0.5 GiB, embedder 0.25 + 1, retriever 0.25 + 1, llm 1 + 4) cost
0.0111 + 0.0132 + 0.0132 + 0.053 = 0.0905 USD/h, so 2.17 USD over 24 h, against what the requests were
charged: each pays, per stage, its seconds in one of a replica's slots (`ReplicaCost.usd_for`), so the
charges never exceed the busy replicas' bill, and what always-on adds is capacity nobody used.
"""

from __future__ import annotations

import argparse
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import TypeAdapter, ValidationError

from surge_core.kafka_settings import KafkaSettings
from surge_core.records import UsageRecord
from surge_core.topics import USAGE

DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
RECORD = TypeAdapter(UsageRecord)


def parse_since(text: str) -> float:
    """`"24h"` -> 86400.0; `"90m"`, `"7d"`, `"30s"` likewise; anything else is a ValueError naming it."""
    match = DURATION.match(text.strip())
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"--since {text!r}: give a positive duration such as 30m, 24h or 7d")
    return float(match.group(1)) * UNIT_SECONDS[match.group(2)]


@dataclass
class Row:
    """The totals of one (model, version, tenant)."""

    requests: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0


@dataclass
class CostReport:
    window_s: float
    rows: dict[tuple[str, str, str], Row] = field(default_factory=dict)
    # Per (model, version): USD per hour of one replica of every stage its requests used.
    always_on_usd_per_hour: dict[tuple[str, str], float] = field(default_factory=dict)
    skipped: int = 0
    # From Prometheus: USD per hour of one replica of every stage of the app (models are not told apart).
    app_always_on_usd_per_hour: float | None = None

    def always_on_usd(self, model: str, version: str) -> float:
        return self.always_on_usd_per_hour.get((model, version), 0.0) * self.window_s / 3600

    def render(self) -> str:
        header = f"{'model':<28} {'version':<8} {'tenant':<16} {'requests':>9} {'tokens_in':>10} {'tokens_out':>10} {'cost_usd':>12}"
        lines = [header, "-" * len(header)]
        for (model, version, tenant), row in sorted(self.rows.items()):
            requests = str(row.requests) if row.requests >= 0 else "-"
            lines.append(
                f"{model:<28} {version:<8} {tenant:<16} {requests:>9} {row.tokens_in:>10} {row.tokens_out:>10} {row.cost_usd:>12.6f}"
            )
        hours = self.window_s / 3600
        for model, version in sorted({(m, v) for m, v, _ in self.rows}):
            charged = sum(r.cost_usd for (m, v, _), r in self.rows.items() if (m, v) == (model, version))
            line = f"{model}@{version}: charged {charged:.6f} USD over {hours:g} h"
            if (model, version) in self.always_on_usd_per_hour:
                always = self.always_on_usd(model, version)
                line += f"; always-on (one replica of each stage for {hours:g} h) would have cost {always:.4f} USD"
            elif self.app_always_on_usd_per_hour is None:
                line += "; always-on: unknown (no price reached this report)"
            lines.append(line)
        if self.app_always_on_usd_per_hour is not None:
            lines.append(
                f"the app: charged {sum(r.cost_usd for r in self.rows.values()):.6f} USD over {hours:g} h; "
                f"always-on (one replica of each stage for {hours:g} h) would have cost "
                f"{self.app_always_on_usd_per_hour * hours:.4f} USD"
            )
        if not self.rows:
            lines.append(f"no usage in the last {hours:g} h")
        if self.skipped:
            lines.append(f"({self.skipped} records could not be read and were skipped)")
        return "\n".join(lines)


def report_from_records(
    values: Iterable[bytes | None], window_s: float, now: float | None = None
) -> CostReport:
    """Sum usage records (raw topic values) newer than `window_s`; unreadable ones are counted, not fatal."""
    since = (now if now is not None else time.time()) - window_s
    report = CostReport(window_s=window_s)
    for value in values:
        try:
            record = RECORD.validate_json(value or b"")
        except ValidationError:
            report.skipped += 1
            continue
        if record.timestamp.timestamp() < since:
            continue
        row = report.rows.setdefault((record.model, record.version, record.tenant), Row())
        row.requests += 1
        row.tokens_in += record.tokens_in
        row.tokens_out += record.tokens_out
        row.cost_usd += record.cost_usd
        key = (record.model, record.version)
        report.always_on_usd_per_hour[key] = max(
            report.always_on_usd_per_hour.get(key, 0.0), sum(record.stage_usd_per_hour.values())
        )
    return report


def read_usage_values(kafka: KafkaSettings, topic: str, timeout_s: float = 60.0) -> list[bytes | None]:
    """Every value of the topic from the beginning to its current end (no group, nothing committed)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(**kafka.kafka_python_config(), enable_auto_commit=False, group_id=None)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or set())]
        if not tps:
            return []
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        values: list[bytes | None] = []
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < end[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic} did not reach its end within {timeout_s:g} s")
            for batch in consumer.poll(timeout_ms=500).values():
                values.extend(message.value for message in batch)
        return values
    finally:
        consumer.close()


def _prometheus(url: str, query: str) -> list[dict[str, Any]]:
    import httpx

    response = httpx.get(f"{url.rstrip('/')}/api/v1/query", params={"query": query}, timeout=30)
    response.raise_for_status()
    body = response.json()
    if body.get("status") != "success":
        raise ValueError(f"Prometheus refused {query!r}: {body.get('error')}")
    return list(body["data"]["result"])


def window_totals(
    url: str, metric: str, by: tuple[str, ...], window_s: float
) -> dict[tuple[str, ...], float]:
    """How much counter `metric` grew over the window, summed by the labels `by`.

    `increase(m[w])` alone misses a series' first value when the series was born inside the window (Ray
    exports a counter series from its first increment, and every new replica starts new series): a series
    seen once, or only with one value, adds 0. So a series with no sample before the window adds its first
    value too (counters only grow, so that is `min_over_time`): total = increase(m[w]) + (min_over_time(m[w])
    unless m offset w). Measured here: a 2-minute replay whose requests all ended within one minute of
    their series' birth read 0 tokens with increase() alone.
    """
    window = f"{int(window_s)}s"
    grouping = ", ".join(by)
    totals: dict[tuple[str, ...], float] = {}
    for query in (
        f"sum by ({grouping}) (increase({metric}[{window}]))",
        f"sum by ({grouping}) (min_over_time({metric}[{window}]) unless {metric} offset {window})",
    ):
        for sample in _prometheus(url, query):
            key = tuple(sample["metric"].get(k, "") for k in by)
            totals[key] = totals.get(key, 0.0) + float(sample["value"][1])
    return totals


def report_from_prometheus(url: str, window_s: float, prefix: str = "ray_") -> CostReport:
    """The same table from the counters (requests are not counted there: shown as '-'). Ray's metrics
    endpoint exports Serve's application metrics with a `ray_` prefix (`ray_surge_cost_usd_total`)."""
    report = CostReport(window_s=window_s)
    labels = ("model", "version", "tenant")
    for key, usd in window_totals(url, f"{prefix}surge_cost_usd_total", labels, window_s).items():
        model, version, tenant = key
        report.rows.setdefault((model, version, tenant), Row(requests=-1)).cost_usd += usd
    tokens = window_totals(url, f"{prefix}surge_cost_tokens_total", (*labels, "direction"), window_s)
    for (model, version, tenant, direction), count in tokens.items():
        row = report.rows.setdefault((model, version, tenant), Row(requests=-1))
        if direction == "in":
            row.tokens_in += round(count)
        else:
            row.tokens_out += round(count)
    # The gateway sets the gauge every few seconds and Ray exports each setting once: read it over the window.
    window = f"{int(window_s)}s"
    prices = _prometheus(
        url, f"max by (stage) (max_over_time({prefix}surge_cost_replica_usd_per_hour[{window}]))"
    )
    if prices:
        report.app_always_on_usd_per_hour = sum(float(sample["value"][1]) for sample in prices)
    return report


def run_cost(args: argparse.Namespace, kafka: KafkaSettings) -> int:
    window_s = parse_since(args.since)
    if args.prometheus:
        report = report_from_prometheus(args.prometheus, window_s, args.metric_prefix)
    else:
        report = report_from_records(
            read_usage_values(kafka, USAGE.with_prefix(args.topic_prefix).name), window_s
        )
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    source = (
        f"Prometheus {args.prometheus}"
        if args.prometheus
        else f"topic {USAGE.with_prefix(args.topic_prefix).name}"
    )
    print(f"surge cost, last {args.since} to {stamp}, from {source}")
    print(report.render())
    return 0


def register_cli(subparsers: Any) -> None:
    """Adds `surge cost` (called by `pipelines.cli`)."""
    parser = subparsers.add_parser(
        "cost", help="Cost per model, version and tenant, and the always-on price."
    )
    parser.add_argument("--since", default="24h", help="Window, e.g. 30m, 24h, 7d (default 24h).")
    parser.add_argument("--prometheus", help="Read the surge_cost_* counters from this Prometheus URL.")
    parser.add_argument(
        "--bootstrap-servers", help="Kafka bootstrap servers (default $SURGE_BOOTSTRAP_SERVERS)."
    )
    parser.add_argument("--topic-prefix", default="", help="Prefix of every topic name.")
    parser.add_argument(
        "--metric-prefix", default="ray_", help="Prefix Ray's exporter puts on the metrics (default ray_)."
    )
    parser.set_defaults(handler=_cost_command)


def _cost_command(args: argparse.Namespace) -> int:
    import os
    import sys

    import httpx

    servers = args.bootstrap_servers or os.environ.get("SURGE_BOOTSTRAP_SERVERS") or "127.0.0.1:9092"
    try:
        return run_cost(args, KafkaSettings(bootstrap_servers=servers))
    except (ValueError, TimeoutError, httpx.HTTPError) as error:
        print(f"surge cost: error: {error}", file=sys.stderr)
        return 2
