"""Every LLM version's client keys its seconds, cold starts and spans as the `llm` stage (what prices,
dashboards and the cold-start checks look up), and names its version only in its errors.

With the registry form in the shipped serve config, each version's client was constructed as stage
`llm <name>@<version>`: its seconds were then charged nothing (`surge_core.cost` prices `llm`), and the
first chat's timings said `llm smollm2-135m-instruct@1_cold_start_s` instead of `llm_cold_start_s`.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from deployments.openai_api import ApiError
from deployments.request_timeline import Timeline
from deployments.settings import AutoscalingSettings
from deployments.stage_client import LLMClient, StageWaits


class Method:
    def __init__(self, result: Any) -> None:
        self.result = result

    def remote(self, *args: Any) -> Any:
        async def answer() -> Any:
            if isinstance(self.result, Exception):
                raise self.result
            return self.result

        return answer()


class Board:
    async def starting(self, deployment: str) -> bool:
        return False

    async def failure(self, deployment: str) -> str | None:
        return "KV cache does not fit"


def client(handle: Any) -> LLMClient:
    return LLMClient(
        "llm", "LLM_m_2", handle, Board(), StageWaits(0.05, 0.05), label="llm m@2",  # type: ignore[arg-type]
        autoscaling=AutoscalingSettings(), chain_wake=True,
    )  # fmt: skip


def test_a_versions_cold_start_is_marked_as_the_llm_stages() -> None:
    timeline = Timeline()
    handle = type("H", (), {})()
    handle.wake = Method({"ready_at": time.time() + 0.5, "replica_started_at": time.time()})
    asyncio.run(client(handle)._wake(timeline))
    assert "llm_cold_start_s" in timeline.marks
    assert not any("@" in mark for mark in timeline.marks)


def test_a_version_that_cannot_start_is_named_in_the_error() -> None:
    class Slow:
        def remote(self, *args: Any) -> Any:
            return asyncio.sleep(5)

    handle = type("H", (), {})()
    handle.wake = Slow()
    with pytest.raises(ApiError, match="the llm m@2 stage cannot start: KV cache does not fit"):
        asyncio.run(client(handle).call("wake"))
