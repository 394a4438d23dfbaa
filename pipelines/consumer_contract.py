"""What the consumer loop (`pipelines.consumer.AtLeastOnceConsumer`) is configured with, what it calls,
and what it counts: its settings, the handler protocol a pipeline implements, and `SinkUnavailable`."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from kafka.consumer.fetcher import ConsumerRecord
from pydantic import BaseModel, ConfigDict, Field, model_validator

from surge_core.kafka_settings import KafkaSettings
from surge_core.retry import RetryPolicy

T = TypeVar("T")


class SinkUnavailable(Exception):
    """The sink's backend cannot be reached right now: retry the batch later, do not dead-letter it."""


class ConsumerSettings(BaseModel):
    """What every consumer loop needs; each pipeline's settings model extends it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kafka: KafkaSettings = Field(default_factory=KafkaSettings, description="Broker connection.")
    topic_prefix: str = Field(
        "", pattern=r"^[A-Za-z0-9._-]{0,100}$", description="Prefix of every topic name (isolation)."
    )
    group_id: str = Field(min_length=1, max_length=200, description="Consumer group id.")
    group_instance_id: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9._-]{1,200}$",
        description="Static group membership (KIP-345): a consumer restarted with the same id takes its "
        "partitions back at once instead of after the session timeout; use a stable name (a pod's name).",
    )
    batch_size: int = Field(64, ge=1, le=10_000, description="Most records handled (and committed) at once.")
    poll_timeout_s: float = Field(1.0, gt=0, le=60, description="How long one poll waits for records.")
    idle_poll_interval_s: float = Field(
        0.25,
        ge=0,
        le=10,
        description="Once a poll came back empty, sleep this long between short (20 ms) polls until records "
        "arrive (a broker that answers empty fetches at once, as the local one does, otherwise costs ~40% of "
        "a core per idle consumer; this way ~6%); adds at most this much latency after a quiet spell.",
    )
    max_poll_interval_s: float = Field(
        300, gt=0, description="Longest gap between polls before the group evicts this consumer."
    )
    session_timeout_s: float = Field(
        10, ge=1, le=300, description="Heartbeat silence after which the group rebalances."
    )
    max_record_bytes: int = Field(
        2_000_000, ge=64, description="Key + value bytes beyond which a record is dead-lettered as oversized."
    )
    retry: RetryPolicy = Field(default_factory=RetryPolicy, description="Retries of a failing record.")
    metrics_port: int = Field(0, ge=0, le=65535, description="Port of /metrics (0: not served).")
    metrics_host: str = Field("127.0.0.1", min_length=1, description="Address /metrics binds to.")

    @model_validator(mode="after")
    def _timeouts_are_consistent(self) -> ConsumerSettings:
        if self.retry.total_max_wait_s() * self.batch_size >= self.max_poll_interval_s:
            raise ValueError(
                f"retry waits for a whole failing batch ({self.retry.total_max_wait_s():.1f} s x batch_size "
                f"{self.batch_size}) must stay below max_poll_interval_s ({self.max_poll_interval_s})"
            )
        if self.poll_timeout_s >= self.max_poll_interval_s:
            raise ValueError("poll_timeout_s must be < max_poll_interval_s")
        return self


class BatchHandler(Protocol[T]):
    """What a pipeline plugs into the loop: turn bytes into a record, write a batch of records durably."""

    def decode(self, message: ConsumerRecord) -> T:
        """Parse and validate one message; raise PoisonRecord if it can never be processed."""
        ...

    def process(self, records: Sequence[T], positions: Sequence[tuple[int, int]]) -> None:
        """Write the records, in order, durably and idempotently; `positions[i]` is record i's (partition,
        offset), a version a sink can fence writes with. Raise SinkUnavailable if the backend is down, any
        other exception if these records failed. Runs in a worker thread (the loop keeps polling)."""
        ...


@dataclass
class LoopStats:
    """Counts of one loop's lifetime (also exported as metrics)."""

    processed: int = 0
    dead_lettered: int = 0
    batches: int = 0
    commits: int = 0
    started_at: float = field(default_factory=time.monotonic)
