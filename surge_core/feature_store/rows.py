"""Feature rows: the Parquet schema, and how a new window merges into an entity's online row."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

# ------------------------------------------------------------------------------------------ feature rows

#: Columns of a feature row (one per entity and tumbling window), in the offline store's order.
FEATURE_SCHEMA = pa.schema(
    [
        pa.field("entity_id", pa.string(), nullable=False),
        pa.field("window_start", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("window_end", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("event_count", pa.int64(), nullable=False),
        pa.field("value_count", pa.int64(), nullable=False),
        pa.field("value_sum", pa.float64(), nullable=False),
        pa.field("value_max", pa.float64()),
        pa.field("event_type_counts", pa.string(), nullable=False),  # JSON object, sorted keys
        pa.field("first_event_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("last_event_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("recency_s", pa.float64(), nullable=False),  # window_end - last_event_at
        pa.field("text_count", pa.int64(), nullable=False),
        pa.field("text_embedding", pa.list_(pa.float32())),  # mean of the window's text embeddings
        pa.field("range_id", pa.string(), nullable=False),
        pa.field("window_date", pa.string(), nullable=False),  # hive partition key (YYYY-MM-DD)
    ]
)

FeatureRow = dict[str, Any]


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


def _as_datetime(value: datetime | str) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)


def merge_online(existing: dict[str, Any] | None, row: FeatureRow) -> dict[str, Any]:
    """Fold one feature row into an entity's online record (a pure function; JSON-safe output).

    The online record holds the entity's *latest* window plus lifetime totals. A row for a newer window
    replaces the window fields; a row for the same window (events split over two ranges) adds to them
    (counts and sums add, the text embedding is the text-count-weighted mean); a row for an older window
    (late data) only adds to the lifetime totals. Example: existing window 10:00 with 3 events, new row for
    10:00 with 2 events -> window event_count 5; new row for 11:00 -> window event_count 2, lifetime 5+2.
    """
    window = {
        "window_start": _iso(row["window_start"]),
        "window_end": _iso(row["window_end"]),
        "event_count": int(row["event_count"]),
        "value_count": int(row["value_count"]),
        "value_sum": float(row["value_sum"]),
        "value_max": None if row["value_max"] is None else float(row["value_max"]),
        "event_type_counts": json.loads(row["event_type_counts"]),
        "first_event_at": _iso(row["first_event_at"]),
        "last_event_at": _iso(row["last_event_at"]),
        "text_count": int(row["text_count"]),
        "text_embedding": None
        if row["text_embedding"] is None
        else [float(x) for x in row["text_embedding"]],
    }
    if existing is None:
        merged: dict[str, Any] = {
            "entity_id": row["entity_id"],
            **window,
            "lifetime_event_count": 0,
            "lifetime_value_sum": 0.0,
            "last_seen_at": window["last_event_at"],
        }
    else:
        merged = dict(existing)
        old_start = _as_datetime(existing["window_start"])
        new_start = _as_datetime(window["window_start"])
        if new_start > old_start:
            merged.update(window)
        elif new_start == old_start:
            merged.update(_add_windows(existing, window))
        merged["last_seen_at"] = max(existing["last_seen_at"], window["last_event_at"], key=_as_datetime)
    merged["lifetime_event_count"] += window["event_count"]
    merged["lifetime_value_sum"] += window["value_sum"]
    merged["value_mean"] = merged["value_sum"] / merged["value_count"] if merged["value_count"] else None
    merged["recency_s"] = (
        _as_datetime(merged["window_end"]) - _as_datetime(merged["last_event_at"])
    ).total_seconds()
    return merged


def _add_windows(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    counts = dict(a["event_type_counts"])
    for key, n in b["event_type_counts"].items():
        counts[key] = counts.get(key, 0) + n
    maxes = [m for m in (a["value_max"], b["value_max"]) if m is not None]
    embedding = a["text_embedding"]
    if b["text_embedding"] is not None:
        if embedding is None:
            embedding = b["text_embedding"]
        else:
            wa, wb = a["text_count"], b["text_count"]
            embedding = [
                (x * wa + y * wb) / (wa + wb) for x, y in zip(embedding, b["text_embedding"], strict=True)
            ]
    return {
        "event_count": a["event_count"] + b["event_count"],
        "value_count": a["value_count"] + b["value_count"],
        "value_sum": a["value_sum"] + b["value_sum"],
        "value_max": max(maxes) if maxes else None,
        "event_type_counts": dict(sorted(counts.items())),
        "first_event_at": min(a["first_event_at"], b["first_event_at"], key=_as_datetime),
        "last_event_at": max(a["last_event_at"], b["last_event_at"], key=_as_datetime),
        "text_count": a["text_count"] + b["text_count"],
        "text_embedding": embedding,
    }
