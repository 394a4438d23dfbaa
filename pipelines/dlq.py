"""Dead-letter topics: where a record goes when it cannot be processed, with headers saying why.

Every consumed topic `<topic>` has `<topic>.dlq`. A dead-lettered message keeps the original key and
value bytes untouched (so it can be inspected and replayed as-is) and adds headers:

    surge-dlq-reason        not_json | schema_invalid | oversized | processing_failed
    surge-dlq-error         the error message (truncated to 1,000 characters)
    surge-dlq-source-topic  topic the record was read from
    surge-dlq-source-partition, surge-dlq-source-offset   where exactly
    surge-dlq-attempts      how many processing attempts ran (0 when it was rejected before processing)
    surge-dlq-consumer-group, surge-dlq-timestamp        who gave up, and when (epoch ms)

The original record's own headers are kept after these.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from pipelines.topics import dead_letter_topic

HEADER_PREFIX = "surge-dlq-"
MAX_ERROR_CHARS = 1000


class PoisonKind(enum.StrEnum):
    """Why a record could not be processed."""

    NOT_JSON = "not_json"
    SCHEMA_INVALID = "schema_invalid"
    OVERSIZED = "oversized"
    PROCESSING_FAILED = "processing_failed"


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

    @property
    def topic(self) -> str:
        return dead_letter_topic(self.source_topic)

    def headers(self) -> list[tuple[str, bytes]]:
        return build_dlq_headers(self) + [
            (k, v) for k, v in self.original_headers if not k.startswith(HEADER_PREFIX)
        ]


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
    return [(HEADER_PREFIX + name, value.encode("utf-8")) for name, value in fields.items()]


def parse_dlq_headers(headers: Sequence[tuple[str, bytes]]) -> dict[str, str]:
    """The `surge-dlq-*` headers of a dead-lettered message as a dict without the prefix."""
    return {
        k[len(HEADER_PREFIX) :]: v.decode("utf-8", "replace")
        for k, v in headers
        if k.startswith(HEADER_PREFIX)
    }
