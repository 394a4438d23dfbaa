"""Kafka ingestion: documents/s from produce to searchable in the index, against the embedding-bound
ceiling measured in the same run, and the consumer lag over time.

Per round: a fresh topic prefix, consumer group and index. The ingestion consumer runs as its own process
(`python -m pipelines.ingestion`, direct sink: chunk, embed, write the embedded index), exactly as
deployed. Once it is up, N documents are produced as fast as the producer goes; a document counts as
searchable when the group's committed offset passes it (the consumer commits only after the index write
is durable). At the end the index is opened and must hold all N documents.
Ceiling: the same documents chunked and embedded by TextEmbedder in this process (one thread), no Kafka,
no index: the most documents/s the embedding model allows on these cores. It embeds exactly as the direct
sink does: one `embed` call per consumer batch (`--batch-size` documents, all their chunks at once, with
the sink's own embedding settings). An earlier ceiling embedded slices of 32 chunks while the consumer
handed over 64 documents per call (sentence-transformers sorts a call's texts by length, so bigger calls
pad less), and ingestion showed as 1.06x "the ceiling".

    python -m benchmarks.kafka_ingestion [--quick] [--documents 2000]
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks import _harness as h
from benchmarks import _surge

NAME = "kafka_ingestion"


def main(argv: list[str] | None = None) -> Path:
    parser = h.common_parser(__doc__ or NAME)
    parser.add_argument("--documents", type=int, default=None)
    parser.add_argument(
        "--bootstrap-servers", default=None, help="an existing Kafka instead of a local broker"
    )
    parser.add_argument("--batch-size", type=int, default=64, help="consumer batch size")
    args = parser.parse_args(argv)
    rounds = args.rounds or (1 if args.quick else 2)
    count = args.documents or (60 if args.quick else 600)
    started = time.time()
    machine = h.machine_info()
    docs = _surge.synthetic_documents(count, args.seed)
    with tempfile.TemporaryDirectory(prefix="surge-bench-kafka-") as tmp:
        broker = None
        servers = args.bootstrap_servers
        if servers is None:
            from pipelines.broker import LocalBroker

            broker = LocalBroker(data_dir=Path(tmp) / "broker", port=h.free_port())
            broker.start()
            servers = broker.bootstrap_servers
        try:
            ceilings, runs = [], []
            for r in h.progress(range(rounds), "kafka ingestion"):
                ceilings.append(embedding_ceiling(docs, args.batch_size))
                runs.append(ingest_round(servers, docs, Path(tmp) / f"round{r}", args.batch_size))
        finally:
            if broker is not None:
                broker.stop()
    return report(args, count, ceilings, runs, started, machine)


def embedding_ceiling(docs: list[dict[str, Any]], batch_size: int) -> dict[str, float]:
    """Chunk and embed `docs` as the direct sink does, one call per `batch_size` documents."""
    from pipelines.ingestion import DirectSinkSettings
    from surge_core.chunking import chunk_text
    from surge_core.embedding import TextEmbedder

    sink = DirectSinkSettings()
    embedder = TextEmbedder(sink.embedder)
    embedder.embed(["warm up"])
    t0 = time.perf_counter()
    chunks = 0
    for start in range(0, len(docs), batch_size):
        texts = [
            c
            for d in docs[start : start + batch_size]
            for c in chunk_text(d["text"], sink.chunk_chars, sink.chunk_overlap_chars)
        ]
        embedder.embed(texts)
        chunks += len(texts)
    seconds = time.perf_counter() - t0
    return {"docs_per_s": len(docs) / seconds, "chunks": chunks, "seconds": seconds}


def ingest_round(servers: str, docs: list[dict[str, Any]], workdir: Path, batch_size: int) -> dict[str, Any]:
    from pipelines.producer import open_producer, produce_records
    from surge_core.kafka_settings import KafkaSettings
    from surge_core.records import DocumentUpsert
    from surge_core.topics import DOCUMENTS

    prefix = f"bench{uuid.uuid4().hex[:8]}."
    group = f"{prefix}ingestion"
    topic = DOCUMENTS.with_prefix(prefix)
    kafka = KafkaSettings(bootstrap_servers=servers)
    workdir.mkdir(parents=True, exist_ok=True)
    log = (workdir / "consumer.log").open("w")
    consumer = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipelines.ingestion",
            "--bootstrap-servers",
            servers,
            "--topic-prefix",
            prefix,
            "--group-id",
            group,
            "--index-path",
            str(workdir / "index"),
            "--batch-size",
            str(batch_size),
            "--session-timeout-s",
            "6",
        ],
        cwd=h.REPO_ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        t_start = time.perf_counter()
        wait_for_log(workdir / "consumer.log", "sink direct ready", 300, consumer)
        consumer_ready_s = time.perf_counter() - t_start
        time.sleep(3)  # let it join its group and get partitions before the clock starts
        records = [DocumentUpsert(doc_id=d["id"], text=d["text"], metadata=d["metadata"]) for d in docs]
        producer = open_producer(kafka)
        t0 = time.perf_counter()
        produced = produce_records(producer, topic, records, total=len(records))
        produce_s = time.perf_counter() - t0
        producer.close()
        lag_series: list[tuple[float, int]] = []
        deadline = time.monotonic() + 1800
        while time.monotonic() < deadline:
            lag = group_lag(kafka, group, topic.name)
            lag_series.append((time.perf_counter() - t0, lag))
            if lag == 0:
                break
            if consumer.poll() is not None:
                raise RuntimeError(
                    f"ingestion consumer exited {consumer.returncode}; see {workdir}/consumer.log"
                )
            time.sleep(0.5)
        searchable_s = time.perf_counter() - t0
    finally:
        consumer.terminate()
        consumer.wait(60)
        log.close()
    indexed = count_documents(workdir / "index")
    return {
        "produce_s": produce_s,
        "produce_per_s": produced.per_second,
        "searchable_s": searchable_s,
        "docs_per_s": len(docs) / searchable_s,
        "lag": lag_series,
        "indexed_documents": indexed,
        "consumer_ready_s": consumer_ready_s,
    }


def wait_for_log(path: Path, needle: str, timeout_s: float, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if needle in path.read_text(errors="replace"):
            return
        if process.poll() is not None:
            raise RuntimeError(f"consumer exited {process.returncode}: {path.read_text()[-2000:]}")
        time.sleep(0.2)
    raise TimeoutError(f"consumer did not log {needle!r} within {timeout_s} s")


def group_lag(kafka: Any, group: str, topic: str) -> int:
    """Records of `topic` not yet committed by `group` (end offset - committed, summed over partitions)."""
    from kafka import KafkaConsumer, TopicPartition

    # A member of the group that never subscribes: it only reads the group's committed offsets.
    consumer = KafkaConsumer(**kafka.kafka_python_config(), group_id=group, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        ends = consumer.end_offsets(partitions)
        return sum(max(0, ends[tp] - (consumer.committed(tp) or 0)) for tp in partitions)
    finally:
        consumer.close(autocommit=False)


def count_documents(index: Path) -> int:
    from surge_core.store_settings import EmbeddedStoreSettings
    from surge_core.vector_store import open_vector_store

    with open_vector_store(EmbeddedStoreSettings(path=index), 384) as store:
        return store.count_documents()


def report(
    args: Any,
    count: int,
    ceilings: list[dict[str, float]],
    runs: list[dict[str, Any]],
    started: float,
    machine: dict[str, Any],
) -> Path:
    rates = [r["docs_per_s"] for r in runs]
    ceiling = [c["docs_per_s"] for c in ceilings]
    figures: dict[str, Any] = {
        "ingest_docs_per_s": h.across_rounds(rates, 2),
        "embedding_ceiling_docs_per_s": h.across_rounds(ceiling, 2),
        "ratio_to_ceiling": h.across_rounds([r / c for r, c in zip(rates, ceiling, strict=True)]),
        "produce_docs_per_s": h.across_rounds([r["produce_per_s"] for r in runs], 0),
        "searchable_after_s": h.across_rounds([r["searchable_s"] for r in runs], 2),
        "consumer_ready_s": h.across_rounds([r["consumer_ready_s"] for r in runs], 2),
        "indexed_documents": [r["indexed_documents"] for r in runs],
        "chunks": ceilings[0]["chunks"],
        "lag_series": [r["lag"] for r in runs],
    }
    if any(n != count for n in figures["indexed_documents"]):
        raise RuntimeError(f"index holds {figures['indexed_documents']} documents, expected {count}")
    rows = [
        [
            "Kafka -> consumer -> index (docs/s)",
            figures["ingest_docs_per_s"]["median"],
            f"{min(rates):.1f}-{max(rates):.1f}",
            figures["ratio_to_ceiling"]["median"],
        ],
        [
            f"embedding ceiling, in-process, {args.batch_size} docs per call (docs/s)",
            figures["embedding_ceiling_docs_per_s"]["median"],
            f"{min(ceiling):.1f}-{max(ceiling):.1f}",
            1.0,
        ],
        ["produce only (docs/s)", figures["produce_docs_per_s"]["median"], None, None],
    ]
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    lag = runs[-1]["lag"]
    plots = [
        h.plot_timeseries(
            out / f"{NAME}_lag.png",
            {"consumer lag (records)": ([t for t, _ in lag], [n for _, n in lag])},
            "records not yet searchable",
            f"Consumer lag, {count} documents",
            step=False,
        )
    ]
    results = h.Results(
        headline=h.Headline(
            metric="documents/s produce-to-searchable / in-process embedding ceiling (median of rounds)",
            value=figures["ratio_to_ceiling"].get("median"),
            goal=0.9,
            better="higher",
            baseline=f"the same chunks embedded in-process, {args.batch_size} documents per call as the sink",
        ),
        name=NAME,
        description="Documents/s from produce to searchable (committed after a durable index write) vs the "
        "in-process embedding ceiling, interleaved rounds.",
        parameters={
            "documents": count,
            "rounds": rounds_of(runs),
            "consumer_batch_size": args.batch_size,
            "broker": "noida-db (local)" if args.bootstrap_servers is None else args.bootstrap_servers,
            "sink": "direct (TextEmbedder + embedded index)",
            "partitions": 4,
        },
        figures=figures,
        table_headers=["path", "docs/s (median)", "range", "x ceiling"],
        table_rows=rows,
        notes=[
            f"All {count} documents were found in the index after each round.",
            "The consumer process and the ceiling both embed with one torch thread.",
        ],
        plots=plots,
    )
    return h.write_results(results, out, started, machine)


def rounds_of(runs: list[Any]) -> int:
    return len(runs)


if __name__ == "__main__":
    main()
