"""The Ray batch feature job: a bounded offset range of `events` -> windowed features per entity.

One run:

1. **Plan** the range: explicit `PARTITION:START-END` ranges, or, by default, from where the online store's
   offset ledger ends to the topic's end offsets (optionally capped per partition). `--min-lag N` makes the
   run a no-op while fewer than N records wait, so a scheduler or a lag trigger can call it freely.
2. **Skip** if the ledger already holds exactly this range (a re-run changes nothing).
3. **Read** the range with kafka-python (partitions assigned, seek to start, read to end; no consumer
   group). Records that are not valid `EventRecord`s go to `events.dlq` with the standard DLQ headers.
4. **Compute** with Ray Data over blocks that each hold whole entities: a class-based UDF embeds text
   fields (the model loads once per actor), then a vectorised aggregation per (entity, tumbling window)
   gives counts, sums, maximum, event-type counts, first/last event time, recency (window end minus last
   event) and the mean text embedding.
5. **Write** the offline store (Parquet, one file per range and date partition, named by the range, so a
   re-run rewrites identical files), then apply the rows to the online store and record the range in the
   ledger in one transaction (see `surge_core.feature_store`).

Run as a script (`python -m pipelines.feature_job run ...`, or `surge feature-job run ...`) it starts Ray
itself (`ray.init()`, which honours `RAY_ADDRESS`) once it has records to compute, so no-op runs (nothing
new, `--min-lag` not reached, range already applied) never start Ray; called from Python it uses the
caller's Ray session.

Measured on a 2-core machine shared with other work (local Ray, 4 logical CPUs, 500 entities, one-hour
windows): 20,000 events without text in 11.2 s on cold Ray workers (1.8k events/s) and 2.8 s warm (7.1k
events/s, Kafka read and both stores included); 3,000 events of which 30% carry text in 13-19 s (150-230
events/s), bounded by MiniLM on one thread, model load included.

Dead letters are published before the range is applied, so a run that crashes between the two and is
re-run publishes them again: the DLQ is at-least-once, the features exactly-once.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import sys
import time
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from pipelines import feature_recovery
from pipelines.feature_reading import (  # re-exported: they used to live here
    DLQ_GROUP,
    EVENT_RECORD,
    ReadResult,
    commit_progress,
    plan_range,
    publish_dead_letters,
    read_range,
    topic_offsets,
)
from surge_core.embedding import EmbeddingModelSettings
from surge_core.feature_store import (
    FeatureRow,
    OfflineFeatureStore,
    OffsetRange,
    OnlineStoreSettings,
    PartitionRange,
    SqliteOnlineStoreSettings,
    open_online_store,
)
from surge_core.kafka_settings import KafkaSettings
from surge_core.model_assets import cache_dir

logger = logging.getLogger(__name__)

__all__ = [
    "DLQ_GROUP",
    "EVENT_RECORD",
    "FeatureJobSettings",
    "ReadResult",
    "commit_progress",
    "plan_range",
    "publish_dead_letters",
    "read_range",
    "run_feature_job",
    "topic_offsets",
]


class FeatureJobSettings(BaseModel):
    """Everything one feature-job run needs; loadable from JSON (`--settings FILE`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kafka: KafkaSettings = Field(default_factory=KafkaSettings, description="Broker connection.")
    topic: str = Field("events", min_length=1, description="Topic holding EventRecord values.")
    window_s: int = Field(3600, ge=1, le=31 * 86400, description="Tumbling window length in seconds.")
    offline_path: Path = Field(
        default_factory=lambda: cache_dir() / "features" / "offline",
        description="Root folder of the offline Parquet store (default: $SURGE_CACHE_DIR/features/offline).",
    )
    online: OnlineStoreSettings = Field(
        default_factory=SqliteOnlineStoreSettings, description="Online store backend (sqlite | postgres)."
    )
    embed_text: bool = Field(True, description="Embed the events' text field (mean embedding per window).")
    embedder: EmbeddingModelSettings = Field(
        default_factory=EmbeddingModelSettings, description="Embedding model used for text fields."
    )
    embed_batch_size: int = Field(64, ge=1, le=4096, description="Rows per batch sent to the embedding UDF.")
    embed_actors: int = Field(1, ge=1, le=64, description="Embedding actors (each loads the model once).")
    embed_actor_cpus: float = Field(1.0, gt=0, le=64, description="CPUs reserved per embedding actor.")
    max_records_per_partition: int | None = Field(
        None, ge=1, description="Cap on records read per partition in one run (None: up to the end offset)."
    )
    aggregate_task_cpus: float = Field(
        1.0,
        gt=0,
        le=64,
        description="CPUs reserved per aggregation task (fractions fit beside Serve replicas).",
    )
    min_blocks: int = Field(
        4, ge=1, le=10_000, description="Fewest blocks the events are split into by entity (parallelism)."
    )
    max_rows_per_block: int = Field(
        20_000, ge=100, description="Most events per block (more blocks for big ranges; keeps blocks small)."
    )
    read_timeout_s: float = Field(60.0, gt=0, description="Longest the read of one range may take.")
    progress_group: str | None = Field(
        "surge-feature-job",
        min_length=1,
        description="Consumer group the applied end offsets are committed to, so Kafka tools and the lag "
        "trigger see the job's lag (advisory: the ledger decides what is applied). None: no commit.",
    )


# ------------------------------------------------------------------------------------------- computing


class EmbedTexts:
    """Ray Data class UDF: loads the embedding model once per actor, adds an `embedding` column."""

    def __init__(self, embedder_json: str) -> None:
        from surge_core.embedding import TextEmbedder

        self.embedder = TextEmbedder(EmbeddingModelSettings.model_validate_json(embedder_json))

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        texts = batch["text"].fillna("")
        mask = (texts != "").to_numpy()
        vectors = np.zeros((len(batch), self.embedder.dimensions), dtype=np.float32)
        if mask.any():
            vectors[mask] = self.embedder.embed(texts[mask].tolist())
        batch = batch.copy()
        batch["has_text"] = mask
        batch["embedding"] = list(vectors)
        return batch


def aggregate_partition(batch: pd.DataFrame, window_us: int) -> pd.DataFrame:
    """Feature rows of every (entity, window) group in a batch, vectorised (pandas group-by, numpy).

    The batch must hold *all* events of its entities (see `partition_by_entity`); timestamps are epoch
    microseconds. Output columns: entity_id, window_start_us, event_count, value_count, value_sum,
    value_max, event_type_counts (JSON), first_event_us, last_event_us, recency_s, text_count,
    text_embedding (JSON list, or JSON null without text).
    """
    keys = ["entity_id", "window_start_us"]
    grouped = batch.groupby(keys, sort=True)
    out = grouped.agg(
        event_count=("ts_us", "size"),
        value_count=("value", "count"),
        value_sum=("value", "sum"),
        value_max=("value", "max"),
        first_event_us=("ts_us", "min"),
        last_event_us=("ts_us", "max"),
    ).reset_index()
    out["value_max"] = out["value_max"].astype(object).where(out["value_max"].notna(), None)
    out["recency_s"] = (out["window_start_us"] + window_us - out["last_event_us"]) / 1e6
    types = batch.groupby([*keys, "event_type"], sort=True).size()
    per_group: dict[tuple[str, int], dict[str, int]] = {}
    for (entity, window, event_type), n in types.items():
        per_group.setdefault((entity, int(window)), {})[str(event_type)] = int(n)
    out["event_type_counts"] = [
        json.dumps(per_group[(e, int(w))], sort_keys=True)
        for e, w in zip(out["entity_id"], out["window_start_us"], strict=True)
    ]
    codes = grouped.ngroup().to_numpy()  # row -> index of its group in `out` (both sorted by the keys)
    has_text = batch["has_text"].to_numpy(dtype=bool) if "has_text" in batch else np.zeros(len(batch), bool)
    text_count = np.bincount(codes[has_text], minlength=len(out))
    out["text_count"] = text_count
    embeddings: list[str] = ["null"] * len(out)
    if has_text.any():
        vectors = np.stack([np.asarray(v, dtype=np.float32) for v in batch["embedding"].to_numpy()[has_text]])
        sums = np.zeros((len(out), vectors.shape[1]), dtype=np.float64)
        np.add.at(sums, codes[has_text], vectors)
        for i in np.flatnonzero(text_count):
            embeddings[i] = json.dumps((sums[i] / text_count[i]).astype(np.float32).tolist())
    out["text_embedding"] = embeddings
    return out


def partition_by_entity(frame: pd.DataFrame, partitions: int) -> list[pd.DataFrame]:
    """Split events into blocks so that all events of an entity share one block (stable crc32 hash)."""
    buckets = np.array([zlib.crc32(e.encode()) % partitions for e in frame["entity_id"]])
    return [frame[buckets == b].reset_index(drop=True) for b in range(partitions) if (buckets == b).any()]


def compute_features(
    events: list[dict[str, Any]], settings: FeatureJobSettings, offset_range: OffsetRange
) -> list[FeatureRow]:
    """Windowed features per entity with Ray Data (uses the current Ray session).

    Events are split into blocks by entity (`partition_by_entity`), so each block holds whole entities;
    every stage then maps whole blocks (`batch_size=None`: a block is never split across batches): the
    embedding UDF (an actor pool; the model loads once per actor) and the vectorised aggregation. That
    replaces a group-by shuffle whose per-group Python calls cost about 1 ms per (entity, window) here.
    """
    import ray

    if not events:
        return []
    if not ray.is_initialized():
        # Only a run with work to do starts Ray (no-op runs stay cheap). ray.init() joins the cluster in
        # RAY_ADDRESS when set (a RayJob's driver), else starts a local one.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        ray.init(include_dashboard=False, log_to_driver=False)
    window_us = settings.window_s * 1_000_000
    frame = pd.DataFrame(events)
    frame["window_start_us"] = (frame["ts_us"] // window_us) * window_us
    partitions = max(settings.min_blocks, -(-len(frame) // settings.max_rows_per_block))
    dataset: ray.data.Dataset = ray.data.from_pandas(partition_by_entity(frame, partitions))
    if settings.embed_text and (frame["text"] != "").any():
        from ray.data import ActorPoolStrategy

        dataset = dataset.map_batches(
            EmbedTexts,
            fn_constructor_args=(settings.embedder.model_dump_json(),),
            batch_size=None,
            batch_format="pandas",
            compute=ActorPoolStrategy(size=settings.embed_actors),
            num_cpus=settings.embed_actor_cpus,
        )
    features = dataset.map_batches(
        functools.partial(aggregate_partition, window_us=window_us),
        batch_size=None,
        batch_format="pandas",
        num_cpus=settings.aggregate_task_cpus,
    ).to_pandas()
    if features.duplicated(["entity_id", "window_start_us"]).any():
        # Would mean Ray split a block across batches: refuse rather than write half-counted windows.
        raise RuntimeError("an (entity, window) group was split across blocks; raise max_rows_per_block")
    rows = [_to_feature_row(r, window_us, offset_range) for r in features.to_dict("records")]
    rows.sort(key=lambda r: (r["entity_id"], r["window_start"]))
    return rows


def _from_us(us: int) -> datetime:
    return datetime.fromtimestamp(us / 1_000_000, tz=UTC)


def _to_feature_row(raw: dict[str, Any], window_us: int, offset_range: OffsetRange) -> FeatureRow:
    start = _from_us(int(raw["window_start_us"]))
    value_max = raw["value_max"]
    return {
        "entity_id": raw["entity_id"],
        "window_start": start,
        "window_end": _from_us(int(raw["window_start_us"]) + window_us),
        "event_count": int(raw["event_count"]),
        "value_count": int(raw["value_count"]),
        "value_sum": float(raw["value_sum"]),
        "value_max": None if value_max is None or pd.isna(value_max) else float(value_max),
        "event_type_counts": raw["event_type_counts"],
        "first_event_at": _from_us(int(raw["first_event_us"])),
        "last_event_at": _from_us(int(raw["last_event_us"])),
        "recency_s": float(raw["recency_s"]),
        "text_count": int(raw["text_count"]),
        "text_embedding": json.loads(raw["text_embedding"]),
        "range_id": offset_range.range_id,
        "window_date": start.strftime("%Y-%m-%d"),
    }


# ---------------------------------------------------------------------------------------------- the run


@dataclass
class FeatureJobResult:
    """What a run did; `status` is one of applied | already_applied | below_min_lag | empty."""

    status: str
    range_id: str
    lag: int
    records: int = 0
    dead_letters: int = 0
    feature_rows: int = 0
    entities: int = 0
    offline_files: list[str] = field(default_factory=list)
    seconds: float = 0.0
    compute_seconds: float = 0.0

    @property
    def records_per_s(self) -> float:
        return self.records / self.seconds if self.seconds else 0.0


def run_feature_job(
    settings: FeatureJobSettings,
    ranges: Sequence[PartitionRange] | None = None,
    min_lag: int = 0,
) -> FeatureJobResult:
    """One run over an explicit range, or the next planned one; see the module docstring."""
    started = time.perf_counter()
    online = open_online_store(settings.online)
    try:
        offline_root = Path(settings.offline_path).expanduser()
        feature_recovery.recover(offline_root, online)
        if ranges:
            offset_range = OffsetRange.of(settings.topic, ranges)
            lag = offset_range.records
        else:
            beginning, end = topic_offsets(settings.kafka, settings.topic)
            committed = online.committed_ends(settings.topic)
            full = plan_range(settings.topic, beginning, end, committed)
            lag = full.records
            offset_range = plan_range(
                settings.topic, beginning, end, committed, settings.max_records_per_partition
            )
        result = FeatureJobResult(status="empty", range_id=offset_range.range_id, lag=lag)
        if lag < min_lag:
            result.status = "below_min_lag"
        elif offset_range.records == 0:
            result.status = "empty"
        elif online.is_applied(offset_range):
            result.status = "already_applied"
        else:
            read = read_range(settings.kafka, offset_range, settings.read_timeout_s)
            publish_dead_letters(settings.kafka, read.dead_letters)
            compute_start = time.perf_counter()
            rows = compute_features(read.events, settings, offset_range)
            result.compute_seconds = time.perf_counter() - compute_start
            # Marker first, online apply (with the ledger) last: see pipelines.feature_recovery.
            feature_recovery.begin(offline_root, offset_range)
            files = OfflineFeatureStore(offline_root).write(offset_range, rows)
            applied = online.apply(offset_range, rows)
            feature_recovery.finish(offline_root, offset_range)
            result.status = "applied" if applied.applied else "already_applied"
            result.records = offset_range.records
            result.dead_letters = len(read.dead_letters)
            result.feature_rows = len(rows)
            result.entities = applied.entities
            result.offline_files = [str(f) for f in files]
        if result.status in ("applied", "already_applied") and settings.progress_group:
            commit_progress(settings.kafka, settings.progress_group, offset_range)
        result.seconds = time.perf_counter() - started
        logger.info("feature job %s: %s", result.status, json.dumps(asdict(result), default=str))
        return result
    finally:
        online.close()


# ------------------------------------------------------------------------------------------------- CLI


def load_settings(path: str | None, **overrides: Any) -> FeatureJobSettings:
    data: dict[str, Any] = json.loads(Path(path).read_text()) if path else {}
    for key, value in overrides.items():
        if value is not None:
            data[key] = value
    return FeatureJobSettings.model_validate(data)


def register_cli(subparsers: Any) -> None:
    """Adds `feature-job run` to the `surge` CLI (called by `pipelines.cli`)."""
    parser = subparsers.add_parser("feature-job", help="Ray batch feature job over the events topic.")
    commands = parser.add_subparsers(dest="feature_job_command", required=True)
    run = commands.add_parser("run", help="Consume one bounded offset range and write features.")
    run.add_argument("--settings", help="JSON file with FeatureJobSettings.")
    run.add_argument("--bootstrap-servers", help="Kafka bootstrap servers (overrides the settings).")
    run.add_argument("--topic", help="Events topic (default: <topic prefix>events).")
    run.add_argument("--topic-prefix", help="Prefix of every topic name.")
    run.add_argument(
        "--range",
        action="append",
        dest="ranges",
        metavar="P:START-END",
        help="Explicit offset range of one partition (repeat per partition); default: ledger end to log end.",
    )
    run.add_argument("--min-lag", type=int, default=0, help="Do nothing while fewer records are waiting.")
    run.add_argument("--max-records-per-partition", type=int, help="Cap on records per partition.")
    run.add_argument("--offline-path", help="Offline Parquet store root.")
    run.add_argument("--no-embed", action="store_true", help="Skip text embeddings.")
    run.set_defaults(handler=_run_command)

    trigger = commands.add_parser(
        "trigger", help="Create a feature-job RayJob on Kubernetes when the events lag passes --min-lag."
    )
    trigger.add_argument("--bootstrap-servers", help="Kafka bootstrap servers.")
    trigger.add_argument("--topic", default="events", help="Events topic.")
    trigger.add_argument("--group", default="surge-feature-job", help="The feature job's progress group.")
    trigger.add_argument("--min-lag", type=int, required=True, help="Records waiting that start a run.")
    trigger.add_argument("--image", required=True, help="Image of the job's Ray pods.")
    trigger.add_argument("--namespace", default="default", help="Namespace of the RayJob.")
    trigger.add_argument("--settings-configmap", help="ConfigMap holding feature-job.json.")
    trigger.add_argument(
        "--dry-run", action="store_true", help="Print the decision and body; create nothing."
    )
    trigger.set_defaults(handler=_trigger_command)


def _run_command(args: argparse.Namespace) -> int:
    topic = args.topic or (f"{args.topic_prefix}events" if args.topic_prefix else None)
    overrides: dict[str, Any] = {
        "topic": topic,
        "offline_path": args.offline_path,
        "max_records_per_partition": args.max_records_per_partition,
        "embed_text": False if args.no_embed else None,
    }
    settings = load_settings(args.settings, **overrides)
    servers = args.bootstrap_servers or os.environ.get("SURGE_BOOTSTRAP_SERVERS")
    if servers:
        kafka = settings.kafka.model_copy(update={"bootstrap_servers": servers})
        settings = settings.model_copy(update={"kafka": kafka})
    ranges = [PartitionRange.parse(r) for r in args.ranges or ()]
    result = run_feature_job(settings, ranges or None, min_lag=args.min_lag)
    import ray

    summary = asdict(result) | {
        "records_per_s": round(result.records_per_s, 1),
        # Which Ray cluster did the work (None: no Ray was needed).
        "ray_address": ray.get_runtime_context().gcs_address if ray.is_initialized() else None,
    }
    print(json.dumps(summary, default=str))
    return 0


def _trigger_command(args: argparse.Namespace) -> int:
    from pipelines.cluster import (
        FeatureRayJobSpec,
        LagTriggerPolicy,
        decide_trigger,
        feature_job_lag,
        feature_rayjob_body,
        kubernetes_api,
        trigger_feature_job,
    )

    servers = args.bootstrap_servers or os.environ.get("SURGE_BOOTSTRAP_SERVERS") or "127.0.0.1:9092"
    kafka = KafkaSettings(bootstrap_servers=servers)
    from surge_core.tracing import otel_env

    spec = FeatureRayJobSpec(
        image=args.image,
        namespace=args.namespace,
        settings_configmap=args.settings_configmap,
        env=otel_env(),  # the job's driver and workers trace like the trigger does (OTEL_* passthrough)
    )
    policy = LagTriggerPolicy(min_lag=args.min_lag)
    lag = feature_job_lag(kafka, args.topic, args.group)
    if args.dry_run:
        decision = decide_trigger(lag, [], policy)
        print(json.dumps({"decision": asdict(decision), "body": feature_rayjob_body(spec)}, indent=2))
        return 0
    decision = trigger_feature_job(kubernetes_api(), spec, lag, policy)
    print(json.dumps(asdict(decision)))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    parser = argparse.ArgumentParser(prog="python -m pipelines.feature_job")
    register_cli(parser.add_subparsers(dest="command", required=True))
    # `python -m pipelines.feature_job run ...` reads like `surge feature-job run ...`.
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(["feature-job", *arguments])
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
