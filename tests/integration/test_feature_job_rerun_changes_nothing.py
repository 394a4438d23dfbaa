"""Ray batch feature job over a real broker and the session's Ray: exactly-once effect per offset range.

- a fixed range gives byte-identical offline files and identical online rows, whether re-run on the same
  stores (a no-op thanks to the ledger) or computed again into fresh stores;
- the next range (planned from the ledger) appends: new Parquet files, online counts add up;
- malformed events go to events.dlq; --min-lag below the waiting records is a no-op;
- the applied end offsets are committed to the progress group, so the lag trigger reads the real lag.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer

from pipelines.cli import build_parser
from pipelines.cluster import feature_job_lag
from pipelines.dlq import parse_dlq_headers
from pipelines.feature_job import FeatureJobSettings, run_feature_job, topic_offsets
from pipelines.producer import open_producer, produce_records
from surge_core.feature_store import (
    OfflineFeatureStore,
    PartitionRange,
    SqliteOnlineStoreSettings,
    open_online_store,
)
from surge_core.kafka_admin import ensure_topics
from surge_core.kafka_settings import KafkaSettings
from surge_core.records import EventRecord
from surge_core.topics import topic_specs

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 28, 22, 0, tzinfo=UTC)
TEXTS = ["red running shoes", "blue denim jacket", "refund request for order", "gift card balance"]


def events(rng: random.Random, n: int, start: int, text_rate: float = 0.1) -> list[EventRecord]:
    out = []
    for i in range(start, start + n):
        out.append(
            EventRecord(
                event_id=f"ev{i}",
                entity_id=f"user{rng.randrange(25)}",
                event_type=rng.choice(["view", "cart", "purchase"]),
                timestamp=T0 + timedelta(seconds=rng.randrange(4 * 3600)),  # crosses midnight: 2 dates
                value=round(rng.uniform(1, 100), 2) if rng.random() < 0.6 else None,
                # Few texts: embedding runs on 2 CPU cores here.
                text=rng.choice(TEXTS) if rng.random() < text_rate else None,
            )
        )
    return out


def settings_for(kafka: KafkaSettings, topic: str, root: Path, group: str) -> FeatureJobSettings:
    return FeatureJobSettings(
        kafka=kafka,
        topic=topic,
        offline_path=root / "offline",
        online=SqliteOnlineStoreSettings(path=root / "online.sqlite"),
        progress_group=group,
        # Fractions: Serve replicas of other tests may hold most of the session's logical CPUs.
        embed_actor_cpus=0.5,
        aggregate_task_cpus=0.25,
    )


def offline_digests(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*.parquet"))
    }


def online_rows(settings: FeatureJobSettings) -> list[dict[str, Any]]:
    store = open_online_store(settings.online)
    try:
        return store.dump()
    finally:
        store.close()


def test_feature_job_reruns_change_nothing_and_next_range_appends(
    ray_session: None,
    kafka_settings: KafkaSettings,
    topic_prefix: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    spec = topic_specs(topic_prefix)["events"]
    ensure_topics(kafka_settings, [spec])
    rng = random.Random(42)
    first_batch = events(rng, 600, 0)
    producer = open_producer(kafka_settings)
    produce_records(producer, spec, first_batch)
    # Two poison messages: not JSON, and JSON that is not an EventRecord.
    raw = KafkaProducer(**kafka_settings.kafka_python_config(), acks="all")
    raw.send(spec.name, key=b"user1", value=b"{not json", partition=0)
    raw.send(spec.name, key=b"user2", value=b'{"entity_id": "user2"}', partition=1)
    raw.flush()
    raw.close()
    _, ends = topic_offsets(kafka_settings, spec.name)
    fixed = [PartitionRange(p, 0, end) for p, end in ends.items()]

    group = f"{topic_prefix}feature-job"
    main = settings_for(kafka_settings, spec.name, tmp_path / "main", group)
    first = run_feature_job(main, fixed)
    assert first.status == "applied"
    assert (first.records, first.dead_letters) == (602, 2)
    print(
        f"\n[feature job] {first.records} records in {first.seconds:.1f} s = {first.records_per_s:.0f} records/s "
        f"(Ray Data compute {first.compute_seconds:.1f} s, {first.feature_rows} feature rows, "
        f"{first.entities} entities)"
    )
    offline_after_first = offline_digests(tmp_path / "main" / "offline")
    online_after_first = online_rows(main)
    assert len(offline_after_first) == 2  # one file per date partition, named by the range
    assert len(online_after_first) == 25

    # Re-run of the same range on the same stores: the ledger makes it a no-op.
    again = run_feature_job(main, fixed)
    assert again.status == "already_applied"
    assert offline_digests(tmp_path / "main" / "offline") == offline_after_first
    assert online_rows(main) == online_after_first

    # The same range computed again from scratch (fresh stores): byte-identical files, identical rows.
    fresh = settings_for(kafka_settings, spec.name, tmp_path / "fresh", f"{group}-fresh")
    assert run_feature_job(fresh, fixed).status == "applied"
    assert offline_digests(tmp_path / "fresh" / "offline") == offline_after_first
    assert online_rows(fresh) == online_after_first

    # Features match the events: per-entity lifetime counts and value sums.
    expected_counts = Counter(e.entity_id for e in first_batch)
    rows = {r["entity_id"]: r for r in online_after_first}
    assert {k: v["lifetime_event_count"] for k, v in rows.items()} == dict(expected_counts)
    expected_sum = sum(e.value or 0 for e in first_batch if e.entity_id == "user3")
    assert rows["user3"]["lifetime_value_sum"] == pytest.approx(expected_sum)
    with_text = [r for r in rows.values() if r["text_count"]]
    assert with_text and all(len(r["text_embedding"]) == 384 for r in with_text)

    # Malformed events are in the DLQ with their reason.
    dlq = KafkaConsumer(
        **kafka_settings.kafka_python_config(), auto_offset_reset="earliest", consumer_timeout_ms=3000
    )
    dlq.subscribe([spec.dlq])
    reasons = Counter(parse_dlq_headers(m.headers)["reason"] for m in dlq)
    dlq.close()
    # Once per computed run (the main run and the fresh-store run); the no-op re-run read nothing.
    assert reasons == {"not_json": 2, "schema_invalid": 2}

    # Lag as the trigger sees it: zero after the run; then the next range waits.
    assert feature_job_lag(kafka_settings, spec.name, group) == 0
    # No text in this range: the run skips the embedding stage (one model load fewer in this test).
    second_batch = events(rng, 300, 600, text_rate=0.0)
    produce_records(producer, spec, second_batch)
    producer.close()
    assert feature_job_lag(kafka_settings, spec.name, group) == 300
    # `surge feature-job trigger --dry-run` reads the same lag and would create the RayJob.
    capsys.readouterr()
    servers = kafka_settings.bootstrap_servers
    command = [
        "feature-job",
        "trigger",
        "--bootstrap-servers",
        servers,
        "--topic",
        spec.name,
        "--group",
        group,
    ]
    trigger = build_parser().parse_args([*command, "--min-lag", "100", "--image", "surge:test", "--dry-run"])
    assert trigger.handler(trigger) == 0
    dry_run = json.loads(capsys.readouterr().out)
    assert (dry_run["decision"]["create"], dry_run["decision"]["lag"]) == (True, 300)
    assert dry_run["body"]["kind"] == "RayJob"
    assert run_feature_job(main, min_lag=1000).status == "below_min_lag"

    second = run_feature_job(main, min_lag=100)  # planned from the ledger's end to the log end
    assert second.status == "applied" and second.records == 300
    store = open_online_store(main.online)
    try:
        new_ranges = [r for r in store.applied_ranges(spec.name) if r not in fixed]
        assert new_ranges and all(r.start == ends[r.partition] for r in new_ranges)
        assert sum(r.size for r in new_ranges) == 300
        total = Counter(e.entity_id for e in first_batch + second_batch)
        assert {k: store.get(k)["lifetime_event_count"] for k in total} == dict(total)  # type: ignore[index]
    finally:
        store.close()
    offline = OfflineFeatureStore(tmp_path / "main" / "offline").read()
    assert set(offline.column("range_id").to_pylist()) == {first.range_id, second.range_id}
    assert offline_digests(tmp_path / "main" / "offline").items() >= offline_after_first.items()
    assert feature_job_lag(kafka_settings, spec.name, group) == 0


def test_the_rayjob_entrypoint_runs_against_the_cluster_in_ray_address(
    ray_session: None, kafka_settings: KafkaSettings, topic_prefix: str, tmp_path: Path
) -> None:
    """`python -m pipelines.feature_job run` (what the RayJob runs) joins the Ray cluster in RAY_ADDRESS."""
    import os
    import subprocess
    import sys

    import ray

    spec = topic_specs(topic_prefix)["events"]
    ensure_topics(kafka_settings, [spec])
    producer = open_producer(kafka_settings)
    produce_records(producer, spec, events(random.Random(5), 200, 0, text_rate=0.0))
    producer.close()
    settings_file = tmp_path / "feature-job.json"
    settings_file.write_text(
        json.dumps(
            {
                "kafka": {"bootstrap_servers": kafka_settings.bootstrap_servers},
                "topic": spec.name,
                "offline_path": str(tmp_path / "offline"),
                "online": {"backend": "sqlite", "path": str(tmp_path / "online.sqlite")},
                "progress_group": f"{topic_prefix}feature-job",
                "aggregate_task_cpus": 0.25,
            }
        )
    )
    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    command = [sys.executable, "-m", "pipelines.feature_job", "run", "--settings", str(settings_file)]
    done = subprocess.run(
        [*command, "--min-lag", "100"], env=env, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert (summary["status"], summary["records"], summary["entities"]) == ("applied", 200, 25)
    assert summary["ray_address"] == env["RAY_ADDRESS"]  # joined the running cluster, started none
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    summary = json.loads(again.stdout.strip().splitlines()[-1])
    # Nothing new after the ledger's end: a no-op that does not even connect to Ray.
    assert (summary["status"], summary["ray_address"]) == ("empty", None)
