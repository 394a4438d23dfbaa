"""LLM engines behind one small interface (`base.LLMEngine`), picked by `build_engine(settings)`."""

from deployments.engines.base import (
    ENGINES,
    GenerationDelta,
    InvalidRequestError,
    LLMEngine,
    SamplingSettings,
    build_engine,
)

__all__ = [
    "ENGINES",
    "GenerationDelta",
    "InvalidRequestError",
    "LLMEngine",
    "SamplingSettings",
    "build_engine",
]
