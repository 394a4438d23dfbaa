"""Timeouts on the way back from the LLM: a stream whose replica goes quiet ends after the idle timeout with
an error event and [DONE]; a replica that fails in the middle of a non-streamed generation gives a clean
502 and the request is still logged; a slow online-feature read is dropped and the answer goes on."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from deployments import openai_render
from deployments.flows import Generation, OutcomeRecorder
from deployments.openai_api import ApiError
from deployments.request_timeline import Timeline
from deployments.settings import AutoscalingSettings
from deployments.stage_client import LLMClient, StageWaits

FIRST = {"text": "Once", "finish_reason": None, "prompt_tokens": 5, "completion_tokens": 1}


class Replica:
    """What the gateway holds of a streamed call: `__anext__` and `cancel`. `hang` never answers again;
    `fail` raises as a replica that died mid-generation does."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.cancelled = False

    def __aiter__(self) -> Replica:
        return self

    async def __anext__(self) -> dict[str, Any]:
        if self.mode == "hang":
            await asyncio.sleep(3600)
        raise RuntimeError("ActorDiedError: the replica died")

    def cancel(self) -> None:
        self.cancelled = True


def _client(idle_s: float) -> LLMClient:
    return LLMClient(
        "llm", "LLMServer", None, None, StageWaits(1, 1),  # type: ignore[arg-type]
        autoscaling=AutoscalingSettings(), chain_wake=False, idle_timeout_s=idle_s,
    )  # fmt: skip


class Log:
    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def record(self, **fields: Any) -> None:
        self.records.append(fields)


def _generation(replica: Replica, log: Log, idle_s: float = 0.3) -> Generation:
    deltas = _client(idle_s)._rest(FIRST, replica)  # type: ignore[arg-type]
    metrics = type("M", (), {"tokens": lambda self, *a: None})()
    recorder = OutcomeRecorder(log, metrics, "m")  # type: ignore[arg-type]
    timeline = Timeline()
    return Generation(
        "m", recorder.recorded(deltas, route="/r", prompt="p", timeline=timeline, hits=[]), timeline
    )


def test_a_stream_from_a_hung_replica_ends_with_an_error_event_and_done_within_the_idle_timeout() -> None:
    replica, log = Replica("hang"), Log()

    async def run() -> list[str]:
        return [event async for event in openai_render.chat_events(_generation(replica, log), False)]

    started = time.monotonic()
    events = asyncio.run(run())
    assert time.monotonic() - started < 1.5
    assert events[-1] == openai_render.DONE and "sent nothing for 0.3 s" in events[-2]
    assert replica.cancelled and log.records[0]["status_code"] == 504


def test_a_replica_failing_mid_generation_gives_a_502_and_the_request_is_logged() -> None:
    replica, log = Replica("fail"), Log()
    with pytest.raises(ApiError) as failed:
        asyncio.run(openai_render.chat_response(_generation(replica, log)))
    assert failed.value.status_code == 502 and failed.value.error_type == "server_error"
    assert [r["status_code"] for r in log.records] == [502]


def test_a_slow_feature_read_is_dropped_and_the_chat_goes_on_without_features() -> None:
    from deployments.flows import ChatFlow
    from deployments.settings import AppSettings

    class SlowStore:
        def get(self, user: str) -> dict[str, Any]:
            time.sleep(1.0)
            return {"purchases": 1}

    settings = AppSettings.model_validate({"gateway": {"feature_timeout_s": 0.1}})
    flow = ChatFlow(settings, None, None, None, SlowStore(), None)  # type: ignore[arg-type]

    async def timed() -> tuple[Any, float]:
        started = time.monotonic()
        features = await flow._user_features("alice", "default", Timeline())
        return features, time.monotonic() - started

    features, waited = asyncio.run(timed())  # (asyncio.run itself then joins the abandoned thread)
    assert features is None and waited < 0.8


def test_a_generation_that_fails_before_its_first_token_is_logged_too() -> None:
    from deployments.flows.generation import started
    from deployments.principal import Caller, Principal

    log = Log()
    metrics = type("M", (), {"tokens": lambda self, *a: None})()
    recorder = OutcomeRecorder(log, metrics, "m")  # type: ignore[arg-type]

    async def dies() -> Any:
        raise ApiError(502, "the model failed to generate a response", error_type="server_error")

    caller = Caller(Principal("acme-app", "acme"))
    with pytest.raises(ApiError):
        asyncio.run(
            started(dies(), recorder, route="/r", prompt="p", timeline=Timeline(), hits=[], caller=caller)
        )
    assert [(r["status_code"], r["principal"], r["tenant"]) for r in log.records] == [
        (502, "acme-app", "acme")
    ]
