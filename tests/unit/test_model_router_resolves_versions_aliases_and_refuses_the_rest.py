"""The model router: versions, bare names, aliases (weighted, sticky), pins, shadows; anything else a 4xx."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deployments.model_registry import AliasSettings
from deployments.model_router import ModelRouter, ServedVersion
from deployments.openai_api import ApiError

VERSIONS = [ServedVersion(k, k.split("@")[0], None, 512) for k in ("m@1", "m@2", "s@1")]  # type: ignore[arg-type]
ALIASES = {
    "chat": AliasSettings(weights={"m@1": 80, "m@2": 20}),
    "mirrored": AliasSettings(weights={"m@1": 1}, shadow="s@1", shadow_fraction=1.0),
}


def _router() -> ModelRouter:
    return ModelRouter(VERSIONS, "emb", ALIASES, rng=random.Random(1))


def test_a_version_a_bare_name_and_rag_resolve_to_their_deployment() -> None:
    router = _router()
    assert router.llm_route("m@2").version == "m@2"
    assert router.llm_route("m").version == "m@1"  # the first listed version of the name
    route = router.llm_route("rag/chat", sticky_key="alice")
    assert route.rag and route.alias == "chat" and route.version in {"m@1", "m@2"}


def test_an_alias_is_sticky_per_key_and_a_pin_overrides_it() -> None:
    router = _router()
    first = {k: router.llm_route("chat", sticky_key=k).version for k in map(str, range(200))}
    assert first == {k: router.llm_route("chat", sticky_key=k).version for k in map(str, range(200))}
    assert router.llm_route("chat", sticky_key="0", pinned="m@2").version == "m@2"


def test_a_shadowed_alias_names_its_shadow_and_an_unshadowed_one_none() -> None:
    router = _router()
    assert router.llm_route("mirrored").shadow is not None and router.llm_route("chat").shadow is None


def test_set_weight_moves_traffic_in_place_and_an_invalid_table_keeps_the_old_one() -> None:
    router = _router()
    router.set_weight("chat", "m@1", 0)
    assert {router.llm_route("chat", sticky_key=str(k)).version for k in range(50)} == {"m@2"}
    with pytest.raises(ValueError, match="'gone@1' is not in models"):
        router.set_aliases({"chat": AliasSettings(weights={"gone@1": 1})})
    assert router.llm_route("chat", sticky_key="x").version == "m@2"


def test_models_lists_versions_names_aliases_and_their_rag_forms() -> None:
    ids = _router().model_ids()
    assert {"m@1", "m@2", "s@1", "m", "s", "chat", "mirrored", "rag/chat", "rag/m@2", "emb"} <= set(ids)


@settings(max_examples=300, deadline=None)
@given(
    model=st.text(max_size=80), pinned=st.one_of(st.none(), st.text(max_size=40)), key=st.text(max_size=40)
)
def test_any_model_name_and_pin_header_resolve_or_get_a_4xx_naming_the_field(
    model: str, pinned: str | None, key: str
) -> None:
    router = _router()
    try:
        route = router.llm_route(model, sticky_key=key, pinned=pinned)
    except ApiError as error:
        assert 400 <= error.status_code < 500 and error.param in {"model", "x-surge-version"}
    else:
        assert route.version in router.versions
