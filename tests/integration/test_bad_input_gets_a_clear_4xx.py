"""Malformed or oversized requests get a 4xx with a message naming the problem, never a 500."""

from __future__ import annotations

import httpx
import pytest

from tests.fixtures_serve import SurgeApp

pytestmark = pytest.mark.integration

CHAT = "/v1/chat/completions"


def post(app: SurgeApp, path: str, **kwargs: object) -> httpx.Response:
    return httpx.post(f"{app.base_url}{path}", headers=app.headers(), timeout=120, **kwargs)  # type: ignore[arg-type]


def error_of(response: httpx.Response) -> dict[str, object]:
    return response.json()["error"]  # type: ignore[no-any-return]


def test_body_over_the_limit_is_413(surge_app: SurgeApp) -> None:
    huge = "x" * (surge_app.settings.gateway.max_body_bytes + 10)
    response = post(
        surge_app, CHAT, json={"model": "tiny-llama", "messages": [{"role": "user", "content": huge}]}
    )
    assert response.status_code == 413
    assert "exceeds" in str(error_of(response)["message"])


def test_chunked_body_over_the_limit_is_413(surge_app: SurgeApp) -> None:
    def chunks():  # type: ignore[no-untyped-def]
        for _ in range(100):
            yield b"x" * 1024

    response = post(surge_app, CHAT, content=chunks())
    assert response.status_code == 413


def test_malformed_json_is_400(surge_app: SurgeApp) -> None:
    response = httpx.post(
        f"{surge_app.base_url}{CHAT}",
        content=b'{"model": "tiny-llama", "messages": [',
        headers={**surge_app.headers(), "Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 400
    assert "JSON" in str(error_of(response)["message"])


def test_missing_field_is_400_naming_it(surge_app: SurgeApp) -> None:
    response = post(surge_app, CHAT, json={"model": "tiny-llama"})
    assert response.status_code == 400
    assert error_of(response)["param"] == "messages"


def test_wrong_type_is_400_naming_the_field(surge_app: SurgeApp) -> None:
    response = post(
        surge_app,
        CHAT,
        json={"model": "tiny-llama", "messages": [{"role": "user", "content": "hi"}], "temperature": "hot"},
    )
    assert response.status_code == 400
    assert error_of(response)["param"] == "temperature"


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"max_tokens": 100_000}, "max_tokens"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ],
)
def test_limits_are_400_naming_the_field(surge_app: SurgeApp, extra: dict[str, object], field: str) -> None:
    body = {"model": "tiny-llama", "messages": [{"role": "user", "content": "hi"}], **extra}
    response = post(surge_app, CHAT, json=body)
    assert response.status_code == 400
    assert error_of(response)["param"] == field


def test_prompt_over_the_character_limit_is_400(surge_app: SurgeApp) -> None:
    limit = surge_app.settings.gateway.max_prompt_chars
    body = {"model": "tiny-llama", "prompt": "y" * (limit + 1)}
    response = post(surge_app, "/v1/completions", json=body)
    assert response.status_code in {400, 413}
    if response.status_code == 400:
        assert error_of(response)["param"] == "prompt"


def test_prompt_longer_than_the_context_window_is_400(surge_app: SurgeApp) -> None:
    words = " ".join(f"w{i}" for i in range(3000))
    response = post(surge_app, "/v1/completions", json={"model": "tiny-llama", "prompt": words[:15_000]})
    assert response.status_code == 400, response.text


def test_embedding_input_errors_are_400(surge_app: SurgeApp) -> None:
    assert (
        post(surge_app, "/v1/embeddings", json={"model": "all-MiniLM-L6-v2", "input": []}).status_code == 400
    )
    assert (
        post(surge_app, "/v1/embeddings", json={"model": "all-MiniLM-L6-v2", "input": [""]}).status_code
        == 400
    )
    assert (
        post(surge_app, "/v1/embeddings", json={"model": "all-MiniLM-L6-v2", "input": [1, 2]}).status_code
        == 400
    )


def test_document_errors_are_400(surge_app: SurgeApp) -> None:
    assert post(surge_app, "/v1/documents", json={}).status_code == 400
    bad_id = post(surge_app, "/v1/documents", json={"documents": [{"id": "../etc", "text": "x"}]})
    assert bad_id.status_code == 400
    assert "documents.0.id" in str(error_of(bad_id)["param"])


@pytest.mark.parametrize(
    "body",
    [
        {"documents": [{"id": "a", "text": "x", "metadata": {"n": 2**63}}]},
        {"documents": [{"id": "a", "text": "nul \u0000 byte"}]},
        {"documents": [{"id": "a", "text": "x"}, {"id": "a", "text": "y"}]},
    ],
    ids=["integer over 2^63", "NUL byte", "duplicate ids"],
)
def test_values_the_store_cannot_hold_are_400_not_500(surge_app: SurgeApp, body: dict[str, object]) -> None:
    response = post(surge_app, "/v1/documents", json=body)
    assert response.status_code == 400, response.text


def test_a_filter_too_large_for_the_store_is_400_not_500(surge_app: SurgeApp) -> None:
    body = {
        "model": "tiny-llama",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 1,
        "retrieval": {"filter": {"lang": [f"v{i}" for i in range(5000)]}},
    }
    assert post(surge_app, CHAT, json=body).status_code == 400
