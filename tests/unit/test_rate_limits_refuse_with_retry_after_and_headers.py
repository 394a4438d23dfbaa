"""Per-principal limits: a request bucket, a token bucket charged after use, and a concurrency cap; a 429
carries Retry-After and the x-ratelimit-* headers; tenants get their overrides."""

from __future__ import annotations

import time

import pytest

from deployments.openai_api import ApiError
from deployments.principal import Principal
from deployments.rate_limits import RateLimiter, TokenBucket, TokenBucketPolicy
from deployments.settings import RateLimitSettings

ACME = Principal("acme-app", "acme", frozenset({"inference"}))
OTHER = Principal("other-app", "default", frozenset({"inference"}))


def _limiter(**acme: object) -> RateLimiter:
    return RateLimiter(
        RateLimitSettings.model_validate({"default": {}, "tenants": {"acme": {"burst_s": 1, **acme}}})
    )


def test_the_bucket_policy_matches_its_worked_example() -> None:
    policy = TokenBucketPolicy(per_minute=600, burst_s=1)
    assert policy.rate_per_s == 10 and policy.capacity == 10
    bucket = TokenBucket(policy)
    now = bucket.updated
    assert sum(bucket.try_take(1, now) for _ in range(50)) == 10
    assert sum(bucket.try_take(1, now + 0.3) for _ in range(50)) == 3
    bucket.level = -2.5
    assert bucket.retry_after_s(1) == pytest.approx(0.35)


def test_a_burst_over_the_request_rate_gets_429_with_retry_after_and_ratelimit_headers() -> None:
    limiter = _limiter(requests_per_minute=120)  # 2/s, bucket of 2
    for _ in range(2):
        admission = limiter.admit(ACME)
        assert admission.headers["x-ratelimit-limit-requests"] == "120"
        admission.release()
    with pytest.raises(ApiError) as refused:
        limiter.admit(ACME)
    error = refused.value
    assert error.status_code == 429 and error.error_type == "rate_limit_error"
    assert error.headers["Retry-After"] == "1"
    assert error.headers["x-ratelimit-remaining-requests"] == "0"
    assert set(error.headers) >= {"x-ratelimit-limit-requests", "x-ratelimit-reset-requests"}
    assert "acme-app" in error.message


def test_limits_are_per_tenant_override_and_other_principals_are_unaffected() -> None:
    limiter = _limiter(requests_per_minute=60)
    limiter.admit(ACME).release()
    with pytest.raises(ApiError):
        limiter.admit(ACME)
    for _ in range(100):  # the default tenant has no limit here
        limiter.admit(OTHER).release()


def test_the_concurrency_cap_counts_requests_until_they_are_released() -> None:
    limiter = _limiter(max_concurrent=2)
    first, second = limiter.admit(ACME), limiter.admit(ACME)
    with pytest.raises(ApiError, match="more than 2 concurrent"):
        limiter.admit(ACME)
    first.release()
    first.release()  # releasing twice frees one slot, not two
    third = limiter.admit(ACME)
    with pytest.raises(ApiError):
        limiter.admit(ACME)
    second.release(), third.release()


def test_tokens_are_charged_after_use_and_a_bucket_in_debt_refuses_until_refilled() -> None:
    limiter = _limiter(tokens_per_minute=6000)  # 100 tokens/s, bucket of 100
    admission = limiter.admit(ACME)
    admission.spend_tokens(150)  # the generation used more than the bucket held: 50 in debt
    admission.release()
    with pytest.raises(ApiError) as refused:
        limiter.admit(ACME)
    assert refused.value.headers["Retry-After"] == "1"
    assert refused.value.headers["x-ratelimit-remaining-tokens"] == "0"
    time.sleep(0.6)
    limiter.admit(ACME).release()
