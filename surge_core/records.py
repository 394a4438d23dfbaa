"""Versioned record schemas for every topic, defined once and imported by producers, consumers and the gateway.

Records are JSON objects validated by pydantic. Each carries `schema_version`, so a consumer can accept
older versions while producers move on; a record with an unknown version is a poison message (DLQ), not
a crash. Bump `schema_version` (and accept both in the union) when a field changes meaning.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    model_validator,
)

from surge_core.tenancy import DEFAULT_TENANT, TENANT_PATTERN, stored_doc_id

# Integers must fit the stores' 64-bit columns (SQLite INTEGER, JSON numbers in PostgreSQL filters); a
# bigger one is a schema error here, not an overflow deep inside a sink write.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def _int64(value: object) -> object:
    # Checked before the union: otherwise an integer over 2^63 silently becomes the float 9.2e18.
    if isinstance(value, int) and not isinstance(value, bool) and not INT64_MIN <= value <= INT64_MAX:
        raise ValueError("integers must fit in 64 bits (-2^63 .. 2^63-1)")
    return value


MetadataValue = Annotated[str | int | float | bool, BeforeValidator(_int64)]
DOC_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,255}$"
MAX_DOCUMENT_CHARS = 1_000_000
# Bounds of the text an inference-log record may carry (the gateway cuts to these before publishing).
MAX_LOGGED_ANSWER_CHARS = 16_000
MAX_LOGGED_SOURCE_CHARS = 4_000
MAX_LOGGED_SOURCES = 64


def utc_now() -> datetime:
    return datetime.now(UTC)


class Record(BaseModel):
    """Base of every record: unknown fields are rejected so typos surface at the producer."""

    # NaN and +-Infinity are not JSON and poison every aggregate they reach (feature sums, drift scores).
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    schema_version: Literal[1] = Field(1, description="Schema version of this record.")


class DocumentUpsert(Record):
    """Insert or replace a document (chunked and embedded by the consumer). Idempotent by doc_id + content."""

    op: Literal["upsert"] = Field("upsert", description="Operation.")
    doc_id: str = Field(pattern=DOC_ID_PATTERN, description="Stable document id (the record key).")
    tenant: str = Field(
        DEFAULT_TENANT, pattern=TENANT_PATTERN, description="Tenant that owns the document (see tenancy)."
    )
    text: str = Field(min_length=1, max_length=MAX_DOCUMENT_CHARS, description="Document text.")
    metadata: dict[str, MetadataValue] = Field(
        default_factory=dict, description="Flat metadata, usable as a search filter."
    )

    @property
    def storage_id(self) -> str:
        """The record key and stored id: `tenant#doc_id`, or the bare doc_id for the default tenant."""
        return stored_doc_id(self.tenant, self.doc_id)


class DocumentDelete(Record):
    """Remove a document and all its chunks from the index."""

    op: Literal["delete"] = Field("delete", description="Operation.")
    doc_id: str = Field(pattern=DOC_ID_PATTERN, description="Document id to delete.")
    tenant: str = Field(
        DEFAULT_TENANT, pattern=TENANT_PATTERN, description="Tenant that owns the document (see tenancy)."
    )

    @property
    def storage_id(self) -> str:
        """The record key and stored id: `tenant#doc_id`, or the bare doc_id for the default tenant."""
        return stored_doc_id(self.tenant, self.doc_id)


DocumentRecord = Annotated[DocumentUpsert | DocumentDelete, Field(discriminator="op")]
DOCUMENT_RECORD = TypeAdapter(DocumentRecord)


class EventRecord(Record):
    """A user interaction / transaction about one entity; keyed by entity_id so an entity stays ordered."""

    event_id: str = Field(min_length=1, max_length=256, description="Unique event id (dedup key).")
    entity_id: str = Field(min_length=1, max_length=256, description="Entity the event is about.")
    event_type: str = Field(min_length=1, max_length=64, description="Kind of event, e.g. 'purchase'.")
    timestamp: AwareDatetime = Field(description="When the event happened (timezone-aware).")
    value: float | None = Field(None, description="Numeric amount, if any (summed by the feature job).")
    text: str | None = Field(None, max_length=20_000, description="Free text, embedded by the feature job.")
    attributes: dict[str, MetadataValue] = Field(default_factory=dict, description="Extra flat attributes.")


class InferenceLogRecord(Record):
    """One record per gateway request (no raw prompt unless the gateway setting turns it on).

    Version 2 added `shadow_of` (a shadow record names the primary request it mirrors; the primary's
    `request_id` is then the LLM request's id) and `prompt_version`. Version 1 records, which have
    neither, still read.
    """

    # Not the base's Literal[1]: both versions are accepted, new records are written as 2.
    schema_version: Literal[1, 2] = Field(2, description="Schema version of this record.")  # type: ignore[assignment]
    request_id: str = Field(description="Request id (also in the response's x-request-id header).")
    timestamp: AwareDatetime = Field(default_factory=utc_now, description="When the request finished.")
    route: str = Field(description="API route, e.g. /v1/chat/completions.")
    model: str = Field(description="Served model name.")
    model_version: str = Field("1", description="Model version / revision.")
    status_code: int = Field(ge=100, le=599, description="HTTP status returned.")
    latency_s: float = Field(ge=0, description="Seconds from request to last byte.")
    ttft_s: float | None = Field(None, ge=0, description="Seconds to first token (streamed or not).")
    prompt_tokens: int = Field(0, ge=0, description="Prompt tokens.")
    completion_tokens: int = Field(0, ge=0, description="Generated tokens.")
    retrieval_scores: list[float] = Field(default_factory=list, description="Scores of the retrieved chunks.")
    prompt_embedding: list[float] | None = Field(
        None, description="A cheap sketch of the prompt's embedding (for embedding drift)."
    )
    prompt: str | None = Field(None, description="Raw prompt; only when the gateway's include_prompt is on.")
    principal: str | None = Field(None, description="Name of the API key's principal (never the key).")
    tenant: str | None = Field(None, description="Tenant of the principal.")
    shadow: bool = Field(False, description="A mirrored request to a shadow version (no caller saw it).")
    alias: str | None = Field(None, description="Alias the request named, when it came through one.")
    shadow_of: str | None = Field(
        None,
        min_length=1,
        max_length=128,
        description="Schema 2, shadow records only: the request_id of the primary record it mirrors.",
    )
    prompt_version: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="Schema 2: the system-prompt template version the answering model version used.",
    )

    answer: str | None = Field(
        None,
        max_length=MAX_LOGGED_ANSWER_CHARS,
        description="Answer text, redacted and cut (only when the gateway's include_answer is on).",
    )
    sources: list[Annotated[str, Field(max_length=MAX_LOGGED_SOURCE_CHARS)]] | None = Field(
        None,
        max_length=MAX_LOGGED_SOURCES,
        description="Text of the passages retrieved for the answer, redacted and cut; [] when retrieval "
        "found nothing, None when the request did no retrieval or include_answer is off.",
    )

    @model_validator(mode="after")
    def _shadow_of_names_a_primary_from_a_shadow(self) -> InferenceLogRecord:
        if self.shadow_of is not None and (self.schema_version < 2 or not self.shadow):
            raise ValueError("shadow_of: only a schema_version 2 shadow record names the primary it mirrors")
        if self.prompt_version is not None and self.schema_version < 2:
            raise ValueError("prompt_version: a schema_version 1 record has no prompt version")
        return self


class ModelEventRecord(Record):
    """Published to model-events on every model-lifecycle change: deploy, weight change, rollback."""

    timestamp: AwareDatetime = Field(default_factory=utc_now, description="When the change happened.")
    event: Literal["deployed", "weights_changed", "rollback"] = Field(description="What changed.")
    alias: str | None = Field(None, description="Alias whose weights changed (weights_changed, rollback).")
    version: str | None = Field(None, description="`name@version` concerned (rollback: the canary).")
    weights: dict[str, dict[str, float]] = Field(
        default_factory=dict, description="Alias -> version -> weight after the change."
    )
    actor: str = Field(min_length=1, description="Who made it: a person, 'serve-config' or 'rollback-guard'.")
    reason: str = Field(min_length=1, description="Why, in words (a rollback names the breached threshold).")
    source: str = Field(description="Which process published it (e.g. gateway:<app>).")


class UsageRecord(Record):
    """One record per request on the `usage` topic: who used which model, how much, and what it cost."""

    request_id: str = Field(min_length=1, max_length=128, description="Request id (dedup key).")
    timestamp: AwareDatetime = Field(default_factory=utc_now, description="When the request finished.")
    principal: str | None = Field(
        None, max_length=256, description="Principal of the API key (never the key)."
    )
    tenant: str = Field(DEFAULT_TENANT, pattern=TENANT_PATTERN, description="Tenant charged.")
    model: str = Field(min_length=1, max_length=256, description="Model name (without its version).")
    version: str = Field("1", min_length=1, max_length=64, description="Model version.")
    route: str = Field(max_length=256, description="API route, e.g. /v1/chat/completions.")
    status_code: int = Field(ge=100, le=599, description="HTTP status returned.")
    tokens_in: int = Field(0, ge=0, description="Prompt tokens.")
    tokens_out: int = Field(0, ge=0, description="Generated tokens.")
    stage_seconds: dict[str, Annotated[float, Field(ge=0)]] = Field(
        default_factory=dict,
        description="Seconds the request spent in each stage (embedder, retriever, llm).",
    )
    cost_usd: float = Field(
        0.0, ge=0, description="Stage seconds priced by the price table (surge_core.cost)."
    )
    stage_usd_per_hour: dict[str, Annotated[float, Field(ge=0)]] = Field(
        default_factory=dict, description="Price of one replica of each stage the request used, per hour."
    )


class DriftAlertRecord(Record):
    """Published to drift-alerts when a drift score crosses its threshold."""

    timestamp: AwareDatetime = Field(default_factory=utc_now, description="When the alert was raised.")
    model: str = Field(description="Model whose traffic drifted.")
    feature: str = Field(description="Feature (or 'prompt_embedding') that drifted.")
    test: str = Field(description="Drift test, e.g. 'psi', 'ks', 'embedding_cosine'.")
    score: float = Field(description="Test statistic.")
    threshold: float = Field(description="Threshold crossed.")
    window_index: int = Field(ge=0, description="Index of the window evaluated.")
    window_size: int = Field(ge=1, description="Records in the window.")
    reference_size: int = Field(ge=1, description="Records in the reference window.")
