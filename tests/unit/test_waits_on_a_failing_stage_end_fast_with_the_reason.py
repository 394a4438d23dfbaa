"""A request waiting on a stage gets a 503 naming the stage and its last start error as soon as Serve reports
the stage failed; a stage still starting keeps it waiting up to the cold-start timeout; status calls are
shared by every waiter."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from deployments.openai_api import ApiError
from deployments.stage_client import StageStatusBoard, StageWaits, summarize_failure, wait_for_stage

SERVE_MESSAGE = (
    "The deployment failed to start 1 times in a row. This may be due to a problem with its constructor or "
    "initial health check failing. See controller logs for details. Error:\n"
    'Traceback (most recent call last):\n  File "llm.py", line 3, in __init__\n'
    "deployments.engines.kv_cache.KVCacheDoesNotFit: llm.kv_cache_memory_mib: the KV cache needs 9 MiB"
)


MESSAGES = {
    "DEPLOY_FAILED": SERVE_MESSAGE,
    "UNHEALTHY": SERVE_MESSAGE.replace("1 times", "3 times"),
    # Serve replacing a replica whose health check failed: not a failure to start.
    "UNHEALTHY_CHECK": "Replica 'abc' failed the health check 3 times; replacing it.",
}


class Statuses:
    """A scripted sequence of Serve statuses for the LLM deployment (the last one repeats)."""

    def __init__(self, *statuses: str) -> None:
        self.statuses = list(statuses)
        self.calls = 0

    def __call__(self) -> dict[str, Any]:
        self.calls += 1
        status = self.statuses[min(self.calls - 1, len(self.statuses) - 1)]
        message = MESSAGES.get(status, "Upscaling from 0 to 1 replicas.")
        shown = "UNHEALTHY" if status == "UNHEALTHY_CHECK" else status
        trigger = "HEALTH_CHECK_FAILED" if status == "UNHEALTHY_CHECK" else "REPLICA_STARTUP_FAILED"
        info = {"status": shown, "trigger": trigger, "message": message}
        return {"status": "RUNNING", "deployments": {"LLMServer": info}}


async def _never() -> None:
    await asyncio.sleep(3600)


def _wait(call: Any, board: StageStatusBoard, timeout_s: float, warm_s: float | None = None) -> Any:
    waits = StageWaits(warm_s=timeout_s if warm_s is None else warm_s, cold_s=timeout_s)
    return wait_for_stage(call, stage="llm", deployment="LLMServer", board=board, waits=waits, poll_s=0.05)


def test_a_failed_stage_ends_the_wait_with_a_503_naming_stage_and_error() -> None:
    board = StageStatusBoard(Statuses("UPSCALING", "UPSCALING", "DEPLOY_FAILED"), max_age_s=0)
    started = time.monotonic()
    with pytest.raises(ApiError) as caught:
        asyncio.run(_wait(_never, board, timeout_s=60))
    assert time.monotonic() - started < 2
    error = caught.value
    assert error.status_code == 503
    assert error.headers["Retry-After"] == "30"
    assert "the llm stage cannot start" in error.message
    assert "DEPLOY_FAILED" in error.message and "llm.kv_cache_memory_mib" in error.message
    assert "Traceback" not in error.message


def test_a_stage_still_starting_keeps_the_request_waiting_until_it_answers() -> None:
    async def slow_answer() -> str:
        await asyncio.sleep(0.4)
        return "ready"

    statuses = Statuses("UPSCALING")
    board = StageStatusBoard(statuses, max_age_s=0)
    assert asyncio.run(_wait(slow_answer, board, timeout_s=5)) == "ready"
    assert statuses.calls >= 3  # it looked while waiting, and saw progress, not failure


def test_a_stage_that_never_answers_gets_the_cold_start_timeout_503() -> None:
    board = StageStatusBoard(Statuses("UPSCALING"), max_age_s=0)
    with pytest.raises(ApiError, match=r"did not answer within 0 s") as caught:
        asyncio.run(_wait(_never, board, timeout_s=0.2))
    assert caught.value.status_code == 503 and caught.value.headers["Retry-After"] == "5"


def test_concurrent_waiters_share_one_status_call() -> None:
    statuses = Statuses("UPSCALING")

    def slow_fetch() -> dict[str, Any]:
        time.sleep(0.2)
        return statuses()

    board = StageStatusBoard(slow_fetch, max_age_s=1.0)

    async def many() -> None:
        await asyncio.gather(*(board.snapshot() for _ in range(50)))

    asyncio.run(many())
    assert statuses.calls == 1


def test_summaries_keep_serves_first_sentence_and_the_exception_line() -> None:
    summary = summarize_failure(SERVE_MESSAGE)
    assert summary.startswith("The deployment failed to start 1 times in a row.")
    assert summary.endswith("KVCacheDoesNotFit: llm.kv_cache_memory_mib: the KV cache needs 9 MiB)")
    assert len(summarize_failure("x" * 5000)) <= 600


def test_a_call_that_raises_unavailable_at_once_gets_the_stage_reason() -> None:
    from ray.serve._private.common import DeploymentID
    from ray.serve.exceptions import DeploymentUnavailableError

    def unavailable() -> Any:
        raise DeploymentUnavailableError(DeploymentID(name="LLMServer", app_name="surge"))

    board = StageStatusBoard(Statuses("DEPLOY_FAILED"), max_age_s=0)
    with pytest.raises(ApiError, match=r"llm stage cannot start: DEPLOY_FAILED") as caught:
        asyncio.run(_wait(unavailable, board, timeout_s=60))
    assert caught.value.status_code == 503


def test_a_stage_at_its_queue_limit_gets_a_fast_503_with_retry_after() -> None:
    from ray.serve.exceptions import BackPressureError

    def full() -> Any:
        raise BackPressureError(num_queued_requests=4, max_queued_requests=4, retry_after_s=2.0)

    board = StageStatusBoard(Statuses("HEALTHY"), max_age_s=0)
    with pytest.raises(ApiError, match="the llm stage is at its queue limit") as caught:
        asyncio.run(_wait(full, board, timeout_s=60))
    assert caught.value.status_code == 503 and caught.value.headers["Retry-After"] == "2"


def test_a_stage_whose_replicas_failed_to_start_from_zero_is_failing_too() -> None:
    board = StageStatusBoard(Statuses("UNHEALTHY"), max_age_s=0)
    with pytest.raises(
        ApiError, match=r"llm stage cannot start: UNHEALTHY: The deployment failed to start 3"
    ):
        asyncio.run(_wait(_never, board, timeout_s=60))


def test_a_replica_being_replaced_after_a_failed_health_check_keeps_requests_waiting() -> None:
    async def answer_after_a_while() -> str:
        await asyncio.sleep(0.3)
        return "served by the replacement"

    statuses = Statuses("UNHEALTHY_CHECK")
    board = StageStatusBoard(statuses, max_age_s=0)
    assert asyncio.run(_wait(answer_after_a_while, board, timeout_s=5)) == "served by the replacement"
    assert statuses.calls >= 2


def _replicas(running: int) -> Any:
    def status() -> dict[str, Any]:
        info = {"status": "HEALTHY", "message": "", "replicas": {"RUNNING": running}}
        return {"status": "RUNNING", "deployments": {"LLMServer": info}}

    return status


def test_a_warm_stage_that_stops_answering_gets_the_short_warm_wait_not_the_cold_one() -> None:
    board = StageStatusBoard(_replicas(running=1), max_age_s=0)
    started = time.monotonic()
    with pytest.raises(ApiError) as caught:
        asyncio.run(_wait(_never, board, timeout_s=30, warm_s=0.3))
    assert time.monotonic() - started < 2
    assert caught.value.status_code == 503


def test_a_stage_with_no_running_replica_gets_the_cold_wait_after_the_warm_one_passed() -> None:
    async def answer_after_warm() -> str:
        await asyncio.sleep(0.6)
        return "loaded"

    board = StageStatusBoard(_replicas(running=0), max_age_s=0)
    assert asyncio.run(_wait(answer_after_warm, board, timeout_s=5, warm_s=0.2)) == "loaded"
