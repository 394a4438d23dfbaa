"""The (model, version) pair that metrics, traces and usage records name a served model by.

Until model versions land (`name@version` served names, the model-lifecycle work), a served name is one
model at version "1". This is the one place to switch: every caller goes through `model_and_version`.
"""

from __future__ import annotations

DEFAULT_VERSION = "1"


def model_and_version(served_name: str) -> tuple[str, str]:
    """`"smollm2"` -> `("smollm2", "1")`; `"smollm2@3"` -> `("smollm2", "3")` once versions are served."""
    model, _, version = served_name.partition("@")
    return model, version or DEFAULT_VERSION
