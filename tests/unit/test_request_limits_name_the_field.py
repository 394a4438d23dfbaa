"""Request limits: 400 with a message naming the field, before any stage is called."""

from __future__ import annotations

import pytest

from deployments.openai_api import ApiError, ChatCompletionRequest, CompletionRequest, check_limits
from deployments.settings import GatewaySettings

SETTINGS = GatewaySettings(
    max_prompt_chars=100, max_tokens_limit=64, default_max_tokens=16, max_stop_sequences=2
)


def chat(**fields: object) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields}
    )


def test_default_max_tokens_applies_when_none_is_given() -> None:
    assert check_limits(chat(), SETTINGS) == 16


def test_max_tokens_over_the_limit_is_rejected() -> None:
    with pytest.raises(ApiError) as error:
        check_limits(chat(max_tokens=65), SETTINGS)
    assert error.value.status_code == 400
    assert error.value.param == "max_tokens"
    assert "65" in error.value.message and "64" in error.value.message


def test_max_completion_tokens_counts_as_max_tokens() -> None:
    with pytest.raises(ApiError, match="max_tokens"):
        check_limits(chat(max_completion_tokens=100), SETTINGS)


def test_too_many_stop_sequences_are_rejected() -> None:
    with pytest.raises(ApiError) as error:
        check_limits(chat(stop=["a", "b", "c"]), SETTINGS)
    assert error.value.param == "stop"


def test_empty_stop_sequence_is_rejected() -> None:
    with pytest.raises(ApiError, match="stop"):
        check_limits(chat(stop=[""]), SETTINGS)


def test_long_prompt_is_rejected_naming_messages_or_prompt() -> None:
    with pytest.raises(ApiError) as error:
        check_limits(chat(messages=[{"role": "user", "content": "x" * 101}]), SETTINGS)
    assert error.value.param == "messages"
    with pytest.raises(ApiError) as error:
        check_limits(CompletionRequest(model="m", prompt="x" * 101), SETTINGS)
    assert error.value.param == "prompt"


def test_rag_is_asked_by_model_alias_or_retrieval_field() -> None:
    assert chat(model="rag/m").wants_rag
    assert chat(model="rag/m").base_model == "m"
    assert chat(retrieval={"top_k": 2}).wants_rag
    assert not chat().wants_rag


def test_more_than_one_choice_is_rejected() -> None:
    with pytest.raises(ValueError, match="n"):
        chat(n=2)


def test_non_text_content_parts_are_rejected() -> None:
    request = chat(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}])
    with pytest.raises(ApiError, match="only text"):
        request.prompt_chars()
