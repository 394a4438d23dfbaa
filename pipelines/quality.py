"""Quality signals of served answers, read from `inference-log` records by the drift monitor's consumer.

Per model and version (`model_version` of the record, "1" when it is empty) the monitor exports
Prometheus series; rates are ratios of counters taken in PromQL, e.g. the share of 429s over 5 minutes:
`sum(rate(surge_quality_rejections_total{kind="429"}[5m])) / sum(rate(surge_quality_requests_total[5m]))`.

| series | what one record adds |
| --- | --- |
| `surge_quality_requests_total` | every record |
| `surge_quality_rejections_total{kind}` | `4xx` (client errors but 429 and 499), `429`, `5xx` |
| `surge_quality_retrievals_total`, `..._retrieval_hits_total` | a request that retrieved; a hit when its top score >= `hit_score` |
| `surge_quality_retrieval_top_score` (histogram) | the best retrieval score (cosine similarity) |
| `surge_quality_answers_total`, `..._empty_answers_total` | a 200 answer; an empty one (no tokens or blank text) |
| `surge_quality_answer_tokens` (histogram) | completion tokens of a 200 answer |
| `surge_quality_answers_inspected_total`, `..._refusals_total` | a 200 answer whose text was logged; one that refuses |
| `surge_quality_groundedness` (histogram) | the groundedness proxy of a RAG answer (below) |

**Groundedness is a proxy, not a hallucination detector.** It is the share of the answer's content tokens
(lower-cased words of 2+ characters or any number, stop words removed) that occur anywhere in the retrieved
passages. Worked example: sources "Paris is the capital of France", answer "The capital is Paris, founded
in 250 BC" -> content tokens capital, paris, founded, 250, bc -> 2 of 5 supported -> 0.4. Its limits, by
design: a paraphrase or a synonym counts as unsupported (low scores on good abstractive answers); a
wrong answer assembled from the passages' own words ("Paris is not the capital") counts as supported;
negation, numbers' meaning and word order are ignored; answers shorter than `min_answer_tokens` content
tokens and requests without passages are not scored. Use it to watch trends per model version (a new
version whose answers drift away from their sources), not to judge one answer. It needs the answer and
passage text in the record (the gateway's `include_answer`, on by default, redacted like prompts).

**Shadow records** (a version answering mirrored requests no caller saw) are counted under their own
version label, `shadow:<version>` (e.g. `version="shadow:2"`), never under the version's primary traffic:
the rules group by version, so a shadow neither dilutes nor inflates its primary's rates, and
`version=~"shadow:.*"` selects the shadows' own signals.

Refusals are matched by phrases (`REFUSAL_PATTERNS`) in the answer's first 200 characters: English
only, and a model that refuses in other words is not counted.

Measured cost (shared 2-core machine, load average 6.5): assessing a record with a 300-word answer and five
200-word passages takes about 1.0 ms (tokenising the passages dominates), one without text 5 us. With full
text that caps one monitor at about 1,000 records/s, below the drift windows' 15,000/s: scale the monitor's
consumers (partitions) or turn include_answer off where traffic is higher.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Histogram
from pydantic import BaseModel, ConfigDict, Field

from surge_core.records import InferenceLogRecord

RejectionKind = Literal["4xx", "429", "5xx"]
CLIENT_CLOSED = 499  # the client stopped reading: not a rejection by the server
TOKEN = re.compile(r"[^\W_]+", re.UNICODE)
# Words that carry no claim: an answer is not "grounded" by sharing them with a passage.
STOP_WORDS = frozenset(
    [
        "a",
        "about",
        "above",
        "after",
        "again",
        "against",
        "all",
        "also",
        "am",
        "an",
        "and",
        "any",
        "are",
        "as",
        "at",
        "be",
        "because",
        "been",
        "before",
        "being",
        "below",
        "between",
        "both",
        "but",
        "by",
        "can",
        "could",
        "did",
        "do",
        "does",
        "doing",
        "down",
        "during",
        "each",
        "few",
        "for",
        "from",
        "further",
        "had",
        "has",
        "have",
        "having",
        "he",
        "her",
        "here",
        "hers",
        "him",
        "his",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "itself",
        "just",
        "me",
        "more",
        "most",
        "my",
        "no",
        "nor",
        "not",
        "of",
        "off",
        "on",
        "once",
        "only",
        "or",
        "other",
        "our",
        "ours",
        "out",
        "over",
        "own",
        "same",
        "she",
        "should",
        "so",
        "some",
        "such",
        "than",
        "that",
        "the",
        "their",
        "theirs",
        "them",
        "then",
        "there",
        "these",
        "they",
        "this",
        "those",
        "through",
        "to",
        "too",
        "under",
        "until",
        "up",
        "very",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "while",
        "who",
        "whom",
        "why",
        "will",
        "with",
        "would",
        "you",
        "your",
        "yours",
    ]
)
REFUSAL_PATTERNS = re.compile(
    r"\b(?:i\s+(?:cannot|can't|can not|won't|am unable to|am not able to|'m unable to|'m not able to)"
    r"\s+(?:help|assist|answer|provide|comply|do that|share)"
    r"|i'?m sorry,? but|i am sorry,? but|as an ai\b|i (?:do not|don't) have (?:enough )?information"
    r"|(?:the )?(?:context|sources?|passages?) (?:does|do) not (?:contain|mention|say))",
    re.IGNORECASE,
)
REFUSAL_PREFIX_CHARS = 200
SCORE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
TOKEN_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)


class QualityPolicy(BaseModel):
    """Thresholds of the quality signals.

    A retrieval is a hit when its best score (cosine similarity) is at least `hit_score`; an answer gets a
    groundedness score only with at least `min_answer_tokens` content tokens. Example: hit_score 0.3 ->
    top scores [0.42, 0.1] is a hit, [0.25] a miss; min_answer_tokens 3 -> "Yes." is not scored.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    hit_score: float = Field(0.3, ge=-1.0, le=1.0, description="Top retrieval score that counts as a hit.")
    min_answer_tokens: int = Field(
        3, ge=1, le=1000, description="Fewest content tokens an answer needs for a groundedness score."
    )


def content_tokens(text: str) -> list[str]:
    """Lower-cased word tokens that can carry a claim: 2+ characters or a number, not a stop word."""
    return [
        t
        for t in (m.group().lower() for m in TOKEN.finditer(text))
        if (len(t) > 1 or t.isdigit()) and t not in STOP_WORDS
    ]


def groundedness(answer: str, sources: Sequence[str], min_answer_tokens: int = 3) -> float | None:
    """Share of the answer's content tokens found in the sources (see the module docstring); None when the
    answer is too short or there are no sources to ground it in."""
    tokens = content_tokens(answer)
    if len(tokens) < min_answer_tokens or not sources:
        return None
    # All source tokens, unfiltered: the answer's tokens hold no stop words, so those in here match nothing.
    supported = set(TOKEN.findall("\n".join(sources).lower()))
    return sum(t in supported for t in tokens) / len(tokens)


def is_refusal(answer: str) -> bool:
    return REFUSAL_PATTERNS.search(answer[:REFUSAL_PREFIX_CHARS]) is not None


def rejection_kind(status_code: int) -> RejectionKind | None:
    if status_code == 429:
        return "429"
    if 500 <= status_code <= 599:
        return "5xx"
    if 400 <= status_code <= 499 and status_code != CLIENT_CLOSED:
        return "4xx"
    return None


@dataclass(frozen=True)
class RecordQuality:
    """The quality signals of one record (None: the record says nothing about that signal)."""

    model: str
    version: str
    rejection: RejectionKind | None
    top_score: float | None  # None: nothing retrieved (an empty retrieval is a miss)
    retrieved: bool
    hit: bool
    answered: bool
    answer_tokens: int
    empty: bool
    inspected: bool  # the answer text was in the record
    refusal: bool
    groundedness: float | None


SHADOW_LABEL_PREFIX = "shadow:"


def version_label(record: InferenceLogRecord) -> str:
    """The `version` label of a record: its model version ("1" when empty), `shadow:<version>` for a
    shadow record, so mirrored traffic has series of its own."""
    version = record.model_version or "1"
    return f"{SHADOW_LABEL_PREFIX}{version}" if record.shadow else version


def assess(record: InferenceLogRecord, policy: QualityPolicy) -> RecordQuality:
    retrieved = (
        record.sources is not None or record.prompt_embedding is not None or bool(record.retrieval_scores)
    )
    top_score = max(record.retrieval_scores) if record.retrieval_scores else None
    answered = record.status_code == 200
    inspected = answered and record.answer is not None
    answer = record.answer or ""
    empty = answered and (record.completion_tokens == 0 or (inspected and not answer.strip()))
    score = None
    if inspected and record.sources:
        score = groundedness(answer, record.sources, policy.min_answer_tokens)
    return RecordQuality(
        model=record.model,
        version=version_label(record),
        rejection=rejection_kind(record.status_code),
        top_score=top_score,
        retrieved=retrieved,
        hit=top_score is not None and top_score >= policy.hit_score,
        answered=answered,
        answer_tokens=record.completion_tokens,
        empty=empty,
        inspected=inspected,
        refusal=inspected and is_refusal(answer),
        groundedness=score,
    )


class QualityMetrics:
    """The `surge_quality_*` series (in the monitor's registry, served on its /metrics)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        labels = ("model", "version")

        def counter(name: str, doc: str, extra: tuple[str, ...] = ()) -> Counter:
            return Counter(f"surge_quality_{name}", doc, (*labels, *extra), registry=self.registry)

        def histogram(name: str, doc: str, buckets: Sequence[float]) -> Histogram:
            return Histogram(f"surge_quality_{name}", doc, labels, buckets=buckets, registry=self.registry)

        self.requests = counter("requests", "Inference-log records read.")
        self.rejections = counter(
            "rejections", "Requests refused or failed, by kind (4xx, 429, 5xx).", ("kind",)
        )
        self.retrievals = counter("retrievals", "Requests that retrieved passages (RAG).")
        self.retrieval_hits = counter("retrieval_hits", "Retrievals whose top score reached the hit score.")
        self.top_score = histogram("retrieval_top_score", "Best retrieval score of a request.", SCORE_BUCKETS)
        self.answers = counter("answers", "Answers returned with status 200.")
        self.empty_answers = counter("empty_answers", "200 answers with no tokens or only whitespace.")
        self.answer_tokens = histogram("answer_tokens", "Completion tokens of a 200 answer.", TOKEN_BUCKETS)
        self.inspected = counter("answers_inspected", "200 answers whose text was in the record.")
        self.refusals = counter("refusals", "Inspected answers that refuse (phrase match).")
        self.groundedness = histogram(
            "groundedness",
            "Share of an answer's content tokens found in its sources (a proxy).",
            SCORE_BUCKETS,
        )

    def observe(self, q: RecordQuality) -> None:
        key = (q.model, q.version)
        self.requests.labels(*key).inc()
        if q.rejection is not None:
            self.rejections.labels(*key, q.rejection).inc()
        if q.retrieved:
            self.retrievals.labels(*key).inc()
            if q.hit:
                self.retrieval_hits.labels(*key).inc()
        if q.top_score is not None:
            self.top_score.labels(*key).observe(q.top_score)
        if q.answered:
            self.answers.labels(*key).inc()
            self.answer_tokens.labels(*key).observe(q.answer_tokens)
            if q.empty:
                self.empty_answers.labels(*key).inc()
        if q.inspected:
            self.inspected.labels(*key).inc()
            if q.refusal:
                self.refusals.labels(*key).inc()
        if q.groundedness is not None:
            self.groundedness.labels(*key).observe(q.groundedness)


class QualitySignals:
    """Assess records and count them: what the drift monitor's handler calls after a committed batch."""

    def __init__(self, policy: QualityPolicy | None = None, metrics: QualityMetrics | None = None) -> None:
        self.policy = policy or QualityPolicy()
        self.metrics = metrics or QualityMetrics()

    def observe(self, records: Iterable[InferenceLogRecord]) -> None:
        for record in records:
            self.metrics.observe(assess(record, self.policy))
