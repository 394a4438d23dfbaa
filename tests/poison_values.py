"""Hypothesis strategies of message values no consumer may die on, grouped by the kind of damage.

Each strategy draws `(kind, value)`; `value` is the raw bytes a producer could have written (None: a
tombstone). `template` is a valid record of the consumer under test: many strategies damage one of its
fields, so the bad value gets past the first checks and reaches the deeper ones.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

# Valid records of each consumer: the templates the strategies damage.
DOCUMENT = {"op": "upsert", "doc_id": "doc-1", "text": "hello", "metadata": {"lang": "en"}}
EVENT = {
    "event_id": "e1",
    "entity_id": "u1",
    "event_type": "view",
    "timestamp": "2026-11-28T22:00:00Z",
    "value": 1.5,
    "text": "hi",
    "attributes": {"a": 1},
}
INFERENCE = {
    "request_id": "r1",
    "route": "/v1/chat/completions",
    "model": "m",
    "status_code": 200,
    "latency_s": 0.1,
    "retrieval_scores": [0.5],
    "prompt_embedding": [0.1, 0.2],
}

# JSON values of any shape (for wrong types and non-object documents).
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


def _with_field(template: dict[str, Any], field: str, raw_json: str) -> bytes:
    """The template as JSON with `field` set to `raw_json` verbatim (for values json.dumps cannot write)."""
    body = {k: v for k, v in template.items() if k != field}
    head = json.dumps(body)[:-1]
    sep = ", " if body else ""
    return f'{head}{sep}"{field}": {raw_json}}}'.encode("utf-8", "surrogatepass")


def deep_nesting(template: dict[str, Any]) -> st.SearchStrategy[tuple[str, bytes | None]]:
    depth = st.integers(min_value=33, max_value=150_000)  # "{\"a\":" x 150k + "}" x 150k stays under 1 MB
    opener = st.sampled_from(["[", '{"a":'])

    def build(args: tuple[int, str, bool, str]) -> bytes:
        n, open_, inside, field = args
        close = "]" if open_ == "[" else "}"
        nested = open_ * n + "1" + close * n
        return _with_field(template, field, nested) if inside else nested.encode()

    return st.tuples(depth, opener, st.booleans(), st.sampled_from(sorted(template))).map(
        lambda a: ("deep_nesting", build(a))
    )


def huge_numbers(template: dict[str, Any]) -> st.SearchStrategy[tuple[str, bytes | None]]:
    digits = st.integers(min_value=4301, max_value=50_000).map(lambda n: "9" * n)
    over_int64 = st.integers(min_value=2**63, max_value=10**80).map(str) | st.integers(
        max_value=-(2**63) - 1, min_value=-(10**80)
    ).map(str)
    overflow = st.sampled_from(["1e999", "-1e999", "1" + "0" * 400 + ".0"])
    number = digits | over_int64 | overflow
    fields = st.sampled_from([*sorted(template), "metadata.n", "attributes.n"])

    def build(args: tuple[str, str]) -> bytes:
        number, field = args
        if field.endswith(".n"):
            return _with_field(template, field.split(".")[0], '{"n": ' + number + "}")
        return _with_field(template, field, number)

    return st.tuples(number, fields).map(lambda a: ("huge_number", build(a)))


def non_finite(template: dict[str, Any]) -> st.SearchStrategy[tuple[str, bytes | None]]:
    constant = st.sampled_from(["NaN", "Infinity", "-Infinity"])
    fields = st.sampled_from([*sorted(template), "metadata.x"])
    return st.tuples(constant, fields).map(
        lambda a: (
            "nan_infinity",
            _with_field(template, a[1].split(".")[0], '{"x": ' + a[0] + "}")
            if a[1].endswith(".x")
            else _with_field(template, a[1], a[0]),
        )
    )


def invalid_utf8(template: dict[str, Any]) -> st.SearchStrategy[tuple[str, bytes | None]]:
    good = json.dumps(template).encode()
    bad_byte = st.sampled_from([b"\xff", b"\xfe", b"\xc3", b"\xed\xa0\x80", b"\x80", b"\xf8\x88\x80\x80\x80"])
    where = st.integers(min_value=0, max_value=len(good))
    spliced = st.tuples(bad_byte, where).map(lambda a: good[: a[1]] + a[0] + good[a[1] :])
    utf16 = st.just(json.dumps(template).encode("utf-16"))  # json.loads(bytes) would accept this one
    return (spliced | utf16 | st.binary(min_size=1, max_size=64).filter(_not_utf8)).map(
        lambda v: ("invalid_utf8", v)
    )


def _not_utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def nul_and_surrogates(template: dict[str, Any]) -> st.SearchStrategy[tuple[str, bytes | None]]:
    text_fields = sorted(k for k, v in template.items() if isinstance(v, str) and k not in ("op",))
    escape = st.sampled_from(["\\u0000", "\\ud800", "\\udfff", "a\\u0000b"])
    raw_nul = st.just('"a\x00b"')
    fields = st.sampled_from([*text_fields, "metadata"])

    def build(args: tuple[str, str]) -> bytes:
        value, field = args
        if field == "metadata":
            key_or_value = value if value.startswith('"') else f'"{value}"'
            return _with_field(template, field, "{" + key_or_value + ': "v"}')
        return _with_field(template, field, value if value.startswith('"') else f'"{value}"')

    return st.tuples(escape | raw_nul, fields).map(lambda a: ("nul_or_surrogate", build(a)))


def non_objects() -> st.SearchStrategy[tuple[str, bytes | None]]:
    top = JSON_VALUES.filter(lambda v: not isinstance(v, dict))
    return top.map(lambda v: ("non_object", json.dumps(v).encode()))


def wrong_types(template: dict[str, Any]) -> st.SearchStrategy[tuple[str, bytes | None]]:
    fields = st.sampled_from([*sorted(template), "unknown_field"])
    return st.tuples(fields, JSON_VALUES).map(
        lambda a: ("wrong_type", json.dumps({**template, a[0]: a[1]}).encode())
    )


def empty_values() -> st.SearchStrategy[tuple[str, bytes | None]]:
    return st.sampled_from([None, b"", b" ", b"\n", b"\x00", b"null", b"{}"]).map(lambda v: ("empty", v))


def garbage() -> st.SearchStrategy[tuple[str, bytes | None]]:
    return st.binary(max_size=256).map(lambda v: ("random_bytes", v))


def bad_values(template: dict[str, Any]) -> st.SearchStrategy[tuple[str, bytes | None]]:
    """Every kind above, for records shaped like `template`."""
    return st.one_of(
        deep_nesting(template),
        huge_numbers(template),
        non_finite(template),
        invalid_utf8(template),
        nul_and_surrogates(template),
        non_objects(),
        wrong_types(template),
        empty_values(),
        garbage(),
    )


KINDS = (
    "deep_nesting",
    "huge_number",
    "nan_infinity",
    "invalid_utf8",
    "nul_or_surrogate",
    "non_object",
    "wrong_type",
    "empty",
    "random_bytes",
)
