"""Bytes -> validated record, for every consumer: anything that cannot become a valid record is poison.

Kafka delivers whatever any producer wrote, so decoding must turn *every* value into either a record or a
`PoisonRecord` (which the consumers dead-letter with its reason); it must never raise anything else, or a
consumer dies on the record and, since it never commits it, dies on it again after every restart.

What is rejected, and as which `surge-dlq-reason`:

| value | reason |
| --- | --- |
| tombstone (`None`) or empty bytes | `not_json` (the ingestion consumer turns a keyed tombstone into a delete first) |
| not UTF-8 (JSON text must be; `json.loads` would otherwise guess UTF-16/32 from the first bytes) | `not_json` |
| not JSON, `NaN` / `Infinity` literals, an integer over 4,300 digits, nesting that blows the parser's stack | `not_json` |
| JSON but not an object, nesting deeper than `MAX_DEPTH`, a NUL or lone surrogate in any string, a number that overflows to infinity (`1e999`) | `schema_invalid` |
| an object that fails the record's schema (wrong types, unknown fields, ...) | `schema_invalid` |

NUL characters and lone surrogates are rejected everywhere because the stores cannot hold them
(PostgreSQL text refuses NUL; a lone surrogate cannot be encoded as UTF-8 by any sink), so letting them
through would turn a decode-time poison into a processing failure retried `max_attempts` times.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

from pydantic import TypeAdapter, ValidationError

from pipelines.dlq import PoisonKind, PoisonRecord

T_co = TypeVar("T_co", covariant=True)

MAX_SCHEMA_ERROR_CHARS = 500
# Deepest nesting a record may have. Our schemas need 3 (record -> metadata/list -> value); the margin
# only keeps the post-parse walk bounded.
MAX_DEPTH = 32


def _no_constants(name: str) -> NoReturn:
    # json.loads accepts NaN, Infinity and -Infinity by default; they are not JSON (RFC 8259).
    raise ValueError(f"{name} is not a JSON number")


def parse_json(value: bytes | None) -> Any:
    """Strict JSON (UTF-8, no NaN/Infinity) of a message value; PoisonRecord(not_json) when it is not."""
    if value is None:
        raise PoisonRecord(PoisonKind.NOT_JSON, "tombstone (no value), expected a JSON record")
    if not value:
        raise PoisonRecord(PoisonKind.NOT_JSON, "empty value, expected a JSON record")
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as error:
        raise PoisonRecord(PoisonKind.NOT_JSON, f"not UTF-8: {error}") from error
    try:
        return json.loads(text, parse_constant=_no_constants)
    except RecursionError as error:
        # The C scanner raises this cleanly (no state is left behind) for `[[[[...`.
        raise PoisonRecord(PoisonKind.NOT_JSON, "not JSON: nesting too deep to parse") from error
    except ValueError as error:
        # JSONDecodeError, NaN/Infinity, and int() refusing over 4,300 digits (CVE-2020-10735 limit).
        raise PoisonRecord(PoisonKind.NOT_JSON, f"not JSON: {str(error)[:300]}") from error


def check_tree(data: Any) -> None:
    """Reject what no store can hold, walking iteratively (no recursion on hostile input)."""
    stack: list[tuple[Any, int]] = [(data, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise PoisonRecord(PoisonKind.SCHEMA_INVALID, f"nesting deeper than {MAX_DEPTH} levels")
        if isinstance(node, str):
            _check_string(node)
        elif isinstance(node, float):
            if not math.isfinite(node):
                raise PoisonRecord(PoisonKind.SCHEMA_INVALID, "number out of range (not finite)")
        elif isinstance(node, dict):
            for key, item in node.items():
                _check_string(key)
                stack.append((item, depth + 1))
        elif isinstance(node, list):
            stack.extend((item, depth + 1) for item in node)


def _check_string(text: str) -> None:
    if "\x00" in text:
        raise PoisonRecord(PoisonKind.SCHEMA_INVALID, "string holds a NUL character")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as error:
            raise PoisonRecord(PoisonKind.SCHEMA_INVALID, "string holds a lone surrogate") from error


def decode_object(value: bytes | None) -> dict[str, Any]:
    """A message value as a checked JSON object (see the module table for what is poison)."""
    data = parse_json(value)
    if not isinstance(data, dict):
        raise PoisonRecord(
            PoisonKind.SCHEMA_INVALID, f"expected a JSON object, got a JSON {type(data).__name__}"
        )
    check_tree(data)
    return data


def validate(adapter: TypeAdapter[T_co], data: dict[str, Any]) -> T_co:
    """The record of `adapter`'s schema; PoisonRecord(schema_invalid) naming the first fields that fail."""
    try:
        return adapter.validate_python(data)
    except ValidationError as error:
        text = str(error).replace("\n", " ")[:MAX_SCHEMA_ERROR_CHARS]
        raise PoisonRecord(PoisonKind.SCHEMA_INVALID, text) from error
    except (ValueError, TypeError, OverflowError) as error:  # a validator that raised outside pydantic
        raise PoisonRecord(PoisonKind.SCHEMA_INVALID, f"{type(error).__name__}: {error}") from error


def json_record_decoder(adapter: TypeAdapter[T_co]) -> Callable[[bytes | None], T_co]:
    """Decode a message value as a JSON record of the given schema, classifying failures as poison."""

    def decode(value: bytes | None) -> T_co:
        return validate(adapter, decode_object(value))

    return decode


def undecodable(error: BaseException) -> PoisonRecord:
    """The catch-all: a decoder bug must dead-letter the record, not kill the consumer."""
    return PoisonRecord(PoisonKind.UNDECODABLE, f"{type(error).__name__}: {str(error)[:500]}")
