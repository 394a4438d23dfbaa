"""The composed application: Gateway -> (Embedder, Retriever, LLM), each scaling on its own.

Two ways to run it, as Ray users expect:
    serve run deployments/serve_config.yaml      # the config the RayService embeds too
    serve run deployments.app:app                # defaults (same as the config's args)

`build_app(args)` is the builder the serve config points at: `args` is validated into AppSettings before
anything is deployed, so a bad config fails at load time with the field named.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from ray.serve import Application

from deployments.embedder import Embedder
from deployments.gateway import Gateway
from deployments.llm import LLMServer
from deployments.retriever import Retriever
from deployments.settings import AppSettings


def build_app(args: dict[str, Any] | AppSettings | None = None) -> Application:
    settings = load_settings(args)
    embedder = Embedder.options(**settings.embedder.serve_options("Embedder")).bind(settings.embedder)
    retriever = Retriever.options(**settings.retriever.serve_options("Retriever")).bind(settings.retriever)
    llm = LLMServer.options(**settings.llm.serve_options("LLMServer")).bind(settings.llm)
    gateway = Gateway.options(**settings.gateway.serve_options("Gateway"))
    return gateway.bind(settings, embedder, retriever, llm)


def load_settings(args: dict[str, Any] | AppSettings | None) -> AppSettings:
    if isinstance(args, AppSettings):
        return args
    try:
        return AppSettings.model_validate(args or {})
    except ValidationError as error:
        # Serve prints this at load time; make it name the config section, not just the model.
        raise ValueError(f"invalid surge application args in the serve config:\n{error}") from None


app = build_app()
