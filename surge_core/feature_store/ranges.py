"""Offset ranges of a topic: what one feature-job run reads, and what the ledger records."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

# ---------------------------------------------------------------------------------------------- ranges


@dataclass(frozen=True, order=True)
class PartitionRange:
    """Offsets [start, end) of one partition (end exclusive, like Kafka's end offsets)."""

    partition: int
    start: int
    end: int

    def __post_init__(self) -> None:
        if self.partition < 0 or self.start < 0 or self.end < self.start:
            raise ValueError(f"invalid partition range {self.partition}:{self.start}-{self.end}")

    @property
    def size(self) -> int:
        return self.end - self.start

    def overlaps(self, other: PartitionRange) -> bool:
        return (
            self.partition == other.partition
            and self.size > 0
            and other.size > 0
            and self.start < other.end
            and other.start < self.end
        )

    @classmethod
    def parse(cls, text: str) -> PartitionRange:
        """`"2:100-250"` -> partition 2, offsets 100 (inclusive) to 250 (exclusive)."""
        try:
            partition, offsets = text.split(":")
            start, end = offsets.split("-")
            return cls(int(partition), int(start), int(end))
        except ValueError as exc:
            raise ValueError(f"range {text!r} is not PARTITION:START-END, e.g. 0:0-100 ({exc})") from exc


@dataclass(frozen=True)
class OffsetRange:
    """The bounded slice of a topic one feature-job run consumes: one `PartitionRange` per partition.

    Empty partitions are dropped, so the same data gives the same `range_id` however it was asked for.
    """

    topic: str
    partitions: tuple[PartitionRange, ...]

    @classmethod
    def of(cls, topic: str, partitions: Sequence[PartitionRange]) -> OffsetRange:
        kept = tuple(sorted(p for p in partitions if p.size > 0))
        if len({p.partition for p in kept}) != len(kept):
            raise ValueError(f"a partition appears twice in the range for topic {topic!r}")
        return cls(topic, kept)

    @property
    def records(self) -> int:
        return sum(p.size for p in self.partitions)

    @property
    def range_id(self) -> str:
        """Canonical text of the range, e.g. `events:0=0-100,1=0-120`."""
        return f"{self.topic}:" + ",".join(f"{p.partition}={p.start}-{p.end}" for p in self.partitions)

    @property
    def slug(self) -> str:
        """File-name-safe, deterministic name of the range (hashed when it would get too long)."""
        body = "_".join(f"p{p.partition}o{p.start}-{p.end}" for p in self.partitions)
        name = f"{self.topic}_{body}".replace(".", "-")
        if len(name) > 160:
            name = f"{self.topic}_{hashlib.sha256(self.range_id.encode()).hexdigest()[:32]}"
        return name


class RangeConflictError(RuntimeError):
    """A range overlaps, but differs from, one already applied: applying it would double count events."""
