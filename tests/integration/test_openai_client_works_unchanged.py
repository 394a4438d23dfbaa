"""The official `openai` client talks to surge unchanged: base_url + api_key, streaming too."""

from __future__ import annotations

import openai
import pytest

from tests.fixtures_serve import SurgeApp

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def client(surge_app: SurgeApp) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{surge_app.base_url}/v1", api_key=surge_app.api_key, timeout=300)


def test_models_lists_the_llm_its_rag_alias_and_the_embedding_model(client: openai.OpenAI) -> None:
    ids = {model.id for model in client.models.list()}
    assert {"tiny-llama", "rag/tiny-llama", "all-MiniLM-L6-v2"} <= ids


def test_embeddings_have_384_normalised_dimensions_and_usage(client: openai.OpenAI) -> None:
    response = client.embeddings.create(model="all-MiniLM-L6-v2", input=["a cat sat", "stock markets fell"])
    assert [item.index for item in response.data] == [0, 1]
    vector = response.data[0].embedding
    assert len(vector) == 384
    assert abs(sum(x * x for x in vector) - 1.0) < 1e-3
    assert response.usage.prompt_tokens > 0


def test_similar_texts_embed_closer_than_unrelated_ones(client: openai.OpenAI) -> None:
    data = client.embeddings.create(
        model="all-MiniLM-L6-v2", input=["the cat sleeps", "a kitten is sleeping", "quarterly tax filing"]
    ).data
    a, b, c = (item.embedding for item in data)
    dot = lambda x, y: sum(p * q for p, q in zip(x, y, strict=True))  # noqa: E731
    assert dot(a, b) > dot(a, c)


def test_chat_completion_returns_text_and_usage(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(
        model="tiny-llama", messages=[{"role": "user", "content": "Say hello"}], max_tokens=12, temperature=0
    )
    choice = response.choices[0]
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str)
    assert choice.finish_reason in {"stop", "length"}
    assert response.usage is not None
    assert response.usage.prompt_tokens > 0
    assert 0 < response.usage.completion_tokens <= 12
    assert response.usage.total_tokens == response.usage.prompt_tokens + response.usage.completion_tokens


def test_max_tokens_bounds_the_output(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(
        model="tiny-llama",
        messages=[{"role": "user", "content": "Count"}],
        max_tokens=5,
        temperature=0,
    )
    assert response.usage is not None and response.usage.completion_tokens <= 5


def test_streaming_chat_yields_deltas_that_add_up_and_usage_at_the_end(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="tiny-llama",
        messages=[{"role": "user", "content": "Tell me a story"}],
        max_tokens=16,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, finish, usage = [], None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    assert finish in {"stop", "length"}
    assert usage is not None and usage.completion_tokens > 0
    full = client.chat.completions.create(
        model="tiny-llama",
        messages=[{"role": "user", "content": "Tell me a story"}],
        max_tokens=16,
        temperature=0,
    )
    assert "".join(pieces) == full.choices[0].message.content


def test_text_completion_works(client: openai.OpenAI) -> None:
    response = client.completions.create(
        model="tiny-llama", prompt="Once upon a time", max_tokens=8, temperature=0
    )
    assert isinstance(response.choices[0].text, str)
    assert response.usage is not None and response.usage.completion_tokens > 0


def test_unknown_model_is_a_404_naming_the_served_one(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError, match="tiny-llama"):
        client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "hi"}])


def test_wrong_api_key_is_rejected(surge_app: SurgeApp) -> None:
    bad = openai.OpenAI(base_url=f"{surge_app.base_url}/v1", api_key="nope")
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
