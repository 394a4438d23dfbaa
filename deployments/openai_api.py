"""Request and response shapes of the OpenAI-compatible API, plus surge's own extensions.

Requests ignore unknown fields (OpenAI clients send optional ones we don't use) but reject values we can't
honour with a 400 that names the field. Limits that depend on settings are checked by `check_limits`.
Extensions ride in the extra body (the `openai` client's `extra_body=`): `retrieval` asks for RAG
(or use the model alias `rag/<model>`), and responses carry `sources` and `surge` timings.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from deployments.settings import GatewaySettings
from surge_core.records import DOC_ID_PATTERN, MAX_DOCUMENT_CHARS, MetadataValue
from surge_core.tenancy import TENANT_PATTERN

RAG_MODEL_PREFIX = "rag/"


class ApiError(Exception):
    """An error the client caused or must handle, rendered as OpenAI's error object."""

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        param: str | None = None,
        error_type: str = "invalid_request_error",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.param = param
        self.error_type = error_type
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {"message": self.message, "type": self.error_type, "param": self.param, "code": None}
        }


# What the stores can hold, checked here so a bad value is the client's 400 and not the store's 500:
# PostgreSQL text refuses NUL, and a filter with more alternatives than this nests SQLite's expression
# tree past its depth limit (1000) or its 32766 host parameters.
MAX_FILTER_KEYS = 32
MAX_FILTER_VALUES = 256


def reject_nul(text: str, what: str) -> str:
    if "\x00" in text:
        raise ValueError(f"{what} must not contain a NUL character")
    return text


def _check_metadata(metadata: dict[str, Any], what: str) -> None:
    for key, value in metadata.items():
        reject_nul(key, f"{what} key")
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str):
                reject_nul(item, f"{what}[{key!r}]")


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")


class RetrievalOptions(BaseModel):
    """RAG options (extra body field `retrieval`)."""

    model_config = ConfigDict(extra="forbid")

    top_k: int | None = Field(
        None, ge=1, description="Chunks to retrieve (defaults to the gateway's rag_top_k)."
    )
    filter: dict[str, MetadataValue | list[MetadataValue]] | None = Field(
        None,
        max_length=MAX_FILTER_KEYS,
        description=f"Metadata filter: every key must match; a list (at most {MAX_FILTER_VALUES} values) "
        "means any of.",
    )

    @field_validator("filter")
    @classmethod
    def _filter_fits_the_store(
        cls, value: dict[str, MetadataValue | list[MetadataValue]] | None
    ) -> dict[str, MetadataValue | list[MetadataValue]] | None:
        for key, values in (value or {}).items():
            if isinstance(values, list) and len(values) > MAX_FILTER_VALUES:
                raise ValueError(f"filter[{key!r}] lists {len(values)} values; at most {MAX_FILTER_VALUES}")
        _check_metadata(value or {}, "filter")
        return value


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        parts = []
        for part in self.content:
            if part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise ApiError(400, "only text content parts are supported", param="messages")
            parts.append(part["text"])
        return "".join(parts)


class _Sampling(_Request):
    model: str = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int = Field(1, ge=1, le=1)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    retrieval: RetrievalOptions | None = None
    user: str | None = Field(None, max_length=256, description="End-user id; keys the online features.")

    @property
    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    @property
    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    @property
    def wants_rag(self) -> bool:
        return self.retrieval is not None or self.model.startswith(RAG_MODEL_PREFIX)

    @property
    def base_model(self) -> str:
        return self.model.removeprefix(RAG_MODEL_PREFIX)

    @property
    def include_usage_in_stream(self) -> bool:
        return bool(self.stream_options and self.stream_options.get("include_usage"))


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)

    def prompt_chars(self) -> int:
        return sum(len(m.text()) for m in self.messages)

    def last_user_text(self) -> str:
        for message in reversed(self.messages):
            if message.role == "user":
                return message.text()
        raise ApiError(400, "a RAG request needs at least one user message", param="messages")


class CompletionRequest(_Sampling):
    prompt: str = Field(min_length=1)
    echo: bool = False

    @field_validator("echo")
    @classmethod
    def _no_echo(cls, value: bool) -> bool:
        if value:
            raise ValueError("echo is not supported")
        return value

    def prompt_chars(self) -> int:
        return len(self.prompt)


class EmbeddingRequest(_Request):
    model: str = Field(min_length=1)
    input: str | list[str] = Field(description="Text or list of texts (token arrays are not supported).")
    encoding_format: Literal["float", "base64"] = "float"

    @property
    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


class DocumentIn(BaseModel):
    # NaN/Infinity: Python's JSON parser accepts them, no store can index them.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    id: str = Field(pattern=DOC_ID_PATTERN)
    text: str = Field(min_length=1, max_length=MAX_DOCUMENT_CHARS)
    metadata: dict[str, MetadataValue] = Field(default_factory=dict)

    @field_validator("text")
    @classmethod
    def _text_has_no_nul(cls, value: str) -> str:
        return reject_nul(value, "text")

    @field_validator("metadata")
    @classmethod
    def _metadata_has_no_nul(cls, value: dict[str, MetadataValue]) -> dict[str, MetadataValue]:
        _check_metadata(value, "metadata")
        return value


class DocumentVersion(BaseModel):
    """Where a document's latest write came from: the Kafka partition and offset of its record."""

    model_config = ConfigDict(extra="forbid")

    partition: int = Field(ge=0, le=2**31 - 1)
    offset: int = Field(ge=0, le=2**63 - 1)


class DocumentsRequest(BaseModel):
    """`POST /v1/documents`: upsert `documents` (chunked + embedded) and/or remove the ids in `delete`.

    `versions` (optional, per id of either list) fences writes: the index refuses a version older than the
    one it holds (same partition, lower offset), so a replayed older record never overwrites a newer one.
    The ingestion consumer's HTTP sink sends them; other callers may leave them out.
    """

    model_config = ConfigDict(extra="forbid")

    tenant: str | None = Field(
        None,
        pattern=TENANT_PATTERN,
        description="The caller's tenant, optional: when given it must be the key's (403 otherwise). The "
        "HTTP sink sends the Kafka record's tenant, so a record of another tenant is refused.",
    )
    documents: list[DocumentIn] = Field(default_factory=list)
    delete: list[Annotated[str, Field(pattern=DOC_ID_PATTERN)]] = Field(default_factory=list)
    versions: dict[str, DocumentVersion] = Field(default_factory=dict)

    def store_versions(self) -> dict[str, tuple[int, int]]:
        return {doc_id: (v.partition, v.offset) for doc_id, v in self.versions.items()}

    @model_validator(mode="after")
    def _each_id_once(self) -> DocumentsRequest:
        # One transaction cannot both hold two versions of a document (which one wins?), nor upsert and
        # delete it: the caller must say which.
        seen: set[str] = set()
        for doc in self.documents:
            if doc.id in seen:
                raise ValueError(f"document id {doc.id!r} appears twice in documents")
            seen.add(doc.id)
        both = sorted(seen.intersection(self.delete))
        if both:
            raise ValueError(f"ids both upserted and deleted in one request: {both[:5]}")
        unknown = sorted(set(self.versions) - seen - set(self.delete))
        if unknown:
            raise ValueError(f"versions name ids that are neither upserted nor deleted: {unknown[:5]}")
        return self


def check_limits(request: ChatCompletionRequest | CompletionRequest, settings: GatewaySettings) -> int:
    """Apply the gateway's limits; returns the `max_tokens` to use. Raises ApiError(400) naming the field."""
    if request.prompt_chars() > settings.max_prompt_chars:
        field = "messages" if isinstance(request, ChatCompletionRequest) else "prompt"
        raise ApiError(
            400,
            f"{field} is {request.prompt_chars()} characters; the limit is {settings.max_prompt_chars}",
            param=field,
        )
    max_tokens = request.requested_max_tokens or settings.default_max_tokens
    if max_tokens > settings.max_tokens_limit:
        raise ApiError(
            400,
            f"max_tokens {max_tokens} exceeds the limit of {settings.max_tokens_limit}",
            param="max_tokens",
        )
    stops = request.stop_list
    if len(stops) > settings.max_stop_sequences:
        raise ApiError(
            400,
            f"stop has {len(stops)} sequences; at most {settings.max_stop_sequences} allowed",
            param="stop",
        )
    if any(not s for s in stops):
        raise ApiError(400, "stop sequences must not be empty", param="stop")
    return max_tokens


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int | None = None) -> dict[str, Any]:
    """OpenAI's usage object; `prompt_tokens_details.cached_tokens` when the engine reports prefix-cache hits."""
    out: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    if cached_tokens is not None:
        out["prompt_tokens_details"] = {"cached_tokens": cached_tokens}
    return out


def chat_chunk(
    completion_id: str, model: str, delta: dict[str, Any], finish_reason: str | None, **extra: Any
) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}],
        **extra,
    }


def completion_chunk(
    completion_id: str, model: str, text: str, finish_reason: str | None, **extra: Any
) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "text": text, "finish_reason": finish_reason, "logprobs": None}],
        **extra,
    }
