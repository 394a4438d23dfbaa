"""Tenancy x scope matrix over every route of the real app (Ray Serve over HTTP): for each route, a key of
the owning tenant may act, a key of another tenant can neither see, change nor delete the owner's data, and
a key without the route's scope gets a 403. /readyz answers anyone with its status only; a key adds the
per-stage detail."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from surge_core.feature_store import OffsetRange, PartitionRange, open_online_store
from tests.fixtures_serve import SurgeApp

pytestmark = pytest.mark.integration

ACME, GLOBEX, NO_SCOPES = "sk-acme-all", "sk-globex-all", "sk-acme-nothing"
SECRET = {"acme": "The acme vault opens with code 4711.", "globex": "The globex vault opens with code 9000."}
RESULTS: dict[str, str] = {}


def call(
    app: SurgeApp, key: str, method: str, path: str, body: dict[str, Any] | None = None
) -> httpx.Response:
    return httpx.request(
        method, f"{app.base_url}{path}", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=300
    )


def rag(app: SurgeApp, key: str, **extra: Any) -> httpx.Response:
    body = {
        "model": "rag/tiny-llama",
        "messages": [{"role": "user", "content": "Which code opens the vault?"}],
        "max_tokens": 2,
        **extra,
    }
    return call(app, key, "POST", "/v1/chat/completions", body)


def source_texts(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return " ".join(s["text"] for s in response.json()["sources"])


@pytest.fixture(scope="module")
def two_tenants(surge_app: SurgeApp) -> SurgeApp:
    """acme and globex each write a document with the same id `vault`."""
    for key, tenant in ((ACME, "acme"), (GLOBEX, "globex")):
        doc = {"id": "vault", "text": SECRET[tenant], "metadata": {"kind": "vault"}}
        response = call(surge_app, key, "POST", "/v1/documents", {"documents": [doc]})
        assert response.status_code == 200, response.text
        assert response.json()["chunks_written"] == 1
    return surge_app


def test_retrieval_returns_only_the_callers_tenant_even_with_a_widening_filter(two_tenants: SurgeApp) -> None:
    for key, mine, theirs in ((ACME, "acme", "globex"), (GLOBEX, "globex", "acme")):
        for retrieval in (None, {"filter": {"kind": ["vault", "other"]}}, {"top_k": 50}):
            extra = {"retrieval": retrieval} if retrieval else {}
            texts = source_texts(rag(two_tenants, key, **extra))
            assert SECRET[mine] in texts and SECRET[theirs] not in texts, (key, retrieval)
    # The default tenant (the test key, an admin) sees neither tenant's documents.
    default_texts = source_texts(rag(two_tenants, two_tenants.api_key))
    assert SECRET["acme"] not in default_texts and SECRET["globex"] not in default_texts
    RESULTS["retrieve"] = "own tenant sees own, other tenant and default see nothing of it"


def test_another_tenant_can_neither_overwrite_nor_delete_and_cannot_claim_the_tenant(
    two_tenants: SurgeApp,
) -> None:
    # globex deletes `vault`: its own goes, acme's stays.
    deleted = call(two_tenants, GLOBEX, "POST", "/v1/documents", {"delete": ["vault"]})
    assert deleted.status_code == 200 and deleted.json()["chunks_deleted"] == 1
    assert SECRET["acme"] in source_texts(rag(two_tenants, ACME))
    assert SECRET["acme"] not in source_texts(rag(two_tenants, GLOBEX))
    # globex naming acme as the tenant (what a forged Kafka record through the HTTP sink would do): 403.
    forged = {"tenant": "acme", "documents": [{"id": "vault", "text": "overwritten by globex"}]}
    refused = call(two_tenants, GLOBEX, "POST", "/v1/documents", forged)
    assert refused.status_code == 403 and refused.json()["error"]["param"] == "tenant"
    forged_delete = call(
        two_tenants, GLOBEX, "POST", "/v1/documents", {"tenant": "acme", "delete": ["vault"]}
    )
    assert forged_delete.status_code == 403
    assert SECRET["acme"] in source_texts(rag(two_tenants, ACME))
    # Its own tenant named explicitly works.
    own = {"tenant": "globex", "documents": [{"id": "vault", "text": SECRET["globex"]}]}
    assert call(two_tenants, GLOBEX, "POST", "/v1/documents", own).status_code == 200
    RESULTS["documents"] = "other tenant's delete/upsert touch only its own; naming another tenant -> 403"


def test_user_features_are_read_only_within_the_callers_tenant(two_tenants: SurgeApp) -> None:
    start = datetime(2026, 11, 29, 10, tzinfo=UTC)
    row = {
        "entity_id": "acme/alice", "window_start": start, "window_end": start, "event_count": 7,
        "value_count": 0, "value_sum": 0.0, "value_max": 0.0, "event_type_counts": "{}",
        "first_event_at": start, "last_event_at": start, "text_count": 0, "text_embedding": None,
    }  # fmt: skip
    store = open_online_store(two_tenants.settings.gateway.online_features)
    store.apply(OffsetRange.of("events", [PartitionRange(1, 0, 1)]), [row])
    store.close()
    body = {"model": "tiny-llama", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    mine = call(two_tenants, ACME, "POST", "/v1/chat/completions", {**body, "user": "alice"})
    assert mine.status_code == 200, mine.text
    assert mine.json()["features"]["event_count"] == 7
    other = call(two_tenants, GLOBEX, "POST", "/v1/chat/completions", {**body, "user": "alice"})
    assert other.status_code == 200 and "features" not in other.json()
    escape = call(
        two_tenants, two_tenants.api_key, "POST", "/v1/chat/completions", {**body, "user": "acme/alice"}
    )
    assert escape.status_code == 400 and escape.json()["error"]["param"] == "user"
    RESULTS["features"] = "own tenant reads its user; other tenant gets none; default cannot name acme/alice"


ROUTES: list[tuple[str, str, dict[str, Any] | None, str]] = [
    ("POST", "/v1/embeddings", {"model": "all-MiniLM-L6-v2", "input": "x"}, "embeddings"),
    (
        "POST",
        "/v1/chat/completions",
        {"model": "tiny-llama", "messages": [{"role": "user", "content": "x"}], "max_tokens": 1},
        "inference",
    ),
    ("POST", "/v1/completions", {"model": "tiny-llama", "prompt": "x", "max_tokens": 1}, "inference"),
    ("POST", "/v1/documents", {"documents": [{"id": "n", "text": "t"}]}, "documents:write"),
    ("POST", "/v1/documents", {"delete": ["vault"]}, "documents:write"),
]


@pytest.mark.parametrize(("method", "path", "body", "scope"), ROUTES)
def test_a_key_without_the_routes_scope_gets_403_and_changes_nothing(
    two_tenants: SurgeApp, method: str, path: str, body: dict[str, Any], scope: str
) -> None:
    refused = call(two_tenants, NO_SCOPES, method, path, body)
    assert refused.status_code == 403, refused.text
    assert (
        refused.json()["error"]["type"] == "permission_error" and scope in refused.json()["error"]["message"]
    )
    assert SECRET["acme"] in source_texts(rag(two_tenants, ACME))  # the delete did nothing
    allowed = call(two_tenants, GLOBEX, method, path, body)
    assert allowed.status_code == 200, allowed.text


def test_models_need_only_a_valid_key_and_rag_needs_documents_read(two_tenants: SurgeApp) -> None:
    assert call(two_tenants, NO_SCOPES, "GET", "/v1/models").status_code == 200
    no_read = call(two_tenants, "sk-limited", "POST", "/v1/chat/completions",
                   {"model": "rag/tiny-llama", "messages": [{"role": "user", "content": "x"}], "max_tokens": 1})  # fmt: skip
    assert no_read.status_code == 403 and "documents:read" in no_read.json()["error"]["message"]


def test_readyz_tells_anyone_the_status_and_only_a_key_the_detail(two_tenants: SurgeApp) -> None:
    public = httpx.get(f"{two_tenants.base_url}/readyz", timeout=30)
    assert public.status_code == 200 and public.json() == {"status": "ready"}
    wrong = httpx.get(f"{two_tenants.base_url}/readyz", headers={"Authorization": "Bearer nope"}, timeout=30)
    assert wrong.json() == {"status": "ready"}
    detail = httpx.get(f"{two_tenants.base_url}/readyz", headers=two_tenants.headers(), timeout=30).json()
    assert detail["status"] == "ready" and set(detail["deployments"]) >= {"Gateway", "LLMServer"}
