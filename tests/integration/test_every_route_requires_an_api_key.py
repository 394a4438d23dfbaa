"""Every route but the health probes answers 401 without a valid API key."""

from __future__ import annotations

import httpx
import pytest
from fastapi.routing import APIRoute

from deployments.gateway import api
from deployments.http_guards import PUBLIC_PATHS
from tests.fixtures_serve import SurgeApp

pytestmark = pytest.mark.integration


def all_routes() -> list[tuple[str, str]]:
    routes = [
        (method, route.path)
        for route in api.routes
        if isinstance(route, APIRoute)
        for method in route.methods
    ]
    routes += [("GET", "/openapi.json"), ("GET", "/no/such/route")]
    return sorted(routes)


def test_the_route_walk_covers_the_openai_api() -> None:
    paths = {path for _, path in all_routes()}
    assert {
        "/v1/models",
        "/v1/embeddings",
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/documents",
    } <= paths


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong-key"}, {"Authorization": "sk-surge-test-key"}]
)
def test_protected_routes_answer_401_without_a_valid_key(
    surge_app: SurgeApp, headers: dict[str, str]
) -> None:
    for method, path in all_routes():
        if path in PUBLIC_PATHS:
            continue
        response = httpx.request(method, f"{surge_app.base_url}{path}", headers=headers, json={}, timeout=30)
        assert response.status_code == 401, f"{method} {path} -> {response.status_code}"
        assert response.json()["error"]["type"] == "authentication_error"


def test_health_probes_are_public(surge_app: SurgeApp) -> None:
    assert httpx.get(f"{surge_app.base_url}/healthz", timeout=30).status_code == 200
    ready = httpx.get(f"{surge_app.base_url}/readyz", timeout=30)
    assert ready.status_code == 200 and ready.json() == {"status": "ready"}  # the detail needs a key
    detail = httpx.get(f"{surge_app.base_url}/readyz", headers=surge_app.headers(), timeout=30)
    assert set(detail.json()["deployments"]) >= {"Gateway", "Embedder", "Retriever", "LLMServer"}


def test_the_second_configured_key_works_too(surge_app: SurgeApp) -> None:
    response = httpx.get(
        f"{surge_app.base_url}/v1/models", headers={"Authorization": "Bearer sk-second-key"}, timeout=30
    )
    assert response.status_code == 200
