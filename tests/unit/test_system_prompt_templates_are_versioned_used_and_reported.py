"""System-prompt templates are versioned in the settings, put first in every chat the version that names one
answers (the primary's and a shadow's each its own), recorded in the inference log and returned as
`surge.prompt_version` next to `surge.version`."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import ValidationError

from deployments.flows import ChatFlow, CompletionFlow, OutcomeRecorder
from deployments.flows.shadow import ShadowMirror
from deployments.model_registry import AliasSettings, SurgeAppSettings
from deployments.model_router import ModelRouter, ServedVersion
from deployments.openai_api import ChatCompletionRequest, CompletionRequest
from deployments.openai_render import chat_response, completion_response
from deployments.principal import ANONYMOUS
from surge_core.records import InferenceLogRecord
from tests.unit.test_request_flows_run_in_order_without_http import (
    SETTINGS,
    Calls,
    FakeEmbedder,
    FakeLLM,
    FakeRetriever,
    Recorded,
)

TEMPLATES = {"concise-1": "Answer in one sentence.", "support-2": "You are a support agent."}


def _settings(**entry: Any) -> SurgeAppSettings:
    return SurgeAppSettings.model_validate(
        {"models": [{"name": "m", "version": "1", **entry}], "system_prompts": TEMPLATES}
    )


def test_a_model_naming_an_unknown_template_version_fails_at_load_time_naming_the_field() -> None:
    with pytest.raises(ValidationError, match=r"models\[m@1\]\.system_prompt_template_version: 'concise-9'"):
        _settings(system_prompt_template_version="concise-9")
    with pytest.raises(ValidationError, match="system_prompt_template_version"):
        _settings(system_prompt_template_version="has space")
    settings = _settings(system_prompt_template_version="concise-1")
    assert settings.system_prompt(settings.model_versions()[0]) == "Answer in one sentence."
    assert _settings().system_prompt(_settings().model_versions()[0]) is None


class _Flows:
    """A chat flow over m@1 (template concise-1), m@2 (no template) and the shadow m@3 (support-2)."""

    def __init__(self) -> None:
        self.calls, self.recorded = Calls(), Recorded()
        self.llms = {key: FakeLLM(self.calls) for key in ("m@1", "m@2", "m@3")}
        prompts = {"m@1": "concise-1", "m@3": "support-2"}
        versions = [
            ServedVersion(
                key=key, name="m", llm=llm, max_model_len=512,  # type: ignore[arg-type]
                prompt_version=prompts.get(key), system_prompt=TEMPLATES.get(prompts.get(key, "")),
            )
            for key, llm in self.llms.items()
        ]  # fmt: skip
        aliases = {"mirrored": AliasSettings(weights={"m@1": 1}, shadow="m@3", shadow_fraction=1.0)}
        self.router = ModelRouter(versions, "all-MiniLM-L6-v2", aliases)
        metrics = type("M", (), {"tokens": lambda self, *a: None})()
        self.outcomes = OutcomeRecorder(self.recorded, metrics, "m")  # type: ignore[arg-type]
        self.shadow_log = Recorded()
        self.shadows = ShadowMirror(self.shadow_log, queue_size=4, concurrency=1)  # type: ignore[arg-type]
        self.chat = ChatFlow(
            SETTINGS, self.router, FakeEmbedder(self.calls), FakeRetriever(self.calls), None,  # type: ignore[arg-type]
            self.outcomes, self.shadows,
        )  # fmt: skip

    def ask(self, model: str, *messages: dict[str, str]) -> dict[str, Any]:
        body = ChatCompletionRequest.model_validate({"model": model, "messages": list(messages)})
        return asyncio.run(self._ask(body))

    async def _ask(self, body: ChatCompletionRequest) -> dict[str, Any]:
        generation = await self.chat.start(body, ANONYMOUS)
        response = await chat_response(generation)
        await asyncio.sleep(0.05)  # the mirror runs once the caller's answer has ended
        return response


USER = {"role": "user", "content": "Where is Etna?"}


def test_the_answering_versions_template_comes_first_and_the_clients_system_message_stays_after_it() -> None:
    flows = _Flows()
    response = flows.ask("m@1", {"role": "system", "content": "Be polite."}, USER)
    (sent,) = flows.llms["m@1"].requests
    assert [(m["role"], m["content"]) for m in sent["messages"]] == [
        ("system", "Answer in one sentence."),
        ("system", "Be polite."),
        ("user", "Where is Etna?"),
    ]
    assert response["surge"]["version"] == "m@1" and response["surge"]["prompt_version"] == "concise-1"
    (record,) = flows.recorded.records
    assert record["prompt_version"] == "concise-1" and record["request_id"] == sent["request_id"]


def test_a_version_without_a_template_sends_the_chat_unchanged_and_returns_no_prompt_version() -> None:
    flows = _Flows()
    response = flows.ask("m@2", USER)
    (sent,) = flows.llms["m@2"].requests
    assert [m["role"] for m in sent["messages"]] == ["user"]
    assert "prompt_version" not in response["surge"] and flows.recorded.records[0]["prompt_version"] is None


def test_a_shadow_answers_with_its_own_template_and_logs_it_with_the_primary_it_mirrors() -> None:
    flows = _Flows()
    response = flows.ask("mirrored", USER)
    assert response["surge"]["prompt_version"] == "concise-1"
    (primary,) = flows.llms["m@1"].requests
    (mirrored,) = flows.llms["m@3"].requests
    assert mirrored["messages"][0] == {"role": "system", "content": "You are a support agent."}
    assert [m["role"] for m in mirrored["messages"]] == ["system", "user"]  # not the primary's template too
    (shadow_record,) = flows.shadow_log.records
    assert shadow_record["shadow"] and shadow_record["prompt_version"] == "support-2"
    assert shadow_record["shadow_of"] == primary["request_id"] and shadow_record["answer"] == "Sicily"


def test_completions_have_no_system_role_so_no_template() -> None:
    flows = _Flows()
    completion = CompletionFlow(SETTINGS.gateway, flows.router, flows.outcomes)
    body = CompletionRequest.model_validate({"model": "m@1", "prompt": "Etna is"})

    async def run() -> dict[str, Any]:
        return await completion_response(await completion.start(body, ANONYMOUS))

    response = asyncio.run(run())
    assert flows.llms["m@1"].requests[0]["prompt"] == "Etna is" and "prompt_version" not in response["surge"]


def test_the_inference_log_keeps_the_prompt_version_from_schema_2_on() -> None:
    fields = {"request_id": "r", "route": "/v1/chat/completions", "model": "m", "status_code": 200}
    assert InferenceLogRecord(**fields, latency_s=0.1, prompt_version="concise-1").schema_version == 2
    with pytest.raises(ValidationError, match="prompt_version"):
        InferenceLogRecord(**fields, latency_s=0.1, schema_version=1, prompt_version="concise-1")
