"""LoRA adapters of a model version: vLLM's LoRA switches and requests, routed as `name@version:adapter`."""

from __future__ import annotations

from pathlib import Path

import pytest

from deployments.engines.base import InvalidRequestError, build_engine
from deployments.model_registry import ModelVersionSettings
from deployments.model_router import ModelRouter, ServedVersion
from deployments.openai_api import ApiError

VERSION = ModelVersionSettings(
    name="m",
    version="2",
    model="/models/m",
    lora_adapters=[{"name": "support", "path": "/adapters/support"}],  # type: ignore[list-item]
    max_lora_rank=32,
)


def test_a_version_with_adapters_turns_on_vllms_lora_support_with_its_rank() -> None:
    engine = build_engine(VERSION, model_path=Path("/models/m"))
    assert engine.lora_engine_args() == {"enable_lora": True, "max_loras": 1, "max_lora_rank": 32}  # type: ignore[attr-defined]
    request = engine.lora_request("support")  # type: ignore[attr-defined]
    assert (request.lora_name, request.lora_int_id, request.lora_path) == ("support", 1, "/adapters/support")
    with pytest.raises(InvalidRequestError, match="'other' is not configured"):
        engine.lora_request("other")  # type: ignore[attr-defined]


def test_a_version_without_adapters_passes_no_lora_switch() -> None:
    plain = VERSION.model_copy(update={"lora_adapters": []})
    assert build_engine(plain, model_path=Path("/models/m")).lora_engine_args() == {}  # type: ignore[attr-defined]


def test_the_router_sends_name_version_adapter_to_the_version_with_that_adapter() -> None:
    router = ModelRouter([ServedVersion("m@2", "m", None, 512, ("support",))], "emb")  # type: ignore[arg-type]
    route = router.llm_route("m@2:support")
    assert route.version == "m@2" and route.lora_adapter == "support"
    assert router.llm_route("m").lora_adapter is None
    with pytest.raises(ApiError, match="m@2 has no LoRA adapter 'nope'") as caught:
        router.llm_route("m@2:nope")
    assert caught.value.status_code == 404


def test_models_lists_each_adapter_as_name_version_adapter() -> None:
    router = ModelRouter([ServedVersion("m@2", "m", None, 512, ("support",))], "emb")  # type: ignore[arg-type]
    assert {"m@2:support", "rag/m@2:support"} <= set(router.model_ids())
