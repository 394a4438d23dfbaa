"""Keys map to principals (name, tenant, scopes); the keys file holds only sha256 hashes and is re-read when
it changes; SURGE_API_KEYS keys are admins of the default tenant; a key never reaches a log."""

from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path

import pytest
import yaml

from deployments.api_keys import ApiKeyAuth
from deployments.http_guards import admit
from deployments.openai_api import ApiError
from deployments.rate_limits import RateLimiter
from deployments.settings import GatewaySettings, RateLimitSettings


def _write(path: Path, principals: dict[str, tuple[str, str, list[str]]]) -> None:
    rows = [
        {
            "name": name,
            "tenant": tenant,
            "scopes": scopes,
            "key_sha256": hashlib.sha256(k.encode()).hexdigest(),
        }
        for k, (name, tenant, scopes) in principals.items()
    ]
    path.write_text(yaml.safe_dump({"principals": rows}), encoding="utf-8")


def _auth(path: Path, monkeypatch: pytest.MonkeyPatch, env: str = "") -> ApiKeyAuth:
    monkeypatch.setenv("SURGE_API_KEYS", env)
    return ApiKeyAuth(GatewaySettings(api_keys_file=str(path), api_keys_reload_s=0.01))


def test_a_key_of_the_file_is_its_principal_and_the_file_holds_no_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "keys.yaml"
    _write(path, {"sk-acme-1": ("acme-app", "acme", ["inference"])})
    assert "sk-acme-1" not in path.read_text()
    principal = _auth(path, monkeypatch).check("Bearer sk-acme-1")
    assert (principal.name, principal.tenant, principal.scopes) == ("acme-app", "acme", {"inference"})


def test_a_changed_file_is_picked_up_without_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "keys.yaml"
    _write(path, {"sk-old": ("old", "acme", ["inference"])})
    auth = _auth(path, monkeypatch)
    auth.check("Bearer sk-old")
    _write(path, {"sk-new": ("new", "acme", ["inference"])})
    os.utime(path, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    time.sleep(0.05)
    assert auth.check("Bearer sk-new").name == "new"
    with pytest.raises(ApiError) as revoked:
        auth.check("Bearer sk-old")
    assert revoked.value.status_code == 401


def test_a_broken_file_keeps_the_previous_principals(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "keys.yaml"
    _write(path, {"sk-kept": ("kept", "acme", ["inference"])})
    auth = _auth(path, monkeypatch)
    path.write_text("principals: [{name: x, scopes: [fly]}]", encoding="utf-8")
    os.utime(path, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    time.sleep(0.05)
    with caplog.at_level(logging.ERROR, logger="ray.serve"):
        assert auth.check("Bearer sk-kept").name == "kept"
    assert "not reloaded" in caplog.text


def test_env_keys_are_admins_of_the_default_tenant_named_by_hash_not_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "keys.yaml"
    _write(path, {})
    with caplog.at_level(logging.DEBUG):
        principal = _auth(path, monkeypatch, env="sk-simple-secret").check("Bearer sk-simple-secret")
    assert principal.tenant == "default" and principal.allows("documents:write")
    assert "secret" not in principal.name and "sk-simple-secret" not in caplog.text


@pytest.mark.parametrize(
    ("route", "scopes", "status"),
    [
        ("/v1/chat/completions", ["embeddings"], 403),
        ("/v1/embeddings", ["inference"], 403),
        ("/v1/documents", ["documents:read"], 403),
        ("/v1/documents", ["documents:write"], None),
        ("/v1/models", ["documents:read"], None),
    ],
)
def test_a_route_needs_its_scope(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, route: str, scopes: list[str], status: int | None
) -> None:
    path = tmp_path / "keys.yaml"
    _write(path, {"sk-k": ("p", "acme", scopes)})
    auth, limiter = _auth(path, monkeypatch), RateLimiter(RateLimitSettings())
    if status is None:
        assert admit(auth, limiter, route, "Bearer sk-k").caller.principal.name == "p"
        return
    with pytest.raises(ApiError) as refused:
        admit(auth, limiter, route, "Bearer sk-k")
    assert refused.value.status_code == status and refused.value.error_type == "permission_error"
