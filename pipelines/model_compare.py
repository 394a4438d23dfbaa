"""`surge compare`: primary vs shadow, per version, from the inference-log topic.

For every alias with shadow traffic, each version's requests are summarised side by side: requests, error
rate (5xx), TTFT p50/p95, tokens/s (completion tokens over the request's latency), mean output length in
tokens, and drift of the output length (the two-sample Kolmogorov-Smirnov statistic, 0 = same
distribution, 1 = disjoint). Shadow rows are the records the gateway marked `shadow: true`.

Answer agreement: each shadow record names the primary request it mirrors (`shadow_of`, record schema 2)
and both carry their answer (the gateway's `include_answer`, on by default, redacted). Both answers are
embedded with `surge_core.embedding` (the Embedder's model, normalised) and a shadow row reports the mean
cosine similarity over its pairs, a negative cosine counted as 0 (unrelated), so agreement is in [0, 1]:
1 = the same answers; with all-MiniLM-L6-v2 a paraphrase scored 0.976 and three unrelated pairs 0.0. Pairs where either side
failed or has no answer (include_answer off, version 1 records) are left out; `agreement_pairs` counts the
pairs used, and agreement is `null` without any.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from surge_core.kafka_settings import KafkaSettings
from surge_core.records import InferenceLogRecord
from surge_core.topics import INFERENCE_LOG

# Texts -> their embeddings, one normalised row per text (`surge_core.embedding.TextEmbedder.embed`).
Embed = Callable[[Sequence[str]], np.ndarray]


def summarise(
    records: Iterable[InferenceLogRecord], embed: Embed | None = None
) -> dict[str, list[dict[str, Any]]]:
    """alias -> one row per (version, shadow) of the aliases that had shadow traffic; with `embed`, shadow
    rows carry the answer agreement with their primaries."""
    records = list(records)
    groups: dict[str, dict[tuple[str, bool], list[InferenceLogRecord]]] = defaultdict(
        lambda: defaultdict(list)
    )
    primaries = {r.request_id: r for r in records if not r.shadow and _answered(r)}
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
        report[alias] = []
        for (version, shadow), rs in sorted(by_version.items()):
            row = _row(version, shadow, rs, primary_lengths)
            if shadow:
                pairs = [(primaries[r.shadow_of], r) for r in rs if r.shadow_of in primaries and _answered(r)]
                row["agreement_pairs"] = len(pairs)
                row["answer_agreement"] = answer_agreement(pairs, embed) if embed is not None else None
            report[alias].append(row)
    return report


def _answered(record: InferenceLogRecord) -> bool:
    return record.status_code < 500 and bool(record.answer and record.answer.strip())


def answer_agreement(
    pairs: Sequence[tuple[InferenceLogRecord, InferenceLogRecord]], embed: Embed
) -> float | None:
    """Mean cosine similarity of (primary answer, shadow answer) pairs, each clamped to [0, 1]."""
    if not pairs:
        return None
    vectors = np.asarray(embed([r.answer or "" for pair in pairs for r in pair]), dtype=np.float64)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors = vectors / np.where(norms > 0, norms, 1.0)
    cosines = np.sum(vectors[0::2] * vectors[1::2], axis=1)
    return round(float(np.mean(np.clip(cosines, 0.0, 1.0))), 4)


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
        "answer_agreement": None,  # shadow rows: filled in by summarise
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
    parser.add_argument(
        "--embedding-model",
        default=None,
        help="Embedding model for answer agreement (default: the Embedder's, all-MiniLM-L6-v2).",
    )
    parser.add_argument("--no-agreement", action="store_true", help="Skip answer agreement (no model load).")
    parser.set_defaults(handler=_compare_command)


def _compare_command(args: argparse.Namespace) -> int:
    servers = args.bootstrap_servers or os.environ.get("SURGE_BOOTSTRAP_SERVERS") or "127.0.0.1:9092"
    topic = INFERENCE_LOG.with_prefix(args.topic_prefix).name
    embed = None
    if not args.no_agreement:
        from surge_core.embedding import EmbeddingModelSettings, TextEmbedder

        settings = EmbeddingModelSettings(**({"model": args.embedding_model} if args.embedding_model else {}))
        embed = TextEmbedder(settings).embed
    report = summarise(read_inference_log(KafkaSettings(bootstrap_servers=servers), topic), embed)
    print(json.dumps(report, indent=2))
    return 0
