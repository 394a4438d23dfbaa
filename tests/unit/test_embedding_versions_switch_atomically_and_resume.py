"""Embedding-version bookkeeping (`surge_core.embedding_versions`): a new version builds beside the active
one, activates only when complete and in one atomic write, and a crash mid-rebuild leaves the old version
active with the checkpoint to resume from."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from surge_core.embedding import EmbeddingModelSettings
from surge_core.embedding_versions import (
    VERSION_KEY,
    EmbeddingVersion,
    FileVersionCatalog,
    open_version_catalog,
    open_version_store,
    version_store_settings,
)
from surge_core.store_settings import EmbeddedStoreSettings, PgVectorStoreSettings
from surge_core.vector_store import ChunkRecord

FULL = EmbeddingModelSettings()
TRUNCATED = EmbeddingModelSettings(truncate_dim=256)


def _v(name: str, embedder: EmbeddingModelSettings = FULL, dimensions: int = 384) -> EmbeddingVersion:
    return EmbeddingVersion(name=name, embedder=embedder, dimensions=dimensions)


@pytest.fixture
def store(tmp_path: Path) -> EmbeddedStoreSettings:
    return EmbeddedStoreSettings(path=tmp_path / "index")


@pytest.fixture
def v1_active(store: EmbeddedStoreSettings) -> FileVersionCatalog:
    catalog = FileVersionCatalog(store)
    catalog.register(_v("v1"))
    catalog.complete("v1")
    catalog.activate("v1")
    return catalog


def test_a_store_without_a_catalog_has_no_active_version(store: EmbeddedStoreSettings) -> None:
    assert open_version_catalog(store).active() is None


def test_a_registered_version_is_building_and_does_not_replace_the_active_one(
    v1_active: FileVersionCatalog,
) -> None:
    v2 = v1_active.register(_v("v2", TRUNCATED, 256))
    assert v2.state == "building"
    assert v2.checkpoint == {}
    active = v1_active.active()
    assert active is not None and active.name == "v1"


def test_an_incomplete_version_cannot_be_activated(v1_active: FileVersionCatalog) -> None:
    v1_active.register(_v("v2", TRUNCATED, 256))
    with pytest.raises(ValueError, match="'v2' is building"):
        v1_active.activate("v2")
    assert v1_active.read().active == "v1"


def test_activating_an_unknown_version_names_it(v1_active: FileVersionCatalog) -> None:
    with pytest.raises(ValueError, match="'v9' is not registered"):
        v1_active.activate("v9")


def test_a_complete_version_activates_and_the_pointer_moves(v1_active: FileVersionCatalog) -> None:
    v1_active.register(_v("v2", TRUNCATED, 256))
    v1_active.complete("v2")
    v1_active.activate("v2")
    reread = FileVersionCatalog(EmbeddedStoreSettings(path=v1_active.path.parent)).active()
    assert reread is not None and reread.name == "v2" and reread.dimensions == 256
    assert reread.embedder.truncate_dim == 256


def test_a_crash_mid_rebuild_leaves_the_old_version_active_and_the_rebuild_resumable(
    v1_active: FileVersionCatalog, store: EmbeddedStoreSettings
) -> None:
    v1_active.register(_v("v2", TRUNCATED, 256))
    v1_active.checkpoint("v2", {0: 40})
    v1_active.checkpoint("v2", {1: 7})
    v1_active.checkpoint("v2", {0: 64})
    # The process dies in the middle of the next catalog write: nothing of it may land.
    with pytest.raises(RuntimeError), v1_active._update() as raw:
        raw["active"] = "v2"
        raw["versions"]["v2"]["checkpoint"] = {"0": 999}
        raise RuntimeError("killed")

    after_restart = FileVersionCatalog(store)
    assert after_restart.read().active == "v1"
    resumed = after_restart.register(_v("v2", TRUNCATED, 256))  # the job, started again
    assert resumed.state == "building"
    assert resumed.checkpoint == {0: 64, 1: 7}
    assert not list((store.path).glob("*.tmp*")), "no half-written catalog left behind"


def test_the_same_version_name_with_another_model_is_refused(v1_active: FileVersionCatalog) -> None:
    with pytest.raises(ValueError, match="'v1' exists with another model"):
        v1_active.register(_v("v1", TRUNCATED, 256))


def test_batch_size_and_threads_do_not_make_another_embedding_space() -> None:
    tuned = EmbeddingModelSettings(max_batch_size=8, torch_threads=2)
    assert _v("v1").same_model(_v("v1", tuned))
    assert not _v("v1").same_model(_v("v1", EmbeddingModelSettings(normalize=False)))


def test_each_version_has_its_own_index_and_every_chunk_names_its_version(
    store: EmbeddedStoreSettings,
) -> None:
    chunk = ChunkRecord("d1", 0, "Etna is in Sicily.", np.ones(256, np.float32), {"lang": "en"})
    with open_version_store(store, _v("v2", TRUNCATED, 256)) as v2:
        assert v2.replace_documents({"d1": [chunk]}).written == 1
        [hit] = v2.search(np.ones(256), 1)
    assert hit.metadata == {"lang": "en", VERSION_KEY: "v2"}
    assert version_store_settings(store, "v2").path == store.path / "versions" / "v2"


def test_a_pgvector_version_lives_in_a_sibling_table() -> None:
    assert version_store_settings(PgVectorStoreSettings(table="chunks"), "v2").table == "chunks_v_v2"  # type: ignore[union-attr]


@settings(max_examples=200, deadline=None)
@given(name=st.text(max_size=40))
def test_an_untrusted_version_name_never_leaves_the_versions_directory(name: str) -> None:
    base = EmbeddedStoreSettings(path=Path("/srv/index"))
    try:
        located = version_store_settings(base, name)
    except ValueError as error:
        assert "must match" in str(error)
        return
    assert isinstance(located, EmbeddedStoreSettings)
    assert located.path.parent == Path("/srv/index/versions")
    assert located.path.name == name


@settings(max_examples=100, deadline=None)
@given(name=st.text(max_size=40))
def test_an_invalid_version_name_fails_at_load_naming_the_field(name: str) -> None:
    from pydantic import ValidationError

    try:
        EmbeddingVersion(name=name, embedder=FULL, dimensions=384)
    except ValidationError as error:
        assert error.errors()[0]["loc"] == ("name",)


def test_surge_reembed_refuses_the_http_sink_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from pipelines.cli import main

    assert main(["reembed", "--version", "v2", "--sink-url", "http://127.0.0.1:1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("surge: error: sink:") and "\n" not in err


def test_surge_reembed_refuses_a_version_name_that_could_leave_the_index(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from pipelines.cli import main

    argv = [
        "reembed",
        "--version",
        "../../etc",
        "--index-path",
        str(tmp_path),
        "--bootstrap-servers",
        "127.0.0.1:1",
    ]
    assert main(argv) == 2
    assert "must match" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
