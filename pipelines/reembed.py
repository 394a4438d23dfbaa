"""Re-embedding into a new embedding version, in the background, while serving keeps the old one.

`surge reembed --version v2 --truncate-dim 256 <ingest flags>` (or `run_reembed`) builds version `v2`'s
index (`surge_core.embedding_versions`) by replaying the compacted `documents` topic (`pipelines.reindex`)
through the ingestion handler into a direct sink that embeds with v2's model and writes into v2's index:

1. register v2 in the catalog next to the store (state `building`; an existing v2 with the same model is
   resumed, one with another model refused);
2. replay `documents` from v2's checkpoint, checkpointing the next offset per partition after every batch;
   repeat from the checkpoint until a pass finds nothing new (documents produced meanwhile are caught up);
3. mark v2 complete and activate it: one atomic catalog write. Serving (the Embedder and the Retriever watch
   the catalog) switches to v2's model and index together; until that moment it answers from the old one.
   Live ingestion consumers (`DirectSink`) switch at their next batch; a last replay pass a few seconds
   later copies what they wrote into the old version meanwhile.

A crash anywhere leaves the old version active; running the command again resumes from the checkpoint.
Replayed writes carry the record's (partition, offset) as the document version, so a batch replayed twice
(crash after the write, before the checkpoint) is fenced or unchanged, never doubled.

Runs as a process anywhere the store is reachable: a Kubernetes Job / RayJob on a cluster, a shell here.

Measured here (tests/integration/test_a_reembedding_to_a_new_version_keeps_rag_answering.py, 2 shared cores,
load average about 34 from other work): 243 one-chunk documents into MiniLM truncated to 256 dimensions in
7.0 s, 34.8 chunks/s, while the app answered 14 RAG requests; an idle machine embeds MiniLM at about 128/s
per thread (DESIGN.md), which bounds it.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import dataclass
from typing import Any

from pipelines.ingestion import DocumentHandler, IngestionSettings
from pipelines.reindex import ReplayStats, replay
from pipelines.sinks import DirectSink, DirectSinkSettings
from surge_core.embedding import EmbeddingModelSettings
from surge_core.embedding_versions import (
    EmbeddingVersion,
    VersionStampedStore,
    open_version_catalog,
    version_store_settings,
)
from surge_core.kafka_admin import ensure_topics
from surge_core.topics import DOCUMENTS

logger = logging.getLogger(__name__)

MAX_CATCH_UP_PASSES = 20
# Longer than a live consumer's batch (poll + embed + write) takes: it then writes into the new version.
AFTER_ACTIVATION_GRACE_S = 3.0


@dataclass(frozen=True)
class ReembedStats:
    """What a re-embedding did: `chunks` stored in the version, over `seconds` of replay."""

    version: str
    records: int
    chunks: int
    seconds: float
    passes: int
    activated: bool

    @property
    def chunks_per_s(self) -> float:
        return self.chunks / self.seconds if self.seconds > 0 else 0.0


def run_reembed(
    settings: IngestionSettings, name: str, embedder: EmbeddingModelSettings, *, activate: bool = True
) -> ReembedStats:
    """Build (or resume) embedding version `name` with `embedder` from `documents`; activate it when done."""
    if not isinstance(settings.sink, DirectSinkSettings):
        raise ValueError(
            "sink: re-embedding writes into the index directly; use the direct sink (--index-path)"
        )
    base_store = settings.sink.store
    version_store = version_store_settings(base_store, name)  # a bad name fails here, before any I/O
    spec = DOCUMENTS.with_prefix(settings.topic_prefix)
    ensure_topics(settings.kafka, [spec])
    catalog = open_version_catalog(base_store)
    sink = DirectSink(
        settings.sink.model_copy(
            update={
                "store": version_store,
                "embedder": embedder,
                "follow_embedding_versions": False,
            }
        )
    )
    try:
        sink.store = VersionStampedStore(sink.store, name)
        version = catalog.register(
            EmbeddingVersion(name=name, embedder=embedder, dimensions=sink.embedder.dimensions)
        )

        def replay_from_checkpoint() -> ReplayStats:
            return replay(
                settings.kafka,
                spec.name,
                DocumentHandler(sink),
                batch_size=settings.batch_size,
                retry=settings.retry,
                max_record_bytes=settings.max_record_bytes,
                starts=catalog.read().versions[name].checkpoint,
                after_batch=lambda offsets: catalog.checkpoint(name, offsets),
            )

        records = passes = 0
        started = time.monotonic()
        while version.state == "building" and passes < MAX_CATCH_UP_PASSES:
            passes += 1
            stats = replay_from_checkpoint()
            records += stats.records
            if stats.records == 0:  # caught up with the topic
                catalog.complete(name)
                break
        seconds = time.monotonic() - started
        if activate:
            catalog.activate(name)
            # Live consumers switch to `name` at their next batch (`DirectSink`); what they wrote into the
            # old version meanwhile is replayed here (version-fenced, so replays are harmless).
            time.sleep(AFTER_ACTIVATION_GRACE_S)
            records += replay_from_checkpoint().records
        result = ReembedStats(
            version=name,
            records=records,
            chunks=sink.store.count_chunks(),
            seconds=seconds,
            passes=passes,
            activated=activate,
        )
        logger.info(
            "embedding version %s: %d records in %d passes, %d chunks, %.1f s (%.1f chunks/s), active: %s",
            name,
            result.records,
            passes,
            result.chunks,
            seconds,
            result.chunks_per_s,
            activate,
        )
        return result
    finally:
        sink.close()
        catalog.close()


def _command(args: argparse.Namespace) -> int:
    from pipelines.ingestion import configure_logging, settings_from_args

    configure_logging()
    try:
        settings = settings_from_args(args)
        embedder = EmbeddingModelSettings(
            model=args.model, normalize=not args.no_normalize, truncate_dim=args.truncate_dim
        )
        stats = run_reembed(settings, args.version, embedder, activate=not args.no_activate)
    except ValueError as error:
        # Reported here: under `python -m pipelines.cli` the CLI's own CliError is another class object.
        print(f"surge: error: {error}", file=sys.stderr)
        return 2
    print(
        f"reembedded: version {stats.version}, {stats.records} records replayed, {stats.chunks} chunks "
        f"in {stats.seconds:.1f} s ({stats.chunks_per_s:.1f} chunks/s), active: {stats.activated}"
    )
    return 0


def register_cli(subparsers: Any) -> None:
    """Adds `reembed` to the `surge` CLI (called by `pipelines.cli`)."""
    from pipelines.ingestion import add_ingestion_arguments

    parser = subparsers.add_parser(
        "reembed",
        help="Build a new embedding version's index from the documents topic in the background, then "
        "switch serving to it (same flags as ingest, plus the version's model).",
    )
    add_ingestion_arguments(parser)
    parser.add_argument("--version", required=True, help="Name of the new embedding version (e.g. v2).")
    parser.add_argument("--model", default="all-MiniLM-L6-v2", help="Embedding model of the version.")
    parser.add_argument("--truncate-dim", type=int, help="Keep only the first N dimensions.")
    parser.add_argument("--no-normalize", action="store_true", help="Do not L2-normalise embeddings.")
    parser.add_argument("--no-activate", action="store_true", help="Build it but leave serving where it is.")
    parser.set_defaults(handler=_command)
