"""Feature job and drift monitor throughput, each against a plain baseline in the same run.

Feature job (pipelines.feature_job, Ray Data): N events on the `events` topic, one run over the whole
range (read from Kafka, windowed aggregation, offline Parquet + online SQLite writes); records/s.
Baseline: the same aggregation (count, sum, max per entity and window) with one pandas group-by on the
same events already in memory: the floor of the computation without Kafka, Ray or stores.

Drift monitor (pipelines.drift): M inference-log records through the real consumer loop (Kafka, decode,
PSI/KS on four numeric features, embedding cosine on prompt sketches, commit); events/s and ms per
evaluated window. Baselines: `DriftMonitor.observe` on the same records in memory (the monitor without
Kafka) and a plain Kafka consumer that only reads and decodes them (Kafka without the monitor).

    python -m benchmarks.feature_and_drift [--quick]
"""

from __future__ import annotations

import random
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from benchmarks import _harness as h

NAME = "feature_and_drift"
EVENT_TYPES = ["view", "click", "purchase", "refund"]


def main(argv: list[str] | None = None) -> Path:
    parser = h.common_parser(__doc__ or NAME)
    parser.add_argument("--events", type=int, default=None)
    parser.add_argument("--log-records", type=int, default=None)
    args = parser.parse_args(argv)
    rounds = args.rounds or (1 if args.quick else 3)
    n_events = args.events or (2_000 if args.quick else 50_000)
    n_logs = args.log_records or (1_600 if args.quick else 12_000)
    started = time.time()
    machine = h.machine_info()
    events = make_events(n_events, args.seed)
    logs = make_logs(n_logs, args.seed)
    samples: dict[str, list[dict[str, float]]] = {}
    from pipelines.broker import LocalBroker

    with tempfile.TemporaryDirectory(prefix="surge-bench-features-") as tmp:
        broker = LocalBroker(data_dir=Path(tmp) / "broker", port=h.free_port())
        broker.start()
        import ray

        owns_ray = h.init_local_ray(num_cpus=2)
        try:
            bar = h.progress_bar("features + drift", rounds * 5)
            for r in range(rounds):
                samples.setdefault("pandas group-by (baseline)", []).append(pandas_baseline(events))
                bar.update(1)
                samples.setdefault("feature job", []).append(
                    feature_job_round(broker.bootstrap_servers, events, Path(tmp) / f"fj{r}")
                )
                bar.update(1)
                samples.setdefault("drift monitor in memory", []).append(monitor_in_memory(logs))
                bar.update(1)
                prefix = produce_logs(broker.bootstrap_servers, logs)
                samples.setdefault("Kafka read + decode only (baseline)", []).append(
                    plain_consume(broker.bootstrap_servers, prefix, len(logs))
                )
                bar.update(1)
                samples.setdefault("drift monitor via Kafka", []).append(
                    monitor_via_kafka(broker.bootstrap_servers, prefix, len(logs))
                )
                bar.update(1)
            bar.close()
        finally:
            if owns_ray:
                ray.shutdown()
            broker.stop()
    return report(args, samples, n_events, n_logs, rounds, started, machine)


# ---------------------------------------------------------------------------------------------- inputs


def make_events(count: int, seed: int) -> list[Any]:
    from surge_core.records import EventRecord

    rng = random.Random(seed)
    base = datetime(2026, 1, 1, tzinfo=UTC)
    return [
        EventRecord(
            event_id=f"e{seed}-{i}",
            entity_id=f"user-{rng.randrange(max(10, count // 50))}",
            event_type=rng.choice(EVENT_TYPES),
            timestamp=base + timedelta(seconds=rng.uniform(0, 7200)),
            value=round(rng.uniform(1, 100), 2),
        )
        for i in range(count)
    ]


def make_logs(count: int, seed: int) -> list[Any]:
    """Inference-log records; the second half drifts (longer prompts, slower answers)."""
    from surge_core.records import InferenceLogRecord

    rng = random.Random(seed)
    records = []
    for i in range(count):
        drift = i > count // 2
        records.append(
            InferenceLogRecord(
                request_id=f"r{i}",
                route="/v1/chat/completions",
                model="bench-model",
                status_code=200,
                latency_s=rng.gammavariate(2, 0.4 if drift else 0.2),
                ttft_s=rng.gammavariate(2, 0.05),
                prompt_tokens=int(rng.gauss(300 if drift else 120, 30)) if True else 0,
                completion_tokens=rng.randint(10, 200),
                retrieval_scores=[rng.random() for _ in range(4)],
                prompt_embedding=[rng.gauss(0.3 if drift else 0.0, 1) for _ in range(32)],
            )
        )
    return records


# ---------------------------------------------------------------------------------------------- feature job


def pandas_baseline(events: list[Any]) -> dict[str, float]:
    import pandas as pd

    t0 = time.perf_counter()
    frame = pd.DataFrame(
        {
            "entity_id": [e.entity_id for e in events],
            "ts": [e.timestamp.timestamp() for e in events],
            "value": [e.value for e in events],
        }
    )
    frame["window"] = (frame["ts"] // 3600).astype(int)
    features = frame.groupby(["entity_id", "window"])["value"].agg(["count", "sum", "max"])
    seconds = time.perf_counter() - t0
    return {"records_per_s": len(events) / seconds, "seconds": seconds, "feature_rows": float(len(features))}


def feature_job_round(servers: str, events: list[Any], workdir: Path) -> dict[str, float]:
    from pipelines.feature_job import FeatureJobSettings, run_feature_job
    from pipelines.producer import open_producer, produce_records
    from surge_core.feature_store import SqliteOnlineStoreSettings
    from surge_core.kafka_settings import KafkaSettings
    from surge_core.topics import EVENTS

    prefix = f"bench{uuid.uuid4().hex[:8]}."
    kafka = KafkaSettings(bootstrap_servers=servers)
    topic = EVENTS.with_prefix(prefix)
    from surge_core.kafka_admin import ensure_topics

    ensure_topics(kafka, [topic])
    producer = open_producer(kafka)
    produce_records(producer, topic, events, total=len(events))
    producer.close()
    settings = FeatureJobSettings(
        kafka=kafka,
        topic=topic.name,
        window_s=3600,
        offline_path=workdir / "offline",
        online=SqliteOnlineStoreSettings(path=workdir / "online.sqlite"),
        embed_text=False,
        progress_group=f"{prefix}feature-job",
    )
    result = run_feature_job(settings)
    if result.status != "applied" or result.records != len(events):
        raise RuntimeError(f"feature job did not apply all events: {result}")
    return {
        "records_per_s": result.records_per_s,
        "seconds": result.seconds,
        "compute_seconds": result.compute_seconds,
        "feature_rows": float(result.feature_rows),
    }


# ---------------------------------------------------------------------------------------------- drift


def monitor_settings(servers: str = "127.0.0.1:9", prefix: str = "") -> Any:
    from pipelines.drift import DriftMonitorSettings

    return DriftMonitorSettings.model_validate(
        {
            "kafka": {"bootstrap_servers": servers},
            "topic_prefix": prefix,
            "group_id": f"{prefix}drift",
            "reference_size": 1000,
            "window": {"by": "count", "size": 200},
            "batch_size": 200,
            "session_timeout_s": 6,
        }
    )


def monitor_in_memory(logs: list[Any]) -> dict[str, float]:
    from pipelines.drift import DriftMonitor

    monitor = DriftMonitor(monitor_settings())
    windows = []
    t0 = time.perf_counter()
    for record in logs:
        windows.extend(monitor.observe(record))
    seconds = time.perf_counter() - t0
    return {
        "events_per_s": len(logs) / seconds,
        "windows": float(len(windows)),
        "ms_per_window": 1000 * sum(w.seconds for w in windows) / max(1, len(windows)),
        "alerts": float(sum(len(w.alerts) for w in windows)),
    }


def produce_logs(servers: str, logs: list[Any]) -> str:
    from pipelines.producer import open_producer, produce_records
    from surge_core.kafka_admin import ensure_topics
    from surge_core.kafka_settings import KafkaSettings
    from surge_core.topics import topic_specs

    prefix = f"bench{uuid.uuid4().hex[:8]}."
    kafka = KafkaSettings(bootstrap_servers=servers)
    specs = topic_specs(prefix)
    ensure_topics(kafka, [specs["inference-log"], specs["drift-alerts"]])
    producer = open_producer(kafka)
    produce_records(producer, specs["inference-log"], logs, total=len(logs))
    producer.close()
    return prefix


def plain_consume(servers: str, prefix: str, expected: int) -> dict[str, float]:
    from kafka import KafkaConsumer

    from surge_core.kafka_settings import KafkaSettings
    from surge_core.records import InferenceLogRecord
    from surge_core.topics import topic_specs

    kafka = KafkaSettings(bootstrap_servers=servers)
    consumer = KafkaConsumer(
        topic_specs(prefix)["inference-log"].name,
        **kafka.kafka_python_config(),
        group_id=f"{prefix}plain",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    seen = 0
    t0 = time.perf_counter()
    deadline = time.monotonic() + 300
    while seen < expected and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=500, max_records=1000).values():
            for message in batch:
                InferenceLogRecord.model_validate_json(message.value)
                seen += 1
    seconds = time.perf_counter() - t0
    consumer.close()
    if seen < expected:
        raise RuntimeError(f"plain consumer read {seen} of {expected} records")
    return {"events_per_s": expected / seconds, "seconds": seconds}


def monitor_via_kafka(servers: str, prefix: str, expected: int) -> dict[str, float]:
    from pipelines.drift import build_monitor_loop

    loop, publisher = build_monitor_loop(monitor_settings(servers, prefix))
    handler = loop.handler if hasattr(loop, "handler") else None
    thread = threading.Thread(target=loop.run, daemon=True)
    t0 = time.perf_counter()
    thread.start()
    from benchmarks.kafka_ingestion import group_lag
    from surge_core.kafka_settings import KafkaSettings
    from surge_core.topics import topic_specs

    kafka = KafkaSettings(bootstrap_servers=servers)
    topic = topic_specs(prefix)["inference-log"].name
    deadline = time.monotonic() + 600
    time.sleep(0.5)
    while time.monotonic() < deadline and group_lag(kafka, f"{prefix}drift", topic) > 0:
        time.sleep(0.25)
    seconds = time.perf_counter() - t0
    loop.stop()
    thread.join(30)
    publisher.close()
    results = list(getattr(handler, "results", []))
    return {
        "events_per_s": expected / seconds,
        "seconds": seconds,
        "windows": float(len(results)),
        "ms_per_window": 1000 * sum(w.seconds for w in results) / max(1, len(results)),
    }


# ---------------------------------------------------------------------------------------------- report


def report(
    args: Any,
    samples: dict[str, list[dict[str, float]]],
    n_events: int,
    n_logs: int,
    rounds: int,
    started: float,
    machine: dict[str, Any],
) -> Path:
    figures: dict[str, Any] = {}
    rows = []
    for label, runs in samples.items():
        keys = sorted({k for run in runs for k in run})
        figures[label] = {k: h.across_rounds([run[k] for run in runs]) for k in keys}
        rate_key = "records_per_s" if "records_per_s" in figures[label] else "events_per_s"
        rate = figures[label][rate_key]
        rows.append(
            [
                label,
                rate_key.replace("_per_s", "/s"),
                rate["median"],
                f"{rate['min']:.0f}-{rate['max']:.0f}",
                figures[label].get("ms_per_window", {}).get("median"),
            ]
        )
    fj = figures["feature job"]["records_per_s"]["median"]
    pb = figures["pandas group-by (baseline)"]["records_per_s"]["median"]
    figures["feature_job_ratio_to_pandas"] = h.ratio(fj, pb, 4)
    figures["drift_via_kafka_ratio_to_plain_consume"] = h.ratio(
        figures["drift monitor via Kafka"]["events_per_s"]["median"],
        figures["Kafka read + decode only (baseline)"]["events_per_s"]["median"],
    )
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    plots = [
        h.plot_bars(
            out / f"{NAME}.png",
            {label: {"per second (median)": row[2]} for label, row in zip(samples, rows, strict=True)},
            "records or events / s",
            "Feature job and drift monitor vs baselines",
        )
    ]
    results = h.Results(
        headline=h.Headline(
            metric="drift monitor events/s through its consumer loop / plain Kafka read + decode",
            value=figures["drift_via_kafka_ratio_to_plain_consume"],
            goal=0.5,
            better="higher",
            baseline="a plain Kafka read + decode of the same records (same run)",
        ),
        name=NAME,
        description="Feature job records/s vs a pandas group-by; drift monitor events/s and ms per window vs "
        "the monitor in memory and a plain Kafka read.",
        parameters={
            "events": n_events,
            "inference_log_records": n_logs,
            "rounds": rounds,
            "window_s": 3600,
            "embed_text": False,
            "drift_reference": 1000,
            "drift_window": 200,
            "drift_tests": ["psi", "ks", "embedding_cosine"],
        },
        figures=figures,
        table_headers=["path", "unit", "median", "range", "ms per window"],
        table_rows=rows,
        notes=[
            "The feature job's time includes Ray Data start-up of its pipeline, the Kafka read and both store "
            "writes; the pandas baseline has the events in memory already.",
            "Feature job runs without text embedding (embed_text off): see embedding_throughput for that cost.",
        ],
        plots=plots,
    )
    return h.write_results(results, out, started, machine)


if __name__ == "__main__":
    main()
