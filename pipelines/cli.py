"""`surge`: the command line of the event pipelines.

    surge produce documents PATH     a folder of .txt/.md files (one document each) or a .jsonl of records
    surge produce events FILE.jsonl  EventRecord lines
    surge topics list | create       topics and their dead-letter topics (created idempotently)
    surge ingest                     run the ingestion consumer (documents -> index)
    surge broker start | stop        a local Kafka-protocol broker (noida-db) for a laptop
    surge cost --since 24h           cost per model, version and tenant (usage topic or --prometheus URL)

Every command takes `--bootstrap-servers` (default: $SURGE_BOOTSTRAP_SERVERS, else 127.0.0.1:9092) and
`--topic-prefix`. Bad input and an unreachable broker end with exit code 2 and a one-line message.
Other pipeline modules add their commands through `register_cli(subparsers)` (see `PLUGIN_MODULES`):
each sub-parser sets `handler=callable(args) -> int`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from pipelines.broker import BrokerError, LocalBroker
from pipelines.producer import SENDERS, InputError, ProduceFailed, open_sender, produce_records, read_records
from surge_core import tracing
from surge_core.kafka_admin import BrokerUnreachable, describe_topics, ensure_topics
from surge_core.kafka_settings import KafkaSettings
from surge_core.model_assets import cache_dir
from surge_core.topics import topic_specs

# Sub-commands other modules add through `register_cli(subparsers)`, by command name. A module is imported
# only when its command (or the full help) is asked for: they pull in Ray / scipy, which would make every
# `surge produce` start slowly. Absent modules are skipped (an optional part not installed).
PLUGIN_MODULES = {
    "feature-job": "pipelines.feature_job",
    "drift-monitor": "pipelines.drift",
    "rayservice": "pipelines.cluster",
    "compare": "pipelines.model_compare",
    "reembed": "pipelines.reembed",
    "cost": "pipelines.cost_report",
}
DEFAULT_BROKER_DIR = cache_dir() / "broker"  # $SURGE_CACHE_DIR/broker
PROGRESS_THRESHOLD = 1000


class CliError(Exception):
    """A user-facing failure: printed as one line, exit code 2."""


def _kafka(args: argparse.Namespace) -> KafkaSettings:
    servers = args.bootstrap_servers or os.environ.get("SURGE_BOOTSTRAP_SERVERS") or "127.0.0.1:9092"
    return KafkaSettings(bootstrap_servers=servers)


def _produce(args: argparse.Namespace) -> int:
    spec = topic_specs(args.topic_prefix)[args.topic]
    records = read_records(spec, Path(args.path))
    kafka = _kafka(args)
    ensure_topics(kafka, [spec], timeout_s=args.connect_timeout)
    sender = open_sender(kafka, args.client, timeout_s=args.connect_timeout)
    tracing.configure_tracing("surge-producer")  # on only when OTEL_* asks: each record then starts a trace
    try:
        show = not args.no_progress and len(records) >= PROGRESS_THRESHOLD and sys.stderr.isatty()
        result = produce_records(sender, spec, records, total=len(records), progress=show)
    finally:
        sender.close()
        tracing.shutdown_tracing()  # flushes the producer spans
    print(
        f"produced {result.records} records to {spec.name} in {result.seconds:.2f} s "
        f"({result.per_second:,.0f}/s)"
    )
    return 0


def _topics_list(args: argparse.Namespace) -> int:
    for name, info in describe_topics(_kafka(args), timeout_s=args.connect_timeout).items():
        print(f"{name}\t{info['partitions']}")
    return 0


def _topics_create(args: argparse.Namespace) -> int:
    created = ensure_topics(_kafka(args), prefix=args.topic_prefix, timeout_s=args.connect_timeout)
    print("created: " + (", ".join(created) if created else "nothing (all topics exist)"))
    return 0


def _ingest(args: argparse.Namespace) -> int:
    from pipelines.ingestion import configure_logging, run_ingestion, settings_from_args

    configure_logging()
    try:
        settings = settings_from_args(args)
    except ValueError as error:
        raise CliError(str(error)) from error
    return run_ingestion(settings)


def _reindex(args: argparse.Namespace) -> int:
    from pipelines.ingestion import configure_logging, run_reindex, settings_from_args

    configure_logging()
    try:
        settings = settings_from_args(args)
    except ValueError as error:
        raise CliError(str(error)) from error
    stats = run_reindex(settings)
    print(
        f"reindexed: {stats.records} records replayed, {stats.written} written, "
        f"{stats.skipped_poison} poison and {stats.skipped_failed} failed skipped, in {stats.seconds:.1f} s"
    )
    return 0


def _broker(args: argparse.Namespace) -> int:
    data_dir = Path(args.data_dir).expanduser()
    if args.broker_command == "start":
        broker = LocalBroker(data_dir=data_dir, port=args.port, host=args.host)
        pid = broker.start(detach=True)
        print(f"broker running: pid {pid}, bootstrap servers {broker.bootstrap_servers}, data {data_dir}")
        return 0
    running = LocalBroker.from_pid_file(data_dir)
    if running is None or not running.stop():
        print(f"no broker running for {data_dir}")
        return 0
    print(f"broker stopped ({data_dir})")
    return 0


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser; with `argv`, plugin modules whose command is not in it are not imported."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--bootstrap-servers", help="Kafka bootstrap servers, host:port[,host:port].")
    common.add_argument("--topic-prefix", default="", help="Prefix of every topic name.")
    common.add_argument(
        "--connect-timeout", type=float, default=10.0, help="Seconds to wait for the broker to answer."
    )

    parser = argparse.ArgumentParser(prog="surge", description="surge event pipelines.")
    commands = parser.add_subparsers(dest="command", required=True)

    produce = commands.add_parser("produce", help="Produce records from files.")
    produce_to = produce.add_subparsers(dest="topic", required=True)
    for topic, what in (("documents", "a folder of .txt/.md files or a .jsonl"), ("events", "a .jsonl")):
        sub = produce_to.add_parser(topic, parents=[common], help=f"Produce {topic} from {what}.")
        sub.add_argument("path", help=what)
        sub.add_argument("--no-progress", action="store_true", help="No progress bar.")
        sub.add_argument(
            "--client",
            choices=sorted(SENDERS),
            default="confluent",
            help="Producer client (confluent: fastest for bulk loads; both are acks=all + idempotent).",
        )
        sub.set_defaults(handler=_produce)

    topics = commands.add_parser("topics", help="List or create topics.")
    topic_commands = topics.add_subparsers(dest="topics_command", required=True)
    topic_commands.add_parser("list", parents=[common], help="List topics.").set_defaults(
        handler=_topics_list
    )
    topic_commands.add_parser(
        "create", parents=[common], help="Create all topics and dead-letter topics (idempotent)."
    ).set_defaults(handler=_topics_create)

    from pipelines.ingestion import add_ingestion_arguments

    ingest = commands.add_parser("ingest", help="Run the ingestion consumer (documents -> index).")
    add_ingestion_arguments(ingest)
    ingest.set_defaults(handler=_ingest)

    reindex = commands.add_parser(
        "reindex",
        help="Rebuild the index by replaying the compacted documents topic from the beginning "
        "(the recovery path when an index is lost; same flags as ingest).",
    )
    add_ingestion_arguments(reindex)
    reindex.set_defaults(handler=_reindex)

    broker = commands.add_parser("broker", help="A local Kafka-protocol broker (noida-db) for a laptop.")
    broker_commands = broker.add_subparsers(dest="broker_command", required=True)
    for name in ("start", "stop"):
        sub = broker_commands.add_parser(name, help=f"{name.capitalize()} the local broker.")
        sub.add_argument("--data-dir", default=str(DEFAULT_BROKER_DIR), help="Where the broker keeps data.")
        sub.add_argument("--port", type=int, default=9092, help="Kafka port (start).")
        sub.add_argument("--host", default="127.0.0.1", help="Address to bind (start).")
        sub.set_defaults(handler=_broker)

    words = set(argv) if argv is not None else None
    full_help = words is None or not words or bool(words & {"-h", "--help"})
    for command, module_name in PLUGIN_MODULES.items():
        if not full_help and command not in (words or set()):
            continue
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        register = getattr(module, "register_cli", None)
        if register is not None:
            register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(arguments).parse_args(arguments)
    try:
        return int(args.handler(args))
    except (CliError, InputError, BrokerUnreachable, BrokerError, ProduceFailed) as error:
        print(f"surge: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
