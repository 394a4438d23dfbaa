"""How much memory the LLM's KV cache gets on a CPU, decided from the model's shape, never from free memory.

Why: on CPU, vLLM sizes the KV cache as `gpu_memory_utilization` x the NUMA node's memory minus what the
process already holds. That node size differs between machines of the same kind (about 14 GiB on one,
10.8 GiB on another), so with 0.15 the budget came out at -0.12 GiB on a fresh machine and the LLM replica
crash-looped while chat requests waited 600 s. An explicit size (vLLM's `kv_cache_memory_bytes`) also skips
vLLM's profiling pass, so replicas start faster.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

MIB = 1024 * 1024
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


class KVCacheDoesNotFit(RuntimeError):
    """The KV cache (or the model) cannot fit this machine: a configuration error, not a transient one."""


@dataclass(frozen=True)
class ModelShape:
    """What the KV cache size depends on, read from the model folder's `config.json`."""

    layers: int
    kv_heads: int
    head_dim: int
    dtype_bytes: int

    @classmethod
    def from_model_dir(cls, model_dir: Path, dtype: str) -> ModelShape:
        config = json.loads((model_dir / "config.json").read_text())
        config = config.get("text_config", config)  # multimodal configs nest the language model's
        heads = int(config["num_attention_heads"])
        head_dim = config.get("head_dim") or int(config["hidden_size"]) // heads
        if dtype == "auto":
            dtype = str(config.get("torch_dtype") or config.get("dtype") or "float32")
        return cls(
            layers=int(config["num_hidden_layers"]),
            kv_heads=int(config.get("num_key_value_heads") or heads),
            head_dim=int(head_dim),
            dtype_bytes=DTYPE_BYTES.get(dtype, 4),
        )

    @property
    def bytes_per_token(self) -> int:
        """K and V for one token in every layer: 2 x layers x kv_heads x head_dim x dtype bytes."""
        return 2 * self.layers * self.kv_heads * self.head_dim * self.dtype_bytes


@dataclass(frozen=True)
class KVCacheBudget:
    """The KV cache for `max_num_seqs` sequences of `max_model_len` tokens, with a floor of one sequence.

    Formula: `mib = ceil(bytes_per_token x max_model_len x max_num_seqs / MiB)`, where `bytes_per_token =
    2 x layers x kv_heads x head_dim x dtype_bytes`; the floor is the same with `max_num_seqs = 1` (below it
    not even one full-length prompt fits and vLLM refuses to start).

    Worked example, SmolLM2-135M (30 layers, 3 KV heads, head_dim 64) in float32 with the default
    `max_model_len` 512 and `max_num_seqs` 16: 2 x 30 x 3 x 64 x 4 = 46,080 bytes per token, x 512 x 16 =
    360 MiB (floor 22.5 -> 23 MiB).
    """

    shape: ModelShape
    max_model_len: int
    max_num_seqs: int

    def __post_init__(self) -> None:
        if self.max_model_len < 1 or self.max_num_seqs < 1:
            raise ValueError("max_model_len and max_num_seqs must be >= 1")

    @property
    def floor_mib(self) -> int:
        return math.ceil(self.shape.bytes_per_token * self.max_model_len / MIB)

    @property
    def mib(self) -> int:
        return math.ceil(self.shape.bytes_per_token * self.max_model_len * self.max_num_seqs / MIB)

    def explain(self) -> str:
        s = self.shape
        return (
            f"2 x {s.layers} layers x {s.kv_heads} KV heads x {s.head_dim} head_dim x {s.dtype_bytes} bytes "
            f"= {s.bytes_per_token} bytes/token, x max_model_len {self.max_model_len} x max_num_seqs "
            f"{self.max_num_seqs}"
        )


def weights_mib(model_dir: Path) -> int:
    """Size of the weight files in a model folder (what loading them costs in RAM, roughly)."""
    total = sum(
        p.stat().st_size for pattern in ("*.safetensors", "*.bin", "*.pt") for p in model_dir.glob(pattern)
    )
    return math.ceil(total / MIB)


def check_fits(kv_mib: int, budget: KVCacheBudget, model_dir: Path, available_mib: int) -> None:
    """Raise :class:`KVCacheDoesNotFit`, naming the setting and the numbers, when the cache can't be served.

    Two ways to fail: the configured size is below one full-length sequence, or the cache plus the weights
    exceed the memory available right now.
    """
    if kv_mib < budget.floor_mib:
        raise KVCacheDoesNotFit(
            f"llm.kv_cache_memory_mib is {kv_mib} MiB, below one full-length sequence: {budget.floor_mib} MiB "
            f"({budget.shape.bytes_per_token} bytes/token x max_model_len {budget.max_model_len}); raise it "
            "or lower llm.max_model_len"
        )
    needed = kv_mib + weights_mib(model_dir)
    if needed > available_mib:
        raise KVCacheDoesNotFit(
            f"llm.kv_cache_memory_mib: the KV cache needs {kv_mib} MiB and the weights about "
            f"{needed - kv_mib} MiB, but only {available_mib} MiB of memory is available; lower "
            f"llm.max_num_seqs or llm.max_model_len, or set llm.kv_cache_memory_mib (at least "
            f"{budget.floor_mib} MiB, one full-length sequence)"
        )
