"""Drift tests behind one small interface, picked by name from a registry (the drift monitor's config).

Every test maps (reference sample, window sample) to a **score where higher means more drift**, and the
`DriftPolicy` holds the threshold each score is compared with. Numeric tests take 1-D arrays; embedding
tests take 2-D arrays (rows = records). Statistics come from scipy where scipy has them.

| name               | kind      | score                                                                   |
| ------------------ | --------- | ----------------------------------------------------------------------- |
| `psi`              | numeric   | Population Stability Index over quantile bins of the reference          |
| `ks`               | numeric   | -log10(p) of the two-sample Kolmogorov-Smirnov test (`scipy.stats`)     |
| `embedding_cosine` | embedding | cosine distance between the mean embeddings (`scipy.spatial.distance`)  |
| `mmd_rbf`          | embedding | squared maximum mean discrepancy, RBF kernel, median-distance bandwidth |

Add a test by subclassing `DriftTest` and decorating it with `@register`.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator
from scipy import stats
from scipy.spatial import distance
from scipy.special import rel_entr

TestKind = Literal["numeric", "embedding"]


class DriftPolicy(BaseModel):
    """Thresholds of the drift tests: a window drifts on a test when `score > threshold`.

    Formulas (r = reference proportions, w = window proportions per bin, with `psi_epsilon` in empty bins):

    - PSI = sum_i (w_i - r_i) * ln(w_i / r_i); threshold `psi` (0.25 is the usual "significant shift").
    - KS score = -log10(p) of the two-sample KS test; threshold -log10(`ks_alpha`).
    - embedding_cosine = 1 - cos(mean(window), mean(reference)); threshold `embedding_cosine`.
    - mmd_rbf = MMD^2 (unbiased) with k(x, y) = exp(-|x - y|^2 / (2 s^2)), s = median pairwise distance.

    Worked example: reference latencies split into 10 deciles (r_i = 0.1); a window puts 30% of its
    latencies in the top decile and 7.78% in each other bin. PSI = (0.3 - 0.1) ln 3 + 9 (0.0778 - 0.1)
    ln 0.778 = 0.2197 + 0.0502 = 0.270 > 0.25: drift. A KS p-value of 1e-5 gives score 5 > -log10(1e-4)
    = 4: drift. Tests run only when both samples hold at least `min_samples` values.

    Why `ks_alpha` is small: every window is compared with the same reference, and several features are
    tested per window, so a nominal alpha under-states how often unchanged traffic alarms (an unlucky
    reference makes many windows look shifted). With 1e-4 and five features, 1 of 2,000 same-distribution
    windows alarmed (10 seeds x 200 windows of 200 records against 1,000 reference records; with 1e-3, 8
    of 600); see tests/unit/test_drift_monitor_quiet_on_same_distribution.py.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    psi: float = Field(0.25, gt=0, le=10, description="PSI above which a feature has drifted.")
    psi_bins: int = Field(10, ge=2, le=100, description="Quantile bins of the reference used by PSI.")
    psi_epsilon: float = Field(1e-4, gt=0, lt=0.01, description="Proportion used in place of an empty bin.")
    ks_alpha: float = Field(1e-4, gt=0, lt=0.5, description="KS p-value below which a feature has drifted.")
    embedding_cosine: float = Field(
        0.05, gt=0, le=2, description="Cosine distance of mean embeddings above which prompts drifted."
    )
    mmd_rbf: float = Field(0.05, gt=0, le=2, description="MMD^2 (RBF kernel) above which prompts drifted.")
    mmd_max_samples: int = Field(
        300, ge=10, le=5000, description="Rows per sample used by MMD (a random subsample beyond)."
    )
    min_samples: int = Field(30, ge=5, description="Values both samples need before a test runs.")

    @model_validator(mode="after")
    def _bins_fit_the_samples(self) -> DriftPolicy:
        if self.psi_bins > self.min_samples:
            raise ValueError(
                f"psi_bins ({self.psi_bins}) must be <= min_samples ({self.min_samples}): "
                "fewer samples than bins leaves most bins empty"
            )
        if self.mmd_max_samples < self.min_samples:
            raise ValueError(f"mmd_max_samples ({self.mmd_max_samples}) must be >= min_samples")
        return self

    def threshold(self, test: str) -> float:
        if test == "ks":
            return -math.log10(self.ks_alpha)
        value = getattr(self, test, None)
        if not isinstance(value, float):
            raise KeyError(f"no threshold for drift test {test!r}")
        return value


class DriftTest(ABC):
    """One drift statistic. `score(reference, window)` is higher when the window looks less like it."""

    name: ClassVar[str]
    kind: ClassVar[TestKind]

    def __init__(self, policy: DriftPolicy) -> None:
        self.policy = policy

    @property
    def threshold(self) -> float:
        return self.policy.threshold(self.name)

    @abstractmethod
    def score(self, reference: np.ndarray, window: np.ndarray) -> float: ...


DRIFT_TESTS: dict[str, type[DriftTest]] = {}


def register(cls: type[DriftTest]) -> type[DriftTest]:
    """Class decorator: make a test selectable by its `name` in the monitor's settings."""
    DRIFT_TESTS[cls.name] = cls
    return cls


def make_test(name: str, policy: DriftPolicy) -> DriftTest:
    try:
        return DRIFT_TESTS[name](policy)
    except KeyError:
        raise KeyError(f"unknown drift test {name!r}; known: {sorted(DRIFT_TESTS)}") from None


@register
class PopulationStabilityIndex(DriftTest):
    """PSI with bins at the reference's quantiles (ties merge bins, so integer features work too)."""

    name = "psi"
    kind = "numeric"

    def score(self, reference: np.ndarray, window: np.ndarray) -> float:
        inner = np.quantile(reference, np.linspace(0, 1, self.policy.psi_bins + 1)[1:-1])
        edges = np.unique(inner)
        # Bin i holds values in (edges[i-1], edges[i]]; the outer bins are open-ended.
        ref_counts = np.bincount(np.searchsorted(edges, reference, side="left"), minlength=len(edges) + 1)
        win_counts = np.bincount(np.searchsorted(edges, window, side="left"), minlength=len(edges) + 1)
        r = np.maximum(ref_counts / len(reference), self.policy.psi_epsilon)
        w = np.maximum(win_counts / len(window), self.policy.psi_epsilon)
        # (w - r) ln(w / r) = rel_entr(w, r) + rel_entr(r, w)
        return float(np.sum(rel_entr(w, r) + rel_entr(r, w)))


@register
class KolmogorovSmirnov(DriftTest):
    """Two-sample KS test; the score is the p-value's surprise, -log10(p) (capped at 300)."""

    name = "ks"
    kind = "numeric"

    def score(self, reference: np.ndarray, window: np.ndarray) -> float:
        result = stats.ks_2samp(reference, window)
        return float(min(300.0, -math.log10(max(float(result.pvalue), 1e-300))))


@register
class MeanEmbeddingCosine(DriftTest):
    """Cosine distance between the mean embedding of the window and of the reference."""

    name = "embedding_cosine"
    kind = "embedding"

    def score(self, reference: np.ndarray, window: np.ndarray) -> float:
        a, b = reference.mean(axis=0), window.mean(axis=0)
        if not np.any(a) or not np.any(b):
            return 0.0
        return float(distance.cosine(a, b))


@register
class RbfMaximumMeanDiscrepancy(DriftTest):
    """Unbiased MMD^2 with an RBF kernel whose width is the median pairwise distance (both samples)."""

    name = "mmd_rbf"
    kind = "embedding"

    def score(self, reference: np.ndarray, window: np.ndarray) -> float:
        limit = self.policy.mmd_max_samples
        rng = np.random.default_rng(0)  # fixed: the same windows always score the same
        if len(reference) > limit:
            reference = reference[rng.choice(len(reference), limit, replace=False)]
        if len(window) > limit:
            window = window[rng.choice(len(window), limit, replace=False)]
        both = np.vstack([reference, window]).astype(np.float64)
        squared = distance.squareform(distance.pdist(both, "sqeuclidean"))
        positive = squared[np.triu_indices_from(squared, k=1)]
        positive = positive[positive > 0]
        if positive.size == 0:
            return 0.0
        kernel = np.exp(-squared / (2.0 * float(np.median(positive))))
        n = len(reference)
        kxx, kyy, kxy = kernel[:n, :n], kernel[n:, n:], kernel[:n, n:]
        m = len(window)
        xx = (kxx.sum() - np.trace(kxx)) / (n * (n - 1))
        yy = (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        return float(xx + yy - 2.0 * kxy.mean())
