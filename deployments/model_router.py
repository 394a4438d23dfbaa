"""The model router: the one place where a request's `model` becomes the version (deployment) serving it.

Names a client may use:
- `name@version` (a registered version, e.g. `smollm2@2`);
- an alias (`chat`): a weighted, sticky choice among versions (`deployments.routing_weights`);
- a bare model name (`smollm2`): the version listed first for that name in `models:`;
- any of these with `:<adapter>` for one of the version's LoRA adapters (`smollm2@2:support`);
- any of these behind `rag/` (retrieval-augmented);
- the embedding model's name (embeddings only).

An operator (or a test) pins a version with the `x-surge-version: name@version` header, whatever the alias
says. Alias weights and shadows live in the gateway's `user_config`, so `set_aliases` swaps them in place
(Serve's `reconfigure`) without restarting any model; the rollback guard calls `set_weight`.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass

from deployments.model_registry import AliasSettings, check_aliases
from deployments.openai_api import RAG_MODEL_PREFIX, ApiError
from deployments.routing_weights import RoutingWeights
from deployments.stage_client import LLMClient

PIN_HEADER = "x-surge-version"
VERSION_HEADER = "x-surge-model-version"


@dataclass(frozen=True)
class ServedVersion:
    """One registered version as the router sees it: its key, its client and its context length."""

    key: str
    name: str
    llm: LLMClient
    max_model_len: int
    lora_adapters: tuple[str, ...] = ()
    # Its system-prompt template (`system_prompt_template_version` and text), None when it has none.
    prompt_version: str | None = None
    system_prompt: str | None = None


@dataclass(frozen=True)
class LLMRoute:
    """Where a chat or completion request goes: the version's client, whether the name asked for RAG,
    the alias it came through (if any), and the shadow version to mirror it to (if chosen)."""

    requested: str
    served_name: str
    llm: LLMClient
    rag: bool
    version: str = ""
    alias: str | None = None
    max_model_len: int = 512
    shadow: ServedVersion | None = None
    lora_adapter: str | None = None
    prompt_version: str | None = None
    system_prompt: str | None = None


@dataclass(frozen=True)
class AliasRoute:
    weights: RoutingWeights
    shadow: str | None
    shadow_fraction: float


class ModelRouter:
    def __init__(
        self,
        versions: list[ServedVersion],
        embedding_name: str,
        aliases: Mapping[str, AliasSettings] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if not versions:
            raise ValueError("the router needs at least one model version")
        self.versions = {v.key: v for v in versions}
        self.default_of_name: dict[str, str] = {}
        for v in versions:
            self.default_of_name.setdefault(v.name, v.key)
        self.embedding_name = embedding_name
        self._rng = rng or random.Random()
        self.aliases: dict[str, AliasRoute] = {}
        self.set_aliases(aliases or {})

    @classmethod
    def single(cls, name: str, llm: LLMClient, embedding_name: str, max_model_len: int = 512) -> ModelRouter:
        """A router of one model, `name@1` (also reachable as `name`): the legacy `llm:` config."""
        return cls([ServedVersion(f"{name}@1", name, llm, max_model_len)], embedding_name)

    # ------------------------------------------------------------------ configuration (in place)

    def set_aliases(self, aliases: Mapping[str, AliasSettings]) -> None:
        """Replace every alias at once (validated first: a bad table leaves the old one in force)."""
        check_aliases(dict(aliases), set(self.versions), set(self.default_of_name))
        self.aliases = {
            name: AliasRoute(RoutingWeights(spec.weights), spec.shadow, spec.shadow_fraction)
            for name, spec in aliases.items()
        }

    def set_weight(self, alias: str, version: str, weight: float) -> RoutingWeights:
        """Change one version's weight in one alias (e.g. a rollback to 0); returns the new weights."""
        route = self.aliases[alias]
        weights = route.weights.with_weight(version, weight)
        self.aliases = {**self.aliases, alias: AliasRoute(weights, route.shadow, route.shadow_fraction)}
        return weights

    # ------------------------------------------------------------------ lookups

    def model_ids(self) -> list[str]:
        """What `/v1/models` lists: every version, bare name and alias, and each version's LoRA adapters as
        `name@version:adapter` (as vLLM's own server lists adapters), each also with `rag/`."""
        adapters = [f"{key}:{a}" for key, served in self.versions.items() for a in served.lora_adapters]
        names = list(self.versions) + adapters + list(self.default_of_name) + list(self.aliases)
        return names + [f"{RAG_MODEL_PREFIX}{n}" for n in names] + [self.embedding_name]

    def llm_route(self, model: str, sticky_key: str | None = None, pinned: str | None = None) -> LLMRoute:
        """Resolve a chat/completions `model` (and an optional pinned version); 404 naming the model."""
        rag = model.startswith(RAG_MODEL_PREFIX)
        base, _, adapter = model.removeprefix(RAG_MODEL_PREFIX).partition(":")
        alias = self.aliases.get(base)
        if base in self.versions:
            key = base
        elif alias is None and base not in self.default_of_name:
            raise ApiError(
                404,
                f"model {model!r} is not served here; use one of: "
                + ", ".join(repr(n) for n in sorted({*self.default_of_name, *self.versions, *self.aliases})),
                param="model",
                error_type="model_not_found",
            )
        elif pinned:
            if pinned not in self.versions:
                raise ApiError(400, f"pinned version {pinned!r} is not registered", param=PIN_HEADER)
            key = pinned
        elif alias is not None:
            key = alias.weights.choose(sticky_key, self._rng)
        else:
            key = self.default_of_name[base]
        served = self.versions[key]
        if adapter and adapter not in served.lora_adapters:
            raise ApiError(
                404,
                f"model {model!r}: {key} has no LoRA adapter {adapter!r}",
                param="model",
                error_type="model_not_found",
            )
        return LLMRoute(
            requested=model,
            served_name=served.name,
            llm=served.llm,
            rag=rag,
            version=key,
            alias=base if alias is not None else None,
            max_model_len=served.max_model_len,
            shadow=self._shadow_for(alias, key),
            lora_adapter=adapter or None,
            prompt_version=served.prompt_version,
            system_prompt=served.system_prompt,
        )

    def _shadow_for(self, alias: AliasRoute | None, chosen: str) -> ServedVersion | None:
        if alias is None or alias.shadow is None or alias.shadow == chosen:
            return None
        if alias.shadow_fraction <= 0 or self._rng.random() >= alias.shadow_fraction:
            return None
        return self.versions[alias.shadow]

    def check_embedding_model(self, model: str) -> None:
        if model != self.embedding_name:
            raise ApiError(
                404,
                f"embedding model {model!r} is not served; use {self.embedding_name!r}",
                param="model",
                error_type="model_not_found",
            )
