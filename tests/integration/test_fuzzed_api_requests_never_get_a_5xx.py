"""Schemathesis against the gateway's own OpenAPI schema (generated offline from the FastAPI app), with a
valid key, on the real app: no fuzzed request gets a 5xx, and a request refused with a 4xx changes nothing
(the index holds the same chunks and documents before and after it)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from deployments.gateway import api
from tests.fixtures_serve import SurgeApp

pytestmark = pytest.mark.integration

schema = schemathesis.openapi.from_dict(api.openapi())
COUNTS: Counter[str] = Counter()
OPERATIONS: set[str] = set()
SERVER_ERRORS: list[str] = []
EXAMPLES_PER_OPERATION = 40


def index_state() -> Any:
    from ray import serve

    stats = serve.get_deployment_handle("Retriever", app_name="surge").stats.remote().result(timeout_s=60)
    return (stats["chunks"], stats["documents"])


@schema.parametrize()
@settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, suppress_health_check=list(HealthCheck))
def test_fuzzed_requests_get_no_5xx_and_a_4xx_changes_nothing(case: Any, surge_app: SurgeApp) -> None:
    operation = f"{case.method} {case.path}"
    OPERATIONS.add(operation)
    writes = case.path == "/v1/documents"
    before = index_state() if writes else None
    response = case.call(base_url=surge_app.base_url, headers=surge_app.headers(), timeout=300)
    COUNTS["cases"] += 1
    COUNTS[f"{response.status_code // 100}xx"] += 1
    if response.status_code >= 500:
        SERVER_ERRORS.append(f"{operation} {response.status_code}: {response.text[:300]}")
    assert response.status_code < 500, f"{operation} -> {response.status_code}: {response.text[:500]}"
    if writes and 400 <= response.status_code < 500:
        assert index_state() == before, f"a {response.status_code} on /v1/documents changed the index"


def test_zz_the_fuzzing_saw_every_operation_and_no_server_error() -> None:
    print(f"\nschemathesis: {len(OPERATIONS)} operations, {COUNTS['cases']} cases, {dict(COUNTS)}")
    print("operations:", sorted(OPERATIONS))
    assert COUNTS["cases"] > 0 and SERVER_ERRORS == []
