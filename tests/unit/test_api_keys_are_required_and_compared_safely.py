"""API keys: required unless a loud dev flag is set; wrong or missing keys are a 401."""

from __future__ import annotations

import logging

import pytest

from deployments.http_guards import PUBLIC_PATHS, ApiKeyAuth, app_path
from deployments.openai_api import ApiError
from deployments.settings import GatewaySettings


def test_gateway_refuses_to_start_without_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SURGE_API_KEYS", raising=False)
    with pytest.raises(RuntimeError, match="SURGE_API_KEYS"):
        ApiKeyAuth(GatewaySettings())


def test_dev_flag_allows_no_keys_and_says_so_loudly(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("SURGE_API_KEYS", raising=False)
    with caplog.at_level(logging.WARNING, logger="ray.serve"):
        auth = ApiKeyAuth(GatewaySettings(allow_unauthenticated=True))
    auth.check(None)
    assert "WITHOUT an API key" in caplog.text


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer wrong", "Basic k1", "k1"])
def test_missing_or_wrong_key_is_401(monkeypatch: pytest.MonkeyPatch, header: str | None) -> None:
    monkeypatch.setenv("SURGE_API_KEYS", "k1, k2")
    auth = ApiKeyAuth(GatewaySettings())
    with pytest.raises(ApiError) as error:
        auth.check(header)
    assert error.value.status_code == 401


def test_any_configured_key_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SURGE_API_KEYS", "k1, k2")
    auth = ApiKeyAuth(GatewaySettings())
    auth.check("Bearer k1")
    auth.check("bearer k2")


def test_keys_never_appear_in_logs(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("SURGE_API_KEYS", "super-secret-key")
    with caplog.at_level(logging.DEBUG):
        auth = ApiKeyAuth(GatewaySettings())
        with pytest.raises(ApiError):
            auth.check("Bearer super-secret-guess")
    assert "super-secret" not in caplog.text


@pytest.mark.parametrize(
    ("path", "root_path", "expected"),
    [("/healthz", "", "/healthz"), ("/api/healthz", "/api", "/healthz"), ("/api", "/api", "/")],
)
def test_health_probes_stay_public_under_a_route_prefix(path: str, root_path: str, expected: str) -> None:
    assert app_path({"path": path, "root_path": root_path}) == expected
    assert (expected in PUBLIC_PATHS) == expected.endswith("z")
