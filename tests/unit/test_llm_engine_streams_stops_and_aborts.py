"""Both LLM engines (vLLM and transformers), built through the factory, keep the same promises.

They run the tiny random Llama (2 layers, 512-token vocabulary): gibberish text, but deterministic under
greedy decoding, and its end-of-sequence logit is zeroed so generations run to `max_tokens`. Each engine
is started once for this module on its own event loop thread (vLLM's engine core is a real child process).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import pytest

from deployments.engines import (
    GenerationDelta,
    InvalidRequestError,
    LLMEngine,
    SamplingSettings,
    build_engine,
)
from deployments.settings import LLMSettings
from surge_core.model_assets import TINY_LLAMA_ALIAS, resolve_llm_model

T = TypeVar("T")
ENGINES = ["vllm", "transformers"]
GREEDY = dict(temperature=0.0)


class LoopThread:
    """An event loop on a background thread, so module-scoped engines outlive single tests."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 120) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


async def collect(
    engine: LLMEngine, prompt: str, sampling: SamplingSettings, rid: str
) -> list[GenerationDelta]:
    return [delta async for delta in engine.generate(prompt, sampling, rid)]


def text_of(deltas: list[GenerationDelta]) -> str:
    return "".join(d.text for d in deltas)


@pytest.fixture(scope="module")
def loop() -> Iterator[LoopThread]:
    runner = LoopThread()
    yield runner
    runner.close()


def _start(loop: LoopThread, name: str) -> Iterator[LLMEngine]:
    settings = LLMSettings(engine=name, model=TINY_LLAMA_ALIAS, max_model_len=512, kv_cache_memory_mib=64)
    engine = build_engine(settings)
    loop.run(engine.start(), timeout=300)
    yield engine
    loop.run(engine.shutdown(), timeout=60)


@pytest.fixture(scope="module")
def vllm_engine(loop: LoopThread) -> Iterator[LLMEngine]:
    yield from _start(loop, "vllm")


@pytest.fixture(scope="module")
def transformers_engine(loop: LoopThread) -> Iterator[LLMEngine]:
    yield from _start(loop, "transformers")


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> LLMEngine:
    return request.getfixturevalue(f"{request.param}_engine")  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def prompt(transformers_engine: LLMEngine) -> str:
    return transformers_engine.render_chat([{"role": "user", "content": "Tell me about the world."}])


@pytest.fixture(scope="module")
def reference_text(prompt: str) -> str:
    """What plain `transformers` greedy `generate()` makes of the prompt: the oracle, outside our code."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_llm_model(TINY_LLAMA_ALIAS)
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=24, min_new_tokens=24, do_sample=False, pad_token_id=0)
    return str(tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True))


def test_chat_template_ends_with_the_assistant_generation_prompt(engine: LLMEngine) -> None:
    rendered = engine.render_chat(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    )
    assert (
        rendered
        == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_streamed_deltas_concatenate_to_the_greedy_text(
    engine: LLMEngine, loop: LoopThread, prompt: str, reference_text: str
) -> None:
    deltas = loop.run(collect(engine, prompt, SamplingSettings(max_tokens=24, **GREEDY), "full"))
    assert len(deltas) > 1, "the text must arrive as a stream, not in one piece"
    assert text_of(deltas) == reference_text
    assert [d.finish_reason for d in deltas[:-1]] == [None] * (len(deltas) - 1)


def test_max_tokens_ends_the_generation_with_length(engine: LLMEngine, loop: LoopThread, prompt: str) -> None:
    deltas = loop.run(collect(engine, prompt, SamplingSettings(max_tokens=7, **GREEDY), "len"))
    assert deltas[-1].finish_reason == "length"
    assert deltas[-1].completion_tokens == 7


def test_usage_counts_prompt_and_completion_tokens(engine: LLMEngine, loop: LoopThread, prompt: str) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(resolve_llm_model(TINY_LLAMA_ALIAS)))
    deltas = loop.run(collect(engine, prompt, SamplingSettings(max_tokens=12, **GREEDY), "usage"))
    assert deltas[-1].prompt_tokens == len(tokenizer(prompt).input_ids)
    counts = [d.completion_tokens for d in deltas]
    assert counts == sorted(counts), "completion tokens are cumulative"
    assert counts[-1] == 12


def test_a_stop_string_ends_early_and_is_not_returned(
    engine: LLMEngine, loop: LoopThread, prompt: str, reference_text: str
) -> None:
    # Pick a stop string from the middle of the known greedy text.
    stop = next(
        reference_text[i : i + 3]
        for i in range(len(reference_text) // 2, len(reference_text) - 3)
        if "\ufffd" not in reference_text[i : i + 3] and reference_text[i : i + 3].strip()
    )
    expected = reference_text[: reference_text.index(stop)]
    deltas = loop.run(
        collect(engine, prompt, SamplingSettings(max_tokens=24, stop=(stop,), **GREEDY), "stop")
    )
    assert text_of(deltas) == expected
    assert deltas[-1].finish_reason == "stop"
    assert deltas[-1].completion_tokens < 24


def test_the_same_seed_samples_the_same_text(engine: LLMEngine, loop: LoopThread, prompt: str) -> None:
    def sample(seed: int, rid: str) -> str:
        sampling = SamplingSettings(max_tokens=16, temperature=1.0, seed=seed)
        return text_of(loop.run(collect(engine, prompt, sampling, rid)))

    first, again, other = sample(7, "seed-a"), sample(7, "seed-b"), sample(8, "seed-c")
    assert first == again
    assert first != other


def test_concurrent_generations_interleave_and_all_finish(
    engine: LLMEngine, loop: LoopThread, prompt: str
) -> None:
    """A short request started while a long one runs finishes first: the engine shares itself (continuous
    batching in vLLM, round-robin in the fallback) instead of serving requests one after another."""

    async def scenario() -> tuple[list[GenerationDelta], list[GenerationDelta], float, float]:
        finished: dict[str, float] = {}
        long_started = asyncio.Event()

        async def run(rid: str, max_tokens: int) -> list[GenerationDelta]:
            deltas = []
            async for delta in engine.generate(
                prompt, SamplingSettings(max_tokens=max_tokens, **GREEDY), rid
            ):
                deltas.append(delta)
                long_started.set()
            finished[rid] = time.monotonic()
            return deltas

        long_task = asyncio.ensure_future(run("long", 400))
        await long_started.wait()  # the long one is generating
        short = await run("short", 5)
        long = await long_task
        return long, short, finished["long"], finished["short"]

    long, short, long_done, short_done = loop.run(scenario())
    assert short_done < long_done
    assert (long[-1].finish_reason, long[-1].completion_tokens) == ("length", 400)
    assert (short[-1].finish_reason, short[-1].completion_tokens) == ("length", 5)


def test_abort_ends_the_stream_with_abort(engine: LLMEngine, loop: LoopThread, prompt: str) -> None:
    async def scenario() -> list[GenerationDelta]:
        deltas = []
        async for delta in engine.generate(prompt, SamplingSettings(max_tokens=450, **GREEDY), "to-abort"):
            deltas.append(delta)
            if len(deltas) == 2:
                await engine.abort("to-abort")
        return deltas

    deltas = loop.run(scenario(), timeout=30)
    assert deltas[-1].finish_reason == "abort"
    assert deltas[-1].completion_tokens < 450
    assert engine.running_requests() == 0


def test_closing_the_stream_early_frees_the_request(engine: LLMEngine, loop: LoopThread, prompt: str) -> None:
    async def scenario() -> int:
        stream = engine.generate(prompt, SamplingSettings(max_tokens=450, **GREEDY), "closed")
        await anext(stream)
        running_before = engine.running_requests()
        await stream.aclose()  # type: ignore[attr-defined]
        for _ in range(200):  # the engine notices within a step or two
            if engine.running_requests() == 0:
                break
            await asyncio.sleep(0.01)
        return running_before

    assert loop.run(scenario(), timeout=30) == 1
    assert engine.running_requests() == 0


def test_a_prompt_longer_than_the_context_is_an_invalid_request(engine: LLMEngine, loop: LoopThread) -> None:
    with pytest.raises(InvalidRequestError):
        loop.run(collect(engine, "hello world " * 400, SamplingSettings(max_tokens=4), "too-long"))


def test_both_engines_agree_on_greedy_text(
    vllm_engine: LLMEngine, transformers_engine: LLMEngine, loop: LoopThread, prompt: str
) -> None:
    sampling = SamplingSettings(max_tokens=20, **GREEDY)
    from_vllm = text_of(loop.run(collect(vllm_engine, prompt, sampling, "agree-v")))
    from_transformers = text_of(loop.run(collect(transformers_engine, prompt, sampling, "agree-t")))
    assert from_vllm == from_transformers


def test_engines_report_healthy(engine: LLMEngine, loop: LoopThread) -> None:
    loop.run(engine.check_health())


def test_vllm_reports_the_prefix_cache_hits_of_a_repeated_prompt(
    vllm_engine: LLMEngine, loop: LoopThread
) -> None:
    # Prefix-cache affinity routing (deployments.prefix_affinity) is measured by this figure.
    long_prompt = vllm_engine.render_chat([{"role": "user", "content": "Describe the sea. " * 30}])
    first = loop.run(collect(vllm_engine, long_prompt, SamplingSettings(max_tokens=2, **GREEDY), "cache-1"))
    again = loop.run(collect(vllm_engine, long_prompt, SamplingSettings(max_tokens=2, **GREEDY), "cache-2"))
    assert first[-1].cached_tokens is not None and again[-1].cached_tokens is not None
    assert again[-1].cached_tokens > first[-1].cached_tokens
    assert again[-1].cached_tokens <= again[-1].prompt_tokens
