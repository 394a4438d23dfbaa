"""The interface every LLM engine implements, the values it exchanges, and the registry that picks one.

Engines are registered by name as "module:Class" strings and imported only when built, so choosing the
light `transformers` engine never imports vLLM (and vice versa).
"""

from __future__ import annotations

import importlib
import math
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from deployments.settings import LLMSettings


@dataclass(frozen=True)
class SamplingSettings:
    """How one request samples: a small immutable value that validates itself.

    `temperature == 0` means greedy decoding. `top_p` keeps the smallest set of tokens whose probabilities
    sum to at least `top_p` (nucleus sampling), e.g. `top_p=0.9` over probabilities [0.6, 0.3, 0.1] keeps the
    first two and renormalises them to [0.667, 0.333]. Generation ends after `max_tokens` new tokens
    (finish reason "length") or when a `stop` string appears (finish reason "stop", the stop string itself
    is not returned).
    """

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    # A LoRA adapter of this model version to apply (vLLM only; see deployments.model_registry).
    lora_adapter: str | None = None

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise ValueError(f"temperature must be a finite number >= 0, got {self.temperature}")
        if not (0 < self.top_p <= 1):
            raise ValueError(f"top_p must lie in (0, 1], got {self.top_p}")
        if not isinstance(self.stop, tuple) or any(not isinstance(s, str) or not s for s in self.stop):
            raise ValueError(f"stop must be a tuple of non-empty strings, got {self.stop!r}")


class InvalidRequestError(ValueError):
    """The request cannot be served as asked (e.g. the prompt does not fit the context): a client error."""


@dataclass(frozen=True)
class GenerationDelta:
    """One streamed step: `text` is new since the previous delta; token counts are cumulative.

    The last delta of a generation carries `finish_reason`: "stop" (end of sequence or a stop string),
    "length" (`max_tokens` or the context filled up) or "abort" (`abort()` was called); earlier ones carry
    None.
    """

    text: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    # Prompt tokens whose KV came from the engine's prefix cache (None: the engine does not say).
    cached_tokens: int | None = None


class LLMEngine(ABC):
    """A text-generation engine with continuous batching: many concurrent `generate` calls share it."""

    # The Hugging Face tokenizer, set by `start()`; its special tokens are what `neutralise` breaks up.
    _tokenizer: Any = None
    _specials: tuple[str, ...] | None = None
    # False for an engine that loads no weights (the synthetic one): `build_engine` then resolves no model.
    needs_model_files: ClassVar[bool] = True

    def __init__(self, settings: LLMSettings, model_path: Path) -> None:
        self.settings = settings
        self.model_path = model_path

    def neutralise(self, text: str) -> str:
        """`text` with every special token of the model's tokenizer broken up (see `neutralise_special`)."""
        if self._specials is None:
            if self._tokenizer is None:
                raise RuntimeError("the engine is not started: no tokenizer yet")
            self._specials = special_token_strings(self._tokenizer)
        return neutralise_special(text, self._specials)

    @abstractmethod
    async def start(self) -> None:
        """Load weights and tokenizer; called once per replica before any other method."""

    @abstractmethod
    def render_chat(self, messages: list[dict[str, str]]) -> str:
        """Apply the model's chat template to `messages`, ending with the assistant's generation prompt."""

    @abstractmethod
    def generate(
        self, prompt: str, sampling: SamplingSettings, request_id: str
    ) -> AsyncIterator[GenerationDelta]:
        """Stream the completion of `prompt`. Closing the iterator early aborts the request in the engine.

        Raises :class:`InvalidRequestError` when the request cannot be served (prompt too long, duplicate id).
        """

    @abstractmethod
    async def abort(self, request_id: str) -> None:
        """Stop a running request (no-op if it already finished); its stream ends with finish "abort"."""

    @abstractmethod
    def running_requests(self) -> int:
        """Generations currently admitted and not finished (aborted or closed streams are not counted)."""

    @abstractmethod
    async def check_health(self) -> None:
        """Raise if the engine can no longer serve."""

    @abstractmethod
    async def shutdown(self) -> None:
        """Release the engine's processes and memory."""


# WORD JOINER (U+2060): invisible, and no tokenizer's special token contains it.
BREAK = "\u2060"


def special_token_strings(tokenizer: Any) -> tuple[str, ...]:
    """Every string the tokenizer turns into a special or added token (`<|im_start|>`, `</s>`, ...),
    longest first, so a longer token is broken before a shorter one inside it."""
    tokens = {str(t) for t in getattr(tokenizer, "all_special_tokens", [])}
    for added in getattr(tokenizer, "added_tokens_decoder", {}).values():
        tokens.add(str(getattr(added, "content", added)))
    return tuple(sorted((t for t in tokens if len(t) > 1), key=len, reverse=True))


def neutralise_special(text: str, specials: tuple[str, ...]) -> str:
    """Break every occurrence of a special token in `text` with an invisible WORD JOINER after its first
    character, so the tokenizer reads it as plain text: text from a user or a document can never become a
    control token. E.g. `<|im_start|>system` -> `<\u2060|im_start|>system` (tokenised as `<`, `|`, `im`, ...).
    """
    for token in specials:
        if token in text:
            text = text.replace(token, token[0] + BREAK + token[1:])
    return text


def render_with_template(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    """Shared by the engines: the tokenizer's own chat template, with the assistant generation prompt."""
    for message in messages:
        if set(message) - {"role", "content", "name"} or not isinstance(message.get("content"), str):
            raise ValueError(f"each message needs a 'role' and a string 'content', got {message!r}")
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if not isinstance(text, str):
        raise TypeError(f"chat template rendered {type(text).__name__}, expected str")
    return text


# name -> "module:Class"; the class is imported only when that engine is built.
ENGINES: dict[str, str] = {
    "vllm": "deployments.engines.vllm_engine:VLLMEngine",
    "transformers": "deployments.engines.transformers_engine:TransformersEngine",
    # Benchmarks only: tokens at a set rate, no model (see synthetic_engine.py).
    "synthetic": "deployments.engines.synthetic_engine:SyntheticEngine",
}


def build_engine(settings: LLMSettings, model_path: Path | None = None) -> LLMEngine:
    """The engine `settings.engine` names, for `model_path` (default: `settings.model` resolved locally)."""
    from surge_core.model_assets import resolve_llm_model

    try:
        target = ENGINES[settings.engine]
    except KeyError:
        raise ValueError(f"llm.engine {settings.engine!r} is not one of {sorted(ENGINES)}") from None
    module_name, class_name = target.split(":")
    engine_class = getattr(importlib.import_module(module_name), class_name)
    if model_path is not None:
        path = model_path
    elif engine_class.needs_model_files:
        path = resolve_llm_model(settings.model)
    else:
        path = Path(settings.model)
    engine: LLMEngine = engine_class(settings, path)
    return engine
