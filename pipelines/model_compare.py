"""`surge compare`: primary vs shadow, per version, from the inference-log topic.

For every alias with shadow traffic, each version's requests are summarised side by side: requests, error
rate (5xx), TTFT p50/p95, tokens/s (completion tokens over the request's latency), mean output length in
tokens, and drift of the output length (the two-sample Kolmogorov-Smirnov statistic, 0 = same
distribution, 1 = disjoint). Shadow rows are the records the gateway marked `shadow: true`.

Answer agreement (embedding similarity of the two answers) needs the answers, which the inference log does
not carry (privacy by default): it is reported as `null` until the gateway logs answer sketches.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from surge_core.kafka_settings import KafkaSettings
from surge_core.records import InferenceLogRecord
from surge_core.topics import INFERENCE_LOG


def summarise(records: Iterable[InferenceLogRecord]) -> dict[str, list[dict[str, Any]]]:
    """alias -> one row per (version, shadow) of the aliases that had shadow traffic."""
    groups: dict[str, dict[tuple[str, bool], list[InferenceLogRecord]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for record in records:
        if record.alias is not None:
            groups[record.alias][(f"{record.model}@{record.model_version}", record.shadow)].append(record)
    report: dict[str, list[dict[str, Any]]] = {}
    for alias, by_version in sorted(groups.items()):
        if not any(shadow for _, shadow in by_version):
            continue
        primary_lengths = [
            r.completion_tokens for (_, shadow), rs in by_version.items() if not shadow for r in rs
        ]
        report[alias] = [
            _row(version, shadow, rs, primary_lengths) for (version, shadow), rs in sorted(by_version.items())
        ]
    return report


def _row(
    version: str, shadow: bool, records: list[InferenceLogRecord], primary_lengths: list[int]
) -> dict[str, Any]:
    ttfts = sorted(r.ttft_s for r in records if r.ttft_s is not None)
    ok = [r for r in records if r.status_code < 500]
    lengths = [r.completion_tokens for r in ok]
    rates = [r.completion_tokens / r.latency_s for r in ok if r.latency_s > 0]
    return {
        "version": version,
        "shadow": shadow,
        "requests": len(records),
        "error_rate": round(1 - len(ok) / len(records), 4),
        "ttft_p50_s": _quantile(ttfts, 0.5),
        "ttft_p95_s": _quantile(ttfts, 0.95),
        "tokens_per_s": round(statistics.median(rates), 2) if rates else None,
        "mean_output_tokens": round(statistics.fmean(lengths), 2) if lengths else None,
        "output_length_drift_ks": _ks(lengths, primary_lengths) if shadow else None,
        "answer_agreement": None,
    }


def _quantile(values: list[float], q: float) -> float | None:
    return round(values[min(len(values) - 1, int(q * len(values)))], 4) if values else None


def _ks(a: list[int], b: list[int]) -> float | None:
    """Largest gap between the two empirical CDFs."""
    if not a or not b:
        return None
    points = sorted(set(a) | set(b))
    return round(
        max(abs(sum(x <= p for x in a) / len(a) - sum(x <= p for x in b) / len(b)) for p in points), 4
    )


def read_inference_log(kafka: KafkaSettings, topic: str, timeout_s: float = 60.0) -> list[InferenceLogRecord]:
    """Every valid record of the topic, from the beginning to its current end (no group, nothing committed)."""
    import time

    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(**kafka.kafka_python_config(), group_id=None, enable_auto_commit=False)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        if not tps:
            return []
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        records: list[InferenceLogRecord] = []
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < end[tp] for tp in tps) and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                for message in batch:
                    try:
                        records.append(InferenceLogRecord.model_validate_json(message.value))
                    except ValueError:
                        continue  # not ours to judge here: the drift monitor dead-letters poison records
        return records
    finally:
        consumer.close()


def register_cli(subparsers: Any) -> None:
    """Adds `compare` to the `surge` CLI (called by `pipelines.cli`)."""
    parser = subparsers.add_parser("compare", help="Primary vs shadow per version, from the inference log.")
    parser.add_argument(
        "--bootstrap-servers", help="Kafka bootstrap servers (default $SURGE_BOOTSTRAP_SERVERS)."
    )
    parser.add_argument("--topic-prefix", default="", help="Prefix of every topic name.")
    parser.set_defaults(handler=_compare_command)


def _compare_command(args: argparse.Namespace) -> int:
    servers = args.bootstrap_servers or os.environ.get("SURGE_BOOTSTRAP_SERVERS") or "127.0.0.1:9092"
    topic = INFERENCE_LOG.with_prefix(args.topic_prefix).name
    report = summarise(read_inference_log(KafkaSettings(bootstrap_servers=servers), topic))
    print(json.dumps(report, indent=2))
    return 0
