"""The gateway's guards on a plain FastAPI app: 413 for oversized bodies (declared or streamed), 400 for
malformed JSON and invalid fields, OpenAI's error object every time."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel

from deployments.http_guards import BodySizeLimit, install_error_handlers

LIMIT = 1024


class Body(BaseModel):
    name: str
    count: int


@pytest.fixture(scope="module")
def client() -> TestClient:
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/echo")
    async def echo(body: Body) -> dict[str, object]:
        return body.model_dump()

    app.add_middleware(BodySizeLimit, max_bytes=LIMIT)
    return TestClient(app)


def test_declared_oversized_body_is_413(client: TestClient) -> None:
    response = client.post("/echo", content=b"x" * (LIMIT + 1), headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert response.json()["error"]["param"] == "body"


def test_streamed_oversized_body_is_413(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(8):
            yield b"y" * 512

    response = client.post("/echo", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413


def test_body_within_the_limit_passes(client: TestClient) -> None:
    assert client.post("/echo", json={"name": "a", "count": 1}).json() == {"name": "a", "count": 1}


def test_malformed_json_is_400(client: TestClient) -> None:
    response = client.post("/echo", content=b'{"name": ', headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert "malformed JSON" in response.json()["error"]["message"]


def test_invalid_field_is_400_naming_it(client: TestClient) -> None:
    response = client.post("/echo", json={"name": "a", "count": "many"})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "count"


def test_unknown_route_is_404_in_openai_shape(client: TestClient) -> None:
    response = client.get("/nope")
    assert response.status_code == 404
    assert "error" in response.json()
