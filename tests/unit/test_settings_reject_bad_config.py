"""Settings are typed values: bad configs fail at load time with the field named."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from deployments.model_registry import SurgeAppSettings
from deployments.settings import AppSettings, AutoscalingSettings, LLMSettings, RetrieverSettings

SERVE_CONFIG = Path(__file__).resolve().parents[2] / "deployments" / "serve_config.yaml"


def test_max_replicas_below_min_replicas_is_rejected_naming_both() -> None:
    with pytest.raises(ValidationError, match=r"max_replicas \(1\) must be >= min_replicas \(2"):
        AutoscalingSettings(min_replicas=2, max_replicas=1)


def test_unknown_keys_are_rejected_with_their_name() -> None:
    with pytest.raises(ValidationError, match="max_replica"):
        AppSettings.model_validate({"llm": {"autoscaling": {"max_replica": 3}}})


def test_negative_values_are_rejected_naming_the_field() -> None:
    with pytest.raises(ValidationError, match="embedder.max_batch_size"):
        AppSettings.model_validate({"embedder": {"max_batch_size": 0}})


def test_keep_warm_keeps_one_replica_even_when_min_is_zero() -> None:
    scaling = AutoscalingSettings(min_replicas=0, max_replicas=2, keep_warm=True)
    assert scaling.to_serve()["min_replicas"] == 1
    assert AutoscalingSettings(min_replicas=0).to_serve()["min_replicas"] == 0


def test_initial_replicas_below_the_keep_warm_minimum_is_rejected() -> None:
    with pytest.raises(ValidationError, match=r"initial_replicas \(0\) must lie between min_replicas \(1\)"):
        AutoscalingSettings(min_replicas=0, max_replicas=1, keep_warm=True, initial_replicas=0)


def test_embedded_index_cannot_scale_out() -> None:
    with pytest.raises(ValidationError, match="autoscaling.max_replicas must be 1"):
        RetrieverSettings.model_validate({"autoscaling": {"min_replicas": 1, "max_replicas": 3}})


def test_pgvector_retriever_may_scale_out() -> None:
    settings = RetrieverSettings.model_validate(
        {"store": {"backend": "pgvector"}, "autoscaling": {"min_replicas": 1, "max_replicas": 3}}
    )
    assert settings.store.backend == "pgvector"


def test_gpu_device_without_gpus_is_rejected() -> None:
    with pytest.raises(ValidationError, match="num_gpus"):
        LLMSettings(device="cuda", num_gpus=0)


def test_cpu_device_reserving_gpus_is_rejected() -> None:
    with pytest.raises(ValidationError, match="device 'cpu' must not reserve GPUs"):
        LLMSettings(device="cpu", num_gpus=1)


def test_max_tokens_limit_must_leave_room_for_a_prompt() -> None:
    with pytest.raises(ValidationError, match="max_tokens_limit"):
        AppSettings.model_validate({"gateway": {"max_tokens_limit": 512}, "llm": {"max_model_len": 512}})


def test_settings_are_immutable_values() -> None:
    settings = AppSettings()
    with pytest.raises(ValidationError):
        settings.gateway.rag_top_k = 9  # type: ignore[misc]


def test_the_serve_config_args_validate() -> None:
    config = yaml.safe_load(SERVE_CONFIG.read_text())
    (application,) = config["applications"]
    assert application["import_path"] == "deployments.app:build_app"
    settings = SurgeAppSettings.model_validate(application["args"])
    assert settings.embedder.autoscaling.to_serve()["min_replicas"] == 0
    (version,) = settings.model_versions()  # the registry form: one version, one alias over it
    assert version.autoscaling.to_serve()["min_replicas"] == 0
    assert version.engine == "vllm" and not settings.legacy
    assert settings.aliases["chat"].weights == {version.key: 100}


def test_serve_options_carry_autoscaling_and_backpressure() -> None:
    options = AppSettings().llm.serve_options("LLMServer")
    assert options["name"] == "LLMServer"
    assert options["autoscaling_config"]["min_replicas"] == 0
    assert options["backpressure_config"]["status_code"] == 503
    assert options["max_queued_requests"] >= 1
