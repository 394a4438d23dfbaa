"""The engine registry picks implementations by name, and sampling values refuse impossible settings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from deployments.engines import ENGINES, GenerationDelta, SamplingSettings, build_engine
from deployments.engines.transformers_engine import TransformersEngine
from deployments.llm import GenerateRequest
from deployments.settings import LLMSettings
from surge_core.model_assets import TINY_LLAMA_ALIAS

REPO = Path(__file__).resolve().parents[2]


def test_the_registry_names_the_vllm_default_and_the_transformers_fallback() -> None:
    assert {"vllm", "transformers"} <= set(ENGINES)
    assert LLMSettings().engine == "vllm"


def test_build_engine_returns_the_engine_the_settings_name() -> None:
    engine = build_engine(LLMSettings(engine="transformers", model=TINY_LLAMA_ALIAS))
    assert isinstance(engine, TransformersEngine)
    assert (engine.model_path / "config.json").is_file()


def test_building_the_transformers_engine_does_not_import_vllm() -> None:
    code = (
        "import sys; from deployments.engines import build_engine; from deployments.settings import LLMSettings;"
        f"build_engine(LLMSettings(engine='transformers', model='{TINY_LLAMA_ALIAS}'));"
        "print('vllm' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_an_unknown_engine_is_rejected_by_the_settings() -> None:
    with pytest.raises(ValidationError, match="engine"):
        LLMSettings(engine="llama.cpp")  # type: ignore[arg-type]


def test_an_unknown_model_folder_is_named_in_the_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="llm.model"):
        build_engine(LLMSettings(engine="transformers", model=str(tmp_path / "nope")))


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": 4, "temperature": -0.1}, "temperature"),
        ({"max_tokens": 4, "temperature": float("nan")}, "temperature"),
        ({"max_tokens": 4, "top_p": 0.0}, "top_p"),
        ({"max_tokens": 4, "top_p": 1.5}, "top_p"),
        ({"max_tokens": 4, "stop": ("",)}, "stop"),
        ({"max_tokens": 4, "stop": ["x"]}, "stop"),
    ],
)
def test_sampling_settings_reject_impossible_values_naming_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        SamplingSettings(**kwargs)


def test_sampling_settings_and_deltas_are_immutable() -> None:
    sampling = SamplingSettings(max_tokens=4)
    with pytest.raises(AttributeError):
        sampling.max_tokens = 5  # type: ignore[misc]
    with pytest.raises(AttributeError):
        GenerationDelta("a", None, 1, 1).text = "b"  # type: ignore[misc]


def test_a_generate_request_needs_exactly_one_of_prompt_or_messages() -> None:
    with pytest.raises(ValidationError, match="exactly one"):
        GenerateRequest.model_validate({"max_tokens": 4})
    with pytest.raises(ValidationError, match="exactly one"):
        GenerateRequest.model_validate({"prompt": "hi", "messages": [{"role": "user", "content": "hi"}]})


def test_a_generate_request_maps_onto_sampling_settings() -> None:
    request = GenerateRequest.model_validate(
        {
            "prompt": "hi",
            "max_tokens": 9,
            "temperature": 0,
            "top_p": 0.5,
            "stop": ["\n"],
            "seed": 3,
            "model": "x",
        }
    )
    assert request.sampling() == SamplingSettings(
        max_tokens=9, temperature=0.0, top_p=0.5, stop=("\n",), seed=3
    )
    assert request.request_id, "a request id is generated when the caller gives none"
