"""The composed application: Gateway -> (Embedder, Retriever, LLM), each scaling on its own.

Two ways to run it, as Ray users expect:
    serve run deployments/serve_config.yaml      # the config the RayService embeds too
    serve run deployments.app:app                # defaults (same as the config's args)

`build_app(args)` is the builder the serve config points at: `args` is validated into AppSettings before
anything is deployed, so a bad config fails at load time with the field named. The `OTEL_*` variables of
the process that builds the app reach every replica (`with_tracing_env`): tracing is configured by the
environment alone (`surge_core.tracing`).
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from ray.serve import Application, Deployment

from deployments.embedder import Embedder
from deployments.gateway import Gateway
from deployments.guardrails import DeployFacts, enforce, serve_http_host
from deployments.llm import LLMServer
from deployments.model_registry import SurgeAppSettings, stable_version
from deployments.retriever import Retriever
from deployments.settings import AppSettings
from surge_core.tracing import otel_env


def build_app(args: dict[str, Any] | AppSettings | None = None) -> Application:
    settings = load_settings(args)
    enforce(DeployFacts(settings, serve_http_host()), settings.guardrails.allow)  # fails naming the rule
    embedder = _stage(Embedder, settings.embedder.serve_options("Embedder"), settings.embedder).bind(
        settings.embedder
    )
    retriever = _stage(Retriever, settings.retriever.serve_options("Retriever"), settings.retriever).bind(
        settings.retriever
    )
    # One deployment per model version (`LLM_<name>_<version>`), each scaling on its own.
    llms = {
        version.key: _stage(LLMServer, version.serve_options(settings.deployment_of(version)), version).bind(
            version
        )
        for version in settings.model_versions()
    }
    # Alias weights and shadows travel as the gateway's user_config: changing them is a `reconfigure`.
    gateway_options = {**settings.gateway.serve_options("Gateway"), "user_config": settings.routing_config()}
    gateway_settings = settings.model_copy(update={"aliases": {}})
    gateway = _stage(Gateway, gateway_options, gateway_settings)
    return gateway.bind(gateway_settings, embedder, retriever, llms)


def _stage(deployment: object, options: dict[str, Any], versioned_by: Any) -> Deployment:
    # The classes are `@serve.deployment`-decorated; type checkers can't see that a class decorator
    # turned them into Deployments, so check it here instead.
    if not isinstance(deployment, Deployment):
        raise TypeError(f"{deployment!r} is not a Serve deployment")
    # A version derived from the settings: `serve.run` of a changed app keeps the replicas of every
    # deployment whose settings are unchanged (a serve-config deploy versions by its args instead).
    return deployment.options(
        **with_tracing_env(options), version=stable_version(versioned_by), _internal=True
    )


def with_tracing_env(options: dict[str, Any]) -> dict[str, Any]:
    """Pass the building process's `OTEL_*` variables to the stage's replicas (runtime_env env_vars), so
    tracing is configured where the app is deployed; a stage's own `env` wins over them."""
    passed = otel_env()
    if not passed:
        return options
    actor = dict(options.get("ray_actor_options", {}))
    runtime_env = dict(actor.get("runtime_env", {}))
    runtime_env["env_vars"] = {**passed, **runtime_env.get("env_vars", {})}
    return {**options, "ray_actor_options": {**actor, "runtime_env": runtime_env}}


def load_settings(args: dict[str, Any] | AppSettings | None) -> SurgeAppSettings:
    if isinstance(args, SurgeAppSettings):
        return args
    if isinstance(args, AppSettings):
        return SurgeAppSettings.model_validate(args.model_dump(exclude_unset=True))
    try:
        return SurgeAppSettings.model_validate(args or {})
    except ValidationError as error:
        # Serve prints this at load time; make it name the config section, not just the model.
        raise ValueError(f"invalid surge application args in the serve config:\n{error}") from None


app = build_app()
