"""Redaction of personal data and secrets from text that leaves the request path (the inference log).

A `RedactionPolicy` is an ordered tuple of (name, pattern); each match is replaced by `[<name>]`. Order
matters: keys before phone numbers, so the digits of a key are not half-read as a phone number.
Worked example with `PROMPT_REDACTION`:
"mail ann@example.com or +44 20 7946 0958, key sk-abc123def456ghi789" ->
"mail [email] or [phone], key [key]".
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class RedactionPolicy:
    patterns: tuple[tuple[str, re.Pattern[str]], ...]

    def apply(self, text: str) -> str:
        for name, pattern in self.patterns:
            text = pattern.sub(f"[{name}]", text)
        return text


PROMPT_REDACTION = RedactionPolicy(
    (
        ("email", re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")),
        # API keys and tokens: common prefixes (sk-, pk_, ghp_, AKIA, xox?-), bearer tokens, JWTs.
        (
            "key",
            re.compile(
                r"\b(?:sk|pk|rk)[-_][A-Za-z0-9_-]{8,}|\bgh[pousr]_[A-Za-z0-9]{20,}|\bAKIA[0-9A-Z]{16}\b"
                r"|\bxox[abpr]-[A-Za-z0-9-]{10,}|(?i:bearer)\s+[A-Za-z0-9._~+/=-]{12,}"
                r"|\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"
            ),
        ),
        # Phone numbers: 7+ digits with optional +country code, spaces, dots, dashes or brackets between.
        ("phone", re.compile(r"(?<![\w])\+?\d[\d .()-]{5,}\d(?![\w])")),
    )
)
