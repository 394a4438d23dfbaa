"""RetryPolicy: the documented formula, its cap and jitter bounds, validation, and call_with_retry."""

from __future__ import annotations

import random

import pytest
from pydantic import ValidationError

from surge_core.retry import RetriesExhausted, RetryPolicy, call_with_retry


def test_nominal_delay_doubles_from_the_base_until_the_cap() -> None:
    policy = RetryPolicy(base_delay_s=0.2, multiplier=2, max_delay_s=1.0, jitter=0)
    assert [policy.nominal_delay_s(n) for n in range(1, 6)] == pytest.approx([0.2, 0.4, 0.8, 1.0, 1.0])


def test_worked_example_of_the_docstring_holds() -> None:
    policy = RetryPolicy()  # max_attempts=4, base 0.2, multiplier 2, cap 5, jitter 0.5

    class Half(random.Random):
        def random(self) -> float:
            return 0.5

    assert [policy.delay_s(n, Half()) for n in (1, 2, 3)] == pytest.approx([0.15, 0.3, 0.6])
    assert policy.total_max_wait_s() == pytest.approx(1.4)


def test_jitter_only_shortens_a_wait_and_never_below_its_floor() -> None:
    policy = RetryPolicy(base_delay_s=1.0, multiplier=3, max_delay_s=4.0, jitter=0.25)
    rng = random.Random(1)
    for attempt in range(1, 20):
        nominal = policy.nominal_delay_s(attempt)
        for _ in range(50):
            assert nominal * 0.75 <= policy.delay_s(attempt, rng) <= nominal <= 4.0


def test_huge_attempt_numbers_do_not_overflow() -> None:
    assert RetryPolicy(max_delay_s=5).nominal_delay_s(10_000) == 5


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"max_attempts": 0}, "max_attempts"),
        ({"jitter": 1.5}, "jitter"),
        ({"base_delay_s": 2.0, "max_delay_s": 1.0}, "max_delay_s"),
        ({"multiplier": 0.5}, "multiplier"),
        ({"max_attemps": 3}, "max_attemps"),
    ],
)
def test_invalid_policies_are_rejected_naming_the_field(fields: dict[str, float], named: str) -> None:
    with pytest.raises(ValidationError, match=named):
        RetryPolicy(**fields)


def test_policy_is_immutable() -> None:
    with pytest.raises(ValidationError):
        RetryPolicy().max_attempts = 9  # type: ignore[misc]


def test_call_with_retry_returns_after_transient_failures_and_counts_attempts() -> None:
    calls: list[int] = []
    waits: list[float] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("not yet")
        return "ok"

    result = call_with_retry(flaky, RetryPolicy(max_attempts=5, jitter=0), sleep=waits.append)
    assert result == ("ok", 3)
    assert waits == pytest.approx([0.2, 0.4])


def test_call_with_retry_gives_up_after_max_attempts_with_the_last_error() -> None:
    waits: list[float] = []

    def broken() -> None:
        raise ValueError("always")

    with pytest.raises(RetriesExhausted) as raised:
        call_with_retry(broken, RetryPolicy(max_attempts=3, jitter=0), sleep=waits.append)
    assert raised.value.attempts == 3
    assert isinstance(raised.value.last_error, ValueError)
    assert len(waits) == 2  # no wait after the last attempt


def test_call_with_retry_stops_waiting_when_asked_to_stop() -> None:
    def broken() -> None:
        raise ValueError("always")

    with pytest.raises(RetriesExhausted) as raised:
        call_with_retry(broken, RetryPolicy(max_attempts=10), should_stop=lambda: True, sleep=lambda s: None)
    assert raised.value.attempts == 1
