"""Offset ranges: parsed from the CLI form, canonical ids and file names, overlap rules, planning."""

from __future__ import annotations

import pytest

from pipelines.feature_job import plan_range
from surge_core.feature_store import OffsetRange, PartitionRange


def test_cli_form_parses_into_a_partition_range() -> None:
    assert PartitionRange.parse("2:100-250") == PartitionRange(2, 100, 250)


@pytest.mark.parametrize("text", ["2:250-100", "x:0-1", "0-10", "1:5"])
def test_malformed_or_backwards_ranges_are_rejected(text: str) -> None:
    with pytest.raises(ValueError):
        PartitionRange.parse(text)


def test_range_id_ignores_order_and_empty_partitions() -> None:
    a = OffsetRange.of("events", [PartitionRange(1, 0, 5), PartitionRange(0, 3, 3), PartitionRange(0, 0, 0)])
    b = OffsetRange.of("events", [PartitionRange(1, 0, 5)])
    assert a.range_id == b.range_id == "events:1=0-5"
    assert a.slug == "events_p1o0-5"
    assert a.records == 5


def test_a_partition_listed_twice_is_rejected() -> None:
    with pytest.raises(ValueError, match="twice"):
        OffsetRange.of("events", [PartitionRange(0, 0, 5), PartitionRange(0, 5, 9)])


def test_long_ranges_get_a_short_hashed_file_name() -> None:
    rng = OffsetRange.of("events", [PartitionRange(p, 10**9, 10**9 + 7) for p in range(64)])
    assert len(rng.slug) < 80
    assert rng.slug == OffsetRange.of("events", list(rng.partitions)).slug


def test_touching_ranges_do_not_overlap_but_shared_offsets_do() -> None:
    assert not PartitionRange(0, 0, 10).overlaps(PartitionRange(0, 10, 20))
    assert PartitionRange(0, 0, 10).overlaps(PartitionRange(0, 9, 20))
    assert not PartitionRange(0, 0, 10).overlaps(PartitionRange(1, 0, 10))


def test_plan_starts_at_the_ledger_end_and_caps_per_partition() -> None:
    planned = plan_range(
        "events", {0: 0, 1: 0, 2: 50}, {0: 120, 1: 80, 2: 60}, {0: 100}, max_per_partition=30
    )
    assert planned.partitions == (
        PartitionRange(0, 100, 120),
        PartitionRange(1, 0, 30),
        PartitionRange(2, 50, 60),
    )


def test_plan_is_empty_when_the_ledger_is_at_the_end() -> None:
    assert plan_range("events", {0: 0}, {0: 40}, {0: 40}).records == 0
