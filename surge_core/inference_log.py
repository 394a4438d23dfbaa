"""The gateway's inference-log publisher: one record per request to Kafka, never in the request's way.

`publish()` only appends to a bounded in-memory queue (a lock and a deque: microseconds) and never
raises. A background thread drains the queue into a Kafka producer (acks=all, idempotent, keyed by model
so one model's records stay ordered). When the broker is down or slow:

- `publish()` keeps returning at once; records wait in the queue, and beyond `max_queue_records` the
  oldest are dropped and counted (`stats().dropped`): a request never waits for the log;
- one warning is logged per `warn_interval_s` (not one per record), naming how many were dropped;
- the thread retries with capped backoff, reopening its producer; when the broker is back, the queued
  records are delivered (oldest first) and an info line says delivery resumed.

Records that the broker may have taken before a failure surfaced can be sent again: delivery is
at-least-once, and consumers deduplicate on `request_id` if they need to.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from kafka import KafkaProducer
from pydantic import Field

from surge_core.kafka_admin import ensure_topics
from surge_core.kafka_settings import KafkaSettings
from surge_core.records import InferenceLogRecord, UsageRecord
from surge_core.retry import RetryPolicy
from surge_core.store_settings import StrictModel
from surge_core.topics import INFERENCE_LOG, TopicSpec

logger = logging.getLogger("surge.inference_log")

SEND_BATCH = 500
# Waits between reconnection attempts while the broker is down: 0.5 s doubling to 5 s.
# Kafka record headers sent with a record (the request's trace context, `surge_core.tracing`).
Headers = Sequence[tuple[str, bytes]]
# What a publisher sends: the inference log's records, and the same publisher class serves `usage`.
PublishedRecord = InferenceLogRecord | UsageRecord
# A queued record: the record, its serialised value and its headers.
Queued = tuple[PublishedRecord, bytes, list[tuple[str, bytes]]]
RECONNECT = RetryPolicy(max_attempts=100, base_delay_s=0.5, multiplier=2.0, max_delay_s=5.0, jitter=0.2)


class InferenceLogSettings(StrictModel):
    """The gateway's `inference-log` publisher (one record per request, fire-and-forget)."""

    enabled: bool = Field(False, description="Publish one record per request to the inference-log topic.")
    include_prompt: bool = Field(False, description="Include the raw prompt text (off: privacy by default).")
    redact_prompt: bool = Field(
        True,
        description="With include_prompt: replace emails, phone numbers and keys in the prompt by "
        "[email], [phone], [key] (surge_core.redaction).",
    )
    include_answer: bool = Field(
        True,
        description="Include the answer text and the retrieved passages' text (redacted like prompts unless "
        "redact_prompt is off, cut to the record's bounds): the drift monitor's refusal and groundedness "
        "signals need them.",
    )
    kafka: KafkaSettings = Field(default_factory=KafkaSettings, description="Broker connection.")
    topic_prefix: str = Field(
        "", pattern=r"^[A-Za-z0-9._-]{0,100}$", description="Prefix of the inference-log topic name."
    )
    max_queue_records: int = Field(
        10_000, ge=1, le=1_000_000, description="Records buffered while the broker is down; oldest dropped."
    )
    max_queue_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1024,
        le=4 * 1024**3,
        description="Bytes (serialised records) buffered while the broker is down; oldest dropped beyond.",
    )


class InferenceLogPublisher(Protocol):
    """What the gateway calls. Both methods are safe from any thread and never raise."""

    def publish(self, record: PublishedRecord, headers: Headers = ()) -> None: ...

    def close(self, timeout_s: float = 5.0) -> None: ...


@dataclass(frozen=True)
class PublisherStats:
    published: int
    delivered: int
    dropped: int
    queued: int
    send_failures: int


class NoopInferenceLogPublisher:
    """Used when the inference log is disabled."""

    def publish(self, record: PublishedRecord, headers: Headers = ()) -> None:
        return None

    def close(self, timeout_s: float = 5.0) -> None:
        return None

    def stats(self) -> PublisherStats:
        return PublisherStats(0, 0, 0, 0, 0)


class KafkaInferenceLogPublisher:
    """Bounded queue + one background sender thread (see the module docstring)."""

    def __init__(
        self,
        settings: InferenceLogSettings,
        *,
        warn_interval_s: float = 30.0,
        delivery_timeout_s: float = 10.0,
        topic: TopicSpec = INFERENCE_LOG,
    ) -> None:
        self.settings = settings
        self.topic = topic.with_prefix(settings.topic_prefix)
        self.warn_interval_s = warn_interval_s
        self.delivery_timeout_s = delivery_timeout_s
        # (record, its serialised bytes): the queue is bounded in records and in bytes.
        self._queue: deque[Queued] = deque()
        self._queued_bytes = 0
        self._lock = threading.Condition()
        self._closing = False
        self._close_deadline = float("inf")
        self._published = self._delivered = self._dropped = self._send_failures = 0
        self._last_warning = float("-inf")
        self._failing_since: float | None = None
        self._producer: KafkaProducer | None = None
        # kafka-python logs every failed reconnect at WARNING/ERROR: an outage would flood the gateway's
        # log. Our own rate-limited warning replaces that, unless the application set the level itself.
        kafka_logger = logging.getLogger("kafka")
        if kafka_logger.level == logging.NOTSET:
            kafka_logger.setLevel(logging.CRITICAL)
        self._thread = threading.Thread(target=self._run, name="surge-inference-log", daemon=True)
        self._thread.start()

    # -- request path ----------------------------------------------------------------------------------

    def publish(self, record: PublishedRecord, headers: Headers = ()) -> None:
        """`headers`: Kafka record headers (the request's `traceparent`), sent with the record."""
        try:
            with self._lock:
                if self._closing:
                    return
                value = record.model_dump_json().encode("utf-8")
                self._queue.append((record, value, list(headers)))
                self._queued_bytes += len(value)
                self._published += 1
                self._trim()
                self._lock.notify()
        except Exception:  # never let logging break a request
            logger.debug("inference-log publish failed", exc_info=True)

    def _trim(self) -> None:
        """Drop the oldest records while the queue holds more than `max_queue_records` records or
        `max_queue_bytes` bytes (call under the lock)."""
        while self._queue and (
            len(self._queue) > self.settings.max_queue_records
            or self._queued_bytes > self.settings.max_queue_bytes
        ):
            _, value, _ = self._queue.popleft()
            self._queued_bytes -= len(value)
            self._dropped += 1

    def _take(self, count: int) -> list[Queued]:
        batch = [self._queue.popleft() for _ in range(min(count, len(self._queue)))]
        self._queued_bytes -= sum(len(value) for _, value, _ in batch)
        return batch

    def stats(self) -> PublisherStats:
        with self._lock:
            return PublisherStats(
                self._published, self._delivered, self._dropped, len(self._queue), self._send_failures
            )

    def close(self, timeout_s: float = 5.0) -> None:
        """Deliver what is queued within `timeout_s`, then stop the thread and the producer."""
        try:
            with self._lock:
                self._closing = True
                self._close_deadline = time.monotonic() + timeout_s
                self._lock.notify()
            self._thread.join(timeout_s + 2)
        except Exception:
            logger.debug("inference-log close failed", exc_info=True)

    # -- sender thread ---------------------------------------------------------------------------------

    def _run(self) -> None:
        attempt = 0
        while True:
            with self._lock:
                while not self._queue and not self._closing:
                    self._lock.wait(1.0)
                if self._closing and (not self._queue or time.monotonic() > self._close_deadline):
                    break
                batch = self._take(SEND_BATCH)
            try:
                self._send(batch)
                attempt = 0
                self._recovered()
            except Exception as error:
                attempt += 1
                self._requeue(batch)
                self._failed(error)
                self._reset_producer()
                with self._lock:
                    if self._closing and time.monotonic() > self._close_deadline:
                        break
                    self._lock.wait(RECONNECT.delay_s(min(attempt, 50)))
        self._reset_producer()

    def _open_producer(self) -> KafkaProducer:
        if self._producer is None:
            timeout_ms = int(self.delivery_timeout_s * 1000)
            ensure_topics(self.settings.kafka, [self.topic], timeout_s=min(self.delivery_timeout_s, 5))
            self._producer = KafkaProducer(
                **self.settings.kafka.kafka_python_config(),
                acks="all",
                enable_idempotence=True,
                linger_ms=50,
                bootstrap_timeout_ms=min(timeout_ms, 5000),
                max_block_ms=min(timeout_ms, 5000),
                # Kafka requires delivery_timeout_ms > linger_ms + request_timeout_ms.
                request_timeout_ms=min(timeout_ms // 2, 5000),
                delivery_timeout_ms=timeout_ms,
                reconnect_backoff_max_ms=2000,
            )
        return self._producer

    def _send(self, batch: list[Queued]) -> None:
        producer = self._open_producer()
        futures: list[Any] = [
            producer.send(
                self.topic.name,
                key=str(getattr(record, self.topic.key_field)).encode("utf-8"),
                value=value,
                headers=headers,
            )
            for record, value, headers in batch
        ]
        producer.flush(timeout=self.delivery_timeout_s + 5)
        delivered = [f for f in futures if f.is_done and f.succeeded()]
        with self._lock:
            self._delivered += len(delivered)
        if len(delivered) < len(futures):
            # Requeue only what failed: keep the delivered records out of the batch handed back.
            failed = [r for r, f in zip(batch, futures, strict=True) if not (f.is_done and f.succeeded())]
            batch[:] = failed
            error = next((f.exception for f in futures if f.is_done and f.failed()), None)
            raise RuntimeError(f"{len(failed)} of {len(futures)} records not acknowledged: {error}")

    def _requeue(self, batch: list[Queued]) -> None:
        with self._lock:
            self._queue.extendleft(reversed(batch))
            self._queued_bytes += sum(len(value) for _, value, _ in batch)
            self._send_failures += 1
            self._trim()

    def _reset_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.close(timeout=1)
            except Exception:
                logger.debug("closing the inference-log producer failed", exc_info=True)

    def _failed(self, error: BaseException) -> None:
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        if now - self._last_warning >= self.warn_interval_s:
            self._last_warning = now
            stats = self.stats()
            logger.warning(
                "inference-log: cannot deliver to %s at %s (%s); %d queued, %d dropped so far; "
                "requests are not affected",
                self.topic.name,
                self.settings.kafka.bootstrap_servers,
                str(error)[:200],
                stats.queued,
                stats.dropped,
            )

    def _recovered(self) -> None:
        if self._failing_since is not None:
            logger.info(
                "inference-log: delivery resumed after %.1f s (%d dropped so far)",
                time.monotonic() - self._failing_since,
                self.stats().dropped,
            )
            self._failing_since = None
            self._last_warning = float("-inf")


def build_inference_log_publisher(
    settings: InferenceLogSettings, **options: Any
) -> KafkaInferenceLogPublisher | NoopInferenceLogPublisher:
    """The publisher the gateway holds: a no-op when disabled. `topic=USAGE` publishes usage records."""
    if not settings.enabled:
        return NoopInferenceLogPublisher()
    return KafkaInferenceLogPublisher(settings, **options)
