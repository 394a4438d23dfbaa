"""The drift monitor's building blocks: the features it reads from an inference-log record, the samples
(reference and windows) it keeps per model, and its Prometheus series. `pipelines.drift` runs them."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from surge_core.records import DriftAlertRecord, InferenceLogRecord

EMBEDDING_FEATURE = "prompt_embedding"


def _latency(r: InferenceLogRecord) -> float | None:
    return r.latency_s


def _ttft(r: InferenceLogRecord) -> float | None:
    return r.ttft_s


def _prompt_tokens(r: InferenceLogRecord) -> float | None:
    return float(r.prompt_tokens)


def _completion_tokens(r: InferenceLogRecord) -> float | None:
    return float(r.completion_tokens)


def _retrieval_score_mean(r: InferenceLogRecord) -> float | None:
    return float(np.mean(r.retrieval_scores)) if r.retrieval_scores else None


#: Numeric features the monitor can watch: name -> value of one record (None: not present in it).
NUMERIC_FEATURES: dict[str, Callable[[InferenceLogRecord], float | None]] = {
    "latency_s": _latency,
    "ttft_s": _ttft,
    "prompt_tokens": _prompt_tokens,
    "completion_tokens": _completion_tokens,
    "retrieval_score_mean": _retrieval_score_mean,
}


class DriftMetrics:
    """Prometheus series of the monitor (its own registry, served on the consumer's metrics port)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.score = Gauge(
            "surge_drift_score",
            "Latest drift score of a feature for a model (higher is more drift).",
            ("model", "feature", "test"),
            registry=self.registry,
        )
        self.threshold = Gauge(
            "surge_drift_threshold",
            "Threshold the drift score is compared with.",
            ("model", "feature", "test"),
            registry=self.registry,
        )
        self.windows = Counter(
            "surge_drift_windows_evaluated",
            "Windows compared with the reference.",
            ("model",),
            registry=self.registry,
        )
        self.alerts = Counter(
            "surge_drift_alerts",
            "Drift alerts raised (scores above their threshold).",
            ("model", "feature", "test"),
            registry=self.registry,
        )
        self.window_seconds = Histogram(
            "surge_drift_window_evaluation_seconds",
            "Seconds to evaluate one window (all features and tests).",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=self.registry,
        )


@dataclass
class Sample:
    """Feature values of a set of records (a reference or a window)."""

    numeric: dict[str, list[float]] = field(default_factory=dict)
    embeddings: list[list[float]] = field(default_factory=list)
    records: int = 0
    first_at: float | None = None  # epoch seconds of the first record (time windows)

    def add(self, record: InferenceLogRecord, features: Sequence[str]) -> None:
        for name in features:
            value = NUMERIC_FEATURES[name](record)
            if value is not None and math.isfinite(value):
                self.numeric.setdefault(name, []).append(float(value))
        if record.prompt_embedding:
            self.embeddings.append([float(x) for x in record.prompt_embedding])
        if self.first_at is None:
            self.first_at = record.timestamp.timestamp()
        self.records += 1

    def mark(self) -> tuple[int, dict[str, int], int, float | None]:
        """Where this sample ends now; `truncate(mark)` undoes every `add` since (samples only grow)."""
        return self.records, {k: len(v) for k, v in self.numeric.items()}, len(self.embeddings), self.first_at

    def truncate(self, mark: tuple[int, dict[str, int], int, float | None]) -> None:
        records, lengths, embeddings, first_at = mark
        for name in list(self.numeric):
            if name in lengths:
                del self.numeric[name][lengths[name] :]
            else:
                del self.numeric[name]
        del self.embeddings[embeddings:]
        self.records, self.first_at = records, first_at

    def to_json(self) -> dict[str, Any]:
        return {
            "numeric": self.numeric,
            "embeddings": self.embeddings,
            "records": self.records,
            "first_at": self.first_at,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Sample:
        return cls(data["numeric"], data["embeddings"], data["records"], data["first_at"])


@dataclass
class ModelState:
    reference: Sample = field(default_factory=Sample)
    window: Sample = field(default_factory=Sample)
    window_index: int = 0


@dataclass(frozen=True)
class WindowResult:
    """One evaluated window: every (feature, test) score, and the alerts raised."""

    model: str
    window_index: int
    window_size: int
    scores: dict[tuple[str, str], float]
    alerts: tuple[DriftAlertRecord, ...]
    seconds: float
