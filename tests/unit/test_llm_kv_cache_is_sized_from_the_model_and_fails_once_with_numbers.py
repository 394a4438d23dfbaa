"""The LLM's KV cache on CPU comes from the model's shape, never from free memory, and a machine that cannot
fit it gets one clear error naming the setting and the numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deployments.engines.kv_cache import KVCacheBudget, KVCacheDoesNotFit, ModelShape, check_fits
from deployments.model_registry import SurgeAppSettings
from deployments.settings import LLMSettings

SMOLLM2_CONFIG = {  # the fields vLLM's KV cache depends on, as in SmolLM2-135M-Instruct's config.json
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "hidden_size": 576,
    "torch_dtype": "bfloat16",
}


def _model_dir(tmp_path: Path, config: dict[str, object], weights_bytes: int = 0) -> Path:
    (tmp_path / "config.json").write_text(json.dumps(config))
    if weights_bytes:
        (tmp_path / "model.safetensors").write_bytes(b"\0" * weights_bytes)
    return tmp_path


def test_smollm2_in_float32_needs_360_mib_for_16_sequences_of_512_tokens(tmp_path: Path) -> None:
    shape = ModelShape.from_model_dir(_model_dir(tmp_path, SMOLLM2_CONFIG), "float32")
    assert (shape.layers, shape.kv_heads, shape.head_dim, shape.dtype_bytes) == (30, 3, 64, 4)
    assert shape.bytes_per_token == 2 * 30 * 3 * 64 * 4 == 46_080
    budget = KVCacheBudget(shape, max_model_len=512, max_num_seqs=16)
    assert budget.mib == 360
    assert budget.floor_mib == 23  # one full-length sequence: 46,080 x 512 bytes = 22.5 MiB


def test_auto_dtype_follows_the_model_config_and_head_dim_may_be_explicit(tmp_path: Path) -> None:
    shape = ModelShape.from_model_dir(_model_dir(tmp_path, {**SMOLLM2_CONFIG, "head_dim": 128}), "auto")
    assert shape.dtype_bytes == 2  # bfloat16 from torch_dtype
    assert shape.head_dim == 128


def test_a_cache_below_one_full_length_sequence_is_refused_naming_the_setting(tmp_path: Path) -> None:
    model = _model_dir(tmp_path, SMOLLM2_CONFIG)
    budget = KVCacheBudget(ModelShape.from_model_dir(model, "float32"), 512, 16)
    with pytest.raises(KVCacheDoesNotFit, match=r"llm\.kv_cache_memory_mib is 10 MiB, below .* 23 MiB"):
        check_fits(10, budget, model, available_mib=100_000)


def test_a_machine_without_room_for_cache_and_weights_gets_the_numbers(tmp_path: Path) -> None:
    model = _model_dir(tmp_path, SMOLLM2_CONFIG, weights_bytes=3 * 1024 * 1024)
    budget = KVCacheBudget(ModelShape.from_model_dir(model, "float32"), 512, 16)
    check_fits(360, budget, model, available_mib=364)  # 360 + 3 MiB of weights fit in 364
    with pytest.raises(KVCacheDoesNotFit) as caught:
        check_fits(360, budget, model, available_mib=200)
    message = str(caught.value)
    assert "llm.kv_cache_memory_mib" in message
    assert "360 MiB" in message and "200 MiB" in message and "23 MiB" in message


def test_the_default_serve_config_sizes_the_cache_explicitly_and_fails_the_llm_once() -> None:
    import yaml

    config = yaml.safe_load((Path(__file__).parents[2] / "deployments" / "serve_config.yaml").read_text())
    settings = SurgeAppSettings.model_validate(config["applications"][0]["args"])
    (version,) = settings.model_versions()
    assert version.kv_cache_memory_mib == "auto"
    assert version.serve_options(settings.deployment_of(version))["max_constructor_retry_count"] == 1


@pytest.mark.parametrize("value", [0, -5, "big"])
def test_kv_cache_memory_mib_rejects_non_positive_and_unknown_values(value: object) -> None:
    with pytest.raises(ValueError, match="kv_cache_memory_mib"):
        LLMSettings.model_validate({"kv_cache_memory_mib": value})
