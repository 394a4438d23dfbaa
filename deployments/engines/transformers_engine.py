"""A light fallback engine on plain transformers, behind the same interface as the vLLM one.

One worker thread owns the model. Requests arrive on a queue; the thread advances every active request by
one token per round (round-robin over per-request KV caches), so concurrent streams all make progress and
a long generation cannot starve a short one. That is interleaving, not batched compute: throughput is
that of one stream, which is why this engine is the fallback, not the default.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deployments.engines.base import (
    GenerationDelta,
    InvalidRequestError,
    LLMEngine,
    SamplingSettings,
    render_with_template,
)

if TYPE_CHECKING:
    from deployments.settings import LLMSettings

_DONE = object()  # end-of-stream marker put on a request's queue
_IDLE_WAIT_S = 0.5  # how long the worker blocks for new work when nothing is active


@dataclass
class _Request:
    request_id: str
    prompt_ids: list[int]
    sampling: SamplingSettings
    loop: asyncio.AbstractEventLoop
    out: asyncio.Queue[Any]
    generated: list[int] = field(default_factory=list)
    cache: Any = None
    generator: Any = None
    emitted_chars: int = 0
    aborted: bool = False  # abort() was called: end the stream with finish "abort"
    closed: bool = False  # the caller stopped reading: drop silently

    def send(self, item: Any) -> None:
        self.loop.call_soon_threadsafe(self.out.put_nowait, item)


class TransformersEngine(LLMEngine):
    """transformers causal LM with a manual decoding loop: streaming, stop strings, seeds, abort."""

    def __init__(self, settings: LLMSettings, model_path: Path) -> None:
        super().__init__(settings, model_path)
        self._model: Any = None
        self._tokenizer: Any = None
        self._incoming: queue.Queue[_Request] = queue.Queue()
        self._requests: dict[str, _Request] = {}
        self._stopping = threading.Event()
        self._worker: threading.Thread | None = None
        self._failure: BaseException | None = None

    async def start(self) -> None:
        await asyncio.to_thread(self._load)
        self._worker = threading.Thread(target=self._run, name="transformers-engine", daemon=True)
        self._worker.start()

    def _load(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch.set_num_threads(self.settings.engine_threads)
        dtype = "auto" if self.settings.dtype == "auto" else getattr(torch, self.settings.dtype)
        self._tokenizer = AutoTokenizer.from_pretrained(str(self.model_path))
        model: Any = AutoModelForCausalLM.from_pretrained(str(self.model_path), dtype=dtype)
        self._model = model.to(torch.device(self.settings.device)).eval()

    def render_chat(self, messages: list[dict[str, str]]) -> str:
        return render_with_template(self._tokenizer, messages)

    async def generate(
        self, prompt: str, sampling: SamplingSettings, request_id: str
    ) -> AsyncIterator[GenerationDelta]:
        if self._failure is not None or self._worker is None:
            raise RuntimeError(f"transformers engine is not serving: {self._failure!r}")
        if sampling.lora_adapter is not None:
            raise InvalidRequestError("the transformers engine serves no LoRA adapters; use engine 'vllm'")
        if request_id in self._requests:
            raise InvalidRequestError(f"request_id {request_id!r} is already running")
        # Tokenising a long prompt takes milliseconds: off the event loop that relays the other streams.
        encoded = await asyncio.to_thread(self._tokenizer, prompt, add_special_tokens=True)
        prompt_ids = encoded.input_ids
        if len(prompt_ids) >= self.settings.max_model_len:
            raise InvalidRequestError(
                f"prompt is {len(prompt_ids)} tokens; llm.max_model_len is {self.settings.max_model_len}"
            )
        request = _Request(request_id, prompt_ids, sampling, asyncio.get_running_loop(), asyncio.Queue())
        self._requests[request_id] = request
        self._incoming.put(request)
        try:
            while True:
                item = await request.out.get()
                if item is _DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            # Normal end, error, or the caller went away: either way the worker drops it.
            request.closed = True
            self._requests.pop(request_id, None)

    async def abort(self, request_id: str) -> None:
        request = self._requests.get(request_id)
        if request is not None:
            request.aborted = True

    def running_requests(self) -> int:
        return len(self._requests)

    async def check_health(self) -> None:
        if self._failure is not None:
            raise RuntimeError(f"transformers engine failed: {self._failure!r}")
        if self._worker is None or not self._worker.is_alive():
            raise RuntimeError("transformers engine worker thread is not running")

    async def shutdown(self) -> None:
        self._stopping.set()
        if self._worker is not None:
            await asyncio.to_thread(self._worker.join, 10)
        for request in list(self._requests.values()):
            request.send(_DONE)

    # --- the worker thread ------------------------------------------------------------------------------

    def _run(self) -> None:
        import torch

        active: list[_Request] = []
        try:
            with torch.inference_mode():
                while not self._stopping.is_set():
                    try:
                        active.append(self._incoming.get(timeout=_IDLE_WAIT_S if not active else 0))
                        continue  # admit everything waiting before the next round
                    except queue.Empty:
                        pass
                    for request in list(active):
                        if request.closed:
                            active.remove(request)
                        elif request.aborted:
                            active.remove(request)
                            request.send(self._final(request, "abort"))
                            request.send(_DONE)
                        elif self._step(request):
                            active.remove(request)
        except BaseException as error:  # the engine is dead: tell every waiting stream, then health fails
            self._failure = error
            for request in active:
                request.send(RuntimeError(f"transformers engine failed: {error!r}"))

    def _step(self, request: _Request) -> bool:
        """Decode one token for `request`, send a delta if there is new text; True when it is finished."""
        import torch

        sampling = request.sampling
        if request.cache is None:
            input_ids = torch.tensor([request.prompt_ids], device=self._model.device)
            if sampling.seed is not None:
                request.generator = torch.Generator(device="cpu").manual_seed(sampling.seed)
        else:
            input_ids = torch.tensor([[request.generated[-1]]], device=self._model.device)
        output = self._model(input_ids=input_ids, past_key_values=request.cache, use_cache=True)
        request.cache = output.past_key_values
        token = self._sample(output.logits[0, -1].float(), sampling, request.generator)
        request.generated.append(token)

        finish_reason: str | None = None
        if token == self._tokenizer.eos_token_id:
            finish_reason = "stop"
            request.generated.pop()  # the end-of-sequence token is not text
        text = self._tokenizer.decode(request.generated, skip_special_tokens=True)
        for stop in sampling.stop:
            at = text.find(stop)
            if at != -1:
                text, finish_reason = text[:at], "stop"
        total = len(request.prompt_ids) + len(request.generated)
        if finish_reason is None and (
            len(request.generated) >= sampling.max_tokens or total >= self.settings.max_model_len
        ):
            finish_reason = "length"

        if finish_reason is None:
            # Hold back a trailing partial UTF-8 character, and anything that could still turn into a stop
            # string once more tokens arrive, so streamed text never has to be taken back.
            hold = max((len(s) - 1 for s in sampling.stop), default=0)
            visible = text[: len(text) - hold] if hold else text
            visible = visible.rstrip("\ufffd")
        else:
            visible = text
        if len(visible) > request.emitted_chars or finish_reason is not None:
            request.send(
                GenerationDelta(
                    text=visible[request.emitted_chars :],
                    finish_reason=finish_reason,
                    prompt_tokens=len(request.prompt_ids),
                    completion_tokens=len(request.generated)
                    + (1 if token == self._tokenizer.eos_token_id else 0),
                )
            )
            request.emitted_chars = max(request.emitted_chars, len(visible))
        if finish_reason is not None:
            request.send(_DONE)
            return True
        return False

    @staticmethod
    def _final(request: _Request, finish_reason: str) -> GenerationDelta:
        return GenerationDelta(
            text="",
            finish_reason=finish_reason,
            prompt_tokens=len(request.prompt_ids),
            completion_tokens=len(request.generated),
        )

    @staticmethod
    def _sample(logits: Any, sampling: SamplingSettings, generator: Any) -> int:
        """Greedy at temperature 0; otherwise softmax(logits / T) restricted to the top-p nucleus."""
        import torch

        if sampling.temperature == 0:
            return int(torch.argmax(logits))
        probs = torch.softmax(logits / sampling.temperature, dim=-1)
        if sampling.top_p < 1:
            sorted_probs, order = torch.sort(probs, descending=True)
            keep = torch.cumsum(sorted_probs, dim=-1) - sorted_probs < sampling.top_p
            probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_probs[keep])
        return int(torch.multinomial(probs / probs.sum(), 1, generator=generator))
