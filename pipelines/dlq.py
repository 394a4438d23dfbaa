"""Dead-letter topics: where a record goes when it cannot be processed, with headers saying why.

Every consumed topic `<topic>` has `<topic>.dlq`. A dead-lettered message keeps the original key and
value bytes untouched (so it can be inspected and replayed as-is) and adds headers:

    surge-dlq-reason        not_json | schema_invalid | oversized | processing_failed | undecodable
    surge-dlq-error         the error message (truncated to 1,000 characters)
    surge-dlq-source-topic  topic the record was read from
    surge-dlq-source-partition, surge-dlq-source-offset   where exactly
    surge-dlq-attempts      how many processing attempts ran (0 when it was rejected before processing)
    surge-dlq-consumer-group, surge-dlq-timestamp        who gave up, and when (epoch ms)

The original record's own headers are kept after these.

A record the DLQ topic refuses as too large (MESSAGE_TOO_LARGE, RECORD_LIST_TOO_LARGE: retrying cannot
help) is sent again *truncated*: its value cut to `TRUNCATED_VALUE_BYTES`, plus the headers

    surge-dlq-truncated           "true"
    surge-dlq-original-size       the original value's length in bytes
    surge-dlq-original-sha256     hex digest of the original value

so the letter still says why and where from, and the full record can be fetched from the source
topic/partition/offset while retention keeps it. If even that is refused, the value is dropped
(a pure reference). Replaying a truncated letter needs the original from the source topic.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from kafka.errors import KafkaError, MessageSizeTooLargeError, RecordListTooLargeError

from surge_core.topics import dead_letter_topic

logger = logging.getLogger(__name__)

# The broker (or the client's own max_request_size check) refuses the record for its size: retrying the
# same bytes can never succeed, so these fail fast into a truncated letter instead.
TOO_LARGE_ERRORS: tuple[type[KafkaError], ...] = (MessageSizeTooLargeError, RecordListTooLargeError)

HEADER_PREFIX = "surge-dlq-"
MAX_ERROR_CHARS = 1000
# What a too-large letter keeps of its value: enough to recognise the record, far below any broker limit.
TRUNCATED_VALUE_BYTES = 16_384
MAX_KEY_BYTES = 1024


class PoisonKind(enum.StrEnum):
    """Why a record could not be processed."""

    NOT_JSON = "not_json"
    SCHEMA_INVALID = "schema_invalid"
    OVERSIZED = "oversized"
    PROCESSING_FAILED = "processing_failed"
    # The decoder itself failed in a way it did not classify (a bug): dead-lettered, never fatal.
    UNDECODABLE = "undecodable"


class PoisonRecord(Exception):
    """A record that can never be processed as it is; raised by decoding, carried to the DLQ."""

    def __init__(self, kind: PoisonKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class DeadLetter:
    """One message on its way to a dead-letter topic."""

    source_topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    kind: PoisonKind
    error: str
    attempts: int
    group_id: str
    original_headers: Sequence[tuple[str, bytes]] = field(default_factory=tuple)
    timestamp_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    # Set by `truncated()`: the original value's size and sha256 (the value itself was cut).
    original_size: int | None = None
    original_sha256: str | None = None

    @property
    def topic(self) -> str:
        return dead_letter_topic(self.source_topic)

    def headers(self) -> list[tuple[str, bytes]]:
        return build_dlq_headers(self) + [
            (k, v) for k, v in self.original_headers if not k.startswith(HEADER_PREFIX)
        ]

    def truncated(self, keep_bytes: int = TRUNCATED_VALUE_BYTES) -> DeadLetter:
        """This letter with its value cut to `keep_bytes` (0: dropped) and the original's size and
        sha256 recorded; the original's own headers are dropped too (they may be what was too large)."""
        if self.original_size is not None:  # already cut: cut further, keep the original's digest
            value = self.value[:keep_bytes] if self.value is not None else None
            return replace(self, value=value or None, original_headers=())
        value = self.value or b""
        return replace(
            self,
            value=value[:keep_bytes] or None,
            key=self.key[:MAX_KEY_BYTES] if self.key is not None else None,
            original_headers=(),
            original_size=len(value),
            original_sha256=hashlib.sha256(value).hexdigest(),
        )


def build_dlq_headers(letter: DeadLetter) -> list[tuple[str, bytes]]:
    """The `surge-dlq-*` headers for a dead letter (values are UTF-8 bytes, numbers in decimal)."""
    error = letter.error
    if len(error) > MAX_ERROR_CHARS:
        error = error[: MAX_ERROR_CHARS - 3] + "..."
    fields = {
        "reason": letter.kind.value,
        "error": error,
        "source-topic": letter.source_topic,
        "source-partition": str(letter.partition),
        "source-offset": str(letter.offset),
        "attempts": str(letter.attempts),
        "consumer-group": letter.group_id,
        "timestamp": str(letter.timestamp_ms),
    }
    if letter.original_size is not None:
        fields["truncated"] = "true"
        fields["original-size"] = str(letter.original_size)
        fields["original-sha256"] = letter.original_sha256 or ""
    return [(HEADER_PREFIX + name, value.encode("utf-8")) for name, value in fields.items()]


def parse_dlq_headers(headers: Sequence[tuple[str, bytes]]) -> dict[str, str]:
    """The `surge-dlq-*` headers of a dead-lettered message as a dict without the prefix."""
    return {
        k[len(HEADER_PREFIX) :]: v.decode("utf-8", "replace")
        for k, v in headers
        if k.startswith(HEADER_PREFIX)
    }


def send_dead_letters(
    producer: Callable[[], Any],
    letters: Sequence[DeadLetter],
    reset: Callable[[], None],
    timeout_s: float = 30,
) -> list[DeadLetter]:
    """Send letters and wait for the broker's acks; returns those still to send (a retriable failure).

    `producer()` gives the producer to use. A letter refused for its size is re-sent at once truncated
    (`DeadLetter.truncated`), then, if still refused, with no value at all: a record near the size limit
    can never stop its partition. An idempotent producer treats that refusal as fatal and fails every
    later send, so `reset()` (close it; `producer()` then makes a new one) runs after each refusal. Any
    other failure leaves the letter in the returned list for the caller to retry after a backoff.
    """
    retry: list[DeadLetter] = []
    pending = list(letters)
    for keep in (None, TRUNCATED_VALUE_BYTES, 0):
        if not pending:
            break
        if keep is not None:
            reset()
            logger.error(
                "%d dead letter(s) refused as too large; sending them cut to %d bytes", len(pending), keep
            )
            pending = [letter.truncated(keep) for letter in pending]
        too_large, failed = _send_once(producer(), pending, timeout_s)
        retry.extend(failed)
        pending = too_large
    if pending:
        reset()
    return retry + pending


def _send_once(
    producer: Any, letters: Sequence[DeadLetter], timeout_s: float
) -> tuple[list[DeadLetter], list[DeadLetter]]:
    """One send of each letter: (refused as too large, failed otherwise)."""
    sent: list[tuple[DeadLetter, Any]] = []
    too_large: list[DeadLetter] = []
    failed: list[DeadLetter] = []
    for letter in letters:
        try:
            sent.append(
                (
                    letter,
                    producer.send(letter.topic, key=letter.key, value=letter.value, headers=letter.headers()),
                )
            )
        except TOO_LARGE_ERRORS:  # the client's own max_request_size check
            too_large.append(letter)
        except KafkaError as error:
            logger.warning("could not send a dead letter to %s: %s", letter.topic, error)
            failed.append(letter)
    if sent:
        producer.flush(timeout=timeout_s)
    for letter, future in sent:
        try:
            future.get(timeout=timeout_s)
        except TOO_LARGE_ERRORS:
            too_large.append(letter)
            continue
        except KafkaError as error:
            logger.warning("dead letter to %s not acknowledged: %s", letter.topic, error)
            failed.append(letter)
            continue
        logger.warning(
            "dead-lettered %s[%d]@%d to %s: %s (%s)%s",
            letter.source_topic,
            letter.partition,
            letter.offset,
            letter.topic,
            letter.kind.value,
            letter.error[:200],
            "" if letter.original_size is None else f", cut from {letter.original_size} bytes",
        )
    return too_large, failed
