"""`LLMServer` behind a Serve handle (local testing mode: the whole deployment in this process, no cluster).

Uses the light transformers engine on the tiny Llama; the vLLM engine's own behaviour is covered in
test_llm_engine_streams_stops_and_aborts.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from deployments.settings import LLMSettings
from surge_core.model_assets import TINY_LLAMA_ALIAS


@pytest.fixture(scope="module")
def llm() -> Iterator[Any]:
    """One LLMServer replica for the module."""
    from ray import serve

    from deployments.llm import LLMServer

    settings = LLMSettings(engine="transformers", model=TINY_LLAMA_ALIAS, served_model_name="tiny")
    handle = serve.run(
        LLMServer.options(**settings.serve_options("LLMServer")).bind(settings),
        name="llm-unit",
        route_prefix=None,
        _local_testing_mode=True,
    )
    yield handle
    # Nothing to stop: in local testing mode the replica is an object in this process, and the transformers
    # engine's worker is a daemon thread (no child processes). serve.delete/shutdown would start a real Ray.


def test_wake_reports_the_replica_start_ready_time_and_model(llm: Any) -> None:
    answer = llm.wake.remote().result()
    assert answer["model"] == "tiny"
    assert answer["replica_started_at"] <= answer["ready_at"] <= time.time()
    assert answer["running_requests"] == 0


def test_chat_messages_stream_as_dicts_ending_with_usage(llm: Any) -> None:
    request = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 6, "temperature": 0}
    chunks = list(llm.options(stream=True).generate.remote(request))
    assert len(chunks) > 1
    assert set(chunks[-1]) == {"text", "finish_reason", "prompt_tokens", "completion_tokens", "cached_tokens"}
    assert (
        chunks[-1]["cached_tokens"] is None or 0 <= chunks[-1]["cached_tokens"] <= chunks[-1]["prompt_tokens"]
    )
    assert chunks[-1]["finish_reason"] == "length"
    assert chunks[-1]["completion_tokens"] == 6
    assert chunks[-1]["prompt_tokens"] > 0


def test_a_prompt_and_a_stop_list_are_honoured(llm: Any) -> None:
    base = {"prompt": "hello", "max_tokens": 12, "temperature": 0}
    full = "".join(c["text"] for c in llm.options(stream=True).generate.remote(base))
    stop = full.strip()[-3:]
    cut = list(llm.options(stream=True).generate.remote({**base, "stop": [stop]}))
    assert "".join(c["text"] for c in cut) == full[: full.index(stop)]
    assert cut[-1]["finish_reason"] == "stop"


def test_a_bad_request_fails_naming_the_problem(llm: Any) -> None:
    with pytest.raises(Exception, match="exactly one of 'prompt' or 'messages'"):
        list(llm.options(stream=True).generate.remote({"max_tokens": 3}))


def test_cancelling_the_stream_frees_the_engine(llm: Any) -> None:
    stream = llm.options(stream=True).generate.remote(
        {"prompt": "hello", "max_tokens": 400, "temperature": 0}
    )
    next(iter(stream))
    assert llm.wake.remote().result()["running_requests"] == 1
    stream.cancel()
    deadline = time.monotonic() + 10
    while llm.wake.remote().result()["running_requests"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert llm.wake.remote().result()["running_requests"] == 0


def test_the_replica_reports_healthy(llm: Any) -> None:
    llm.check_health.remote().result()
