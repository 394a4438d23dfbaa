"""The synthetic engine (benchmarks only): tokens at a set rate through the engine interface, no model."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

from deployments.engines import ENGINES, SamplingSettings, build_engine
from deployments.engines.synthetic_engine import SyntheticEngine, synthetic_token
from deployments.settings import LLMSettings

REPO = Path(__file__).resolve().parents[2]


def synthetic(**kwargs: object) -> SyntheticEngine:
    engine = build_engine(LLMSettings(engine="synthetic", **kwargs))  # type: ignore[arg-type]
    assert isinstance(engine, SyntheticEngine)
    asyncio.run(engine.start())
    return engine


def run(engine: SyntheticEngine, max_tokens: int = 1000, stop: tuple[str, ...] = ()) -> list[object]:
    async def go() -> list[object]:
        sampling = SamplingSettings(max_tokens=max_tokens, stop=stop)
        return [d async for d in engine.generate("user: hi there\nassistant: ", sampling, "r1")]

    return asyncio.run(go())


def test_synthetic_is_registered_but_never_the_default() -> None:
    assert "synthetic" in ENGINES
    assert LLMSettings().engine == "vllm"
    assert "benchmarks only" in (LLMSettings.model_fields["engine"].description or "")


def test_it_emits_its_output_length_one_token_per_delta_ending_with_length() -> None:
    deltas = run(synthetic(synthetic_tokens_per_s=10_000, synthetic_output_tokens=5))
    assert [d.text for d in deltas] == [synthetic_token(i) for i in range(5)]  # type: ignore[attr-defined]
    assert [d.completion_tokens for d in deltas] == [1, 2, 3, 4, 5]  # type: ignore[attr-defined]
    assert deltas[-1].finish_reason == "length" and deltas[-1].prompt_tokens == 4  # type: ignore[attr-defined]


def test_the_request_max_tokens_caps_the_output() -> None:
    deltas = run(synthetic(synthetic_tokens_per_s=10_000, synthetic_output_tokens=50), max_tokens=3)
    assert len(deltas) == 3


def test_it_runs_at_the_set_rate_per_sequence() -> None:
    engine = synthetic(synthetic_tokens_per_s=200, synthetic_output_tokens=40)
    started = time.monotonic()
    run(engine)
    elapsed = time.monotonic() - started
    assert 0.199 <= elapsed < 0.6  # 40 steps of 5 ms (the first token too), plus a loaded machine's slack


def test_a_stop_string_ends_the_sequence_without_returning_it() -> None:
    deltas = run(synthetic(synthetic_tokens_per_s=10_000, synthetic_output_tokens=20), stop=("w3",))
    assert "".join(d.text for d in deltas) == "w0 w1 w2 "  # type: ignore[attr-defined]
    assert deltas[-1].finish_reason == "stop"  # type: ignore[attr-defined]


def test_abort_ends_the_stream_with_finish_abort() -> None:
    engine = synthetic(synthetic_tokens_per_s=100, synthetic_output_tokens=1000)

    async def go() -> list[object]:
        out = []
        async for delta in engine.generate("hi", SamplingSettings(max_tokens=1000), "r1"):
            out.append(delta)
            if len(out) == 2:
                assert engine.running_requests() == 1
                await engine.abort("r1")
        return out

    deltas = asyncio.run(go())
    assert deltas[-1].finish_reason == "abort" and len(deltas) == 3  # type: ignore[attr-defined]
    assert engine.running_requests() == 0


def test_building_it_loads_no_model_and_imports_neither_vllm_nor_torch() -> None:
    code = (
        "import sys; from deployments.engines import build_engine; from deployments.settings import LLMSettings;"
        "build_engine(LLMSettings(engine='synthetic', model='no-such-model'));"
        "print('vllm' in sys.modules, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "False False"


def test_its_start_takes_the_load_time_it_is_given_and_none_by_default() -> None:
    started = time.monotonic()
    synthetic(synthetic_load_s=0.3)
    assert 0.3 <= time.monotonic() - started < 2.0
    started = time.monotonic()
    synthetic()
    assert time.monotonic() - started < 0.2
