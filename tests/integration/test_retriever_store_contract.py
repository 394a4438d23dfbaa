"""The VectorStore contract, checked against every backend: the embedded index (SQLite + FAISS in a temp
directory, no service) and pgvector with its HNSW index and with exact scans (a real PostgreSQL 18 from the
session fixture; marked integration).

Vectors are hand-made so the expected neighbours and scores are known exactly.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import psycopg
import pytest

from surge_core.store_settings import EmbeddedStoreSettings, PgVectorStoreSettings
from surge_core.vector_store import ChunkRecord, VectorStore, open_vector_store

DSN_ENV = "SURGE_TEST_PG_DSN"
DIMS = 4

StoreFactory = Callable[..., VectorStore]


@pytest.fixture(
    params=[
        "embedded",
        pytest.param("pgvector-hnsw", marks=pytest.mark.integration),
        pytest.param("pgvector-exact", marks=pytest.mark.integration),
    ]
)
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """Opens stores on one location (same directory / same table): a second call is a second client."""
    opened: list[VectorStore] = []
    if request.param == "embedded":
        settings: EmbeddedStoreSettings | PgVectorStoreSettings = EmbeddedStoreSettings(
            path=tmp_path / "index"
        )
    else:
        dsn = request.getfixturevalue("pg_dsn")
        request.getfixturevalue("monkeypatch").setenv(DSN_ENV, dsn)
        settings = PgVectorStoreSettings(
            dsn_env=DSN_ENV,
            table=f"t_{uuid.uuid4().hex[:12]}",
            pool_size=2,
            index="exact" if request.param == "pgvector-exact" else "hnsw",
        )

    def factory(dimensions: int = DIMS) -> VectorStore:
        store = open_vector_store(settings, dimensions)
        opened.append(store)
        return store

    yield factory
    for store in opened:
        store.close()
    if isinstance(settings, PgVectorStoreSettings):
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {settings.table}")
            conn.execute(f"DROP TABLE IF EXISTS {settings.table}_versions")


def chunk(
    doc_id: str, index: int, text: str, vector: list[float], **metadata: str | int | float | bool
) -> ChunkRecord:
    return ChunkRecord(doc_id=doc_id, chunk_index=index, text=text, embedding=vector, metadata=metadata)


def corpus() -> dict[str, list[ChunkRecord]]:
    return {
        "a": [
            chunk("a", 0, "alpha zero", [1, 0, 0, 0], lang="en", year=2024, public=True),
            chunk("a", 1, "alpha one", [0.8, 0.6, 0, 0], lang="en", year=2024, public=True),
        ],
        "b": [
            chunk("b", 0, "beta zero", [0, 1, 0, 0], lang="de", year=2023, public=False),
            chunk("b", 1, "beta one", [0, 0, 1, 0], lang="de", year=2023, public=False),
        ],
        "c": [chunk("c", 0, "gamma zero", [0, 0, 0, 1], lang="fr", year=2022.0, public=True)],
    }


QUERY = [1.0, 0.2, 0.1, 0.05]


def cosine(u: list[float], v: list[float]) -> float:
    a, b = np.asarray(u, dtype=np.float64), np.asarray(v, dtype=np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def keys(hits: list) -> list[tuple[str, int]]:
    return [(hit.doc_id, hit.chunk_index) for hit in hits]


# ------------------------------------------------------------------------------------------------- writes


def test_first_write_stores_every_chunk(open_store: StoreFactory) -> None:
    store = open_store()
    result = store.replace_documents(corpus())
    assert (result.written, result.unchanged, result.deleted) == (5, 0, 0)
    assert store.count_chunks() == 5
    assert store.count_documents() == 3


def test_replaying_the_same_write_changes_nothing(open_store: StoreFactory) -> None:
    store = open_store()
    store.replace_documents(corpus())
    replay = store.replace_documents(corpus())
    assert (replay.written, replay.unchanged, replay.deleted) == (0, 5, 0)
    assert store.count_chunks() == 5


def test_changed_chunk_is_rewritten_and_the_rest_left_alone(open_store: StoreFactory) -> None:
    store = open_store()
    store.replace_documents(corpus())
    docs = corpus()
    docs["a"][1] = chunk("a", 1, "alpha one, edited", [0, 0, 0, 1], lang="en", year=2024, public=True)
    result = store.replace_documents({"a": docs["a"]})
    assert (result.written, result.unchanged, result.deleted) == (1, 1, 0)
    assert [hit.text for hit in store.document_chunks("a")] == ["alpha zero", "alpha one, edited"]
    # The new embedding is the one searched: the edited chunk now sits on gamma's axis.
    assert set(keys(store.search([0, 0, 0, 1], 2))) == {("a", 1), ("c", 0)}


def test_changed_metadata_alone_counts_as_a_change(open_store: StoreFactory) -> None:
    store = open_store()
    store.replace_documents(corpus())
    docs = corpus()
    docs["c"][0] = chunk("c", 0, "gamma zero", [0, 0, 0, 1], lang="it", year=2022.0, public=True)
    result = store.replace_documents({"c": docs["c"]})
    assert (result.written, result.unchanged) == (1, 0)
    assert store.document_chunks("c")[0].metadata["lang"] == "it"


def test_shrinking_a_document_deletes_its_extra_chunks(open_store: StoreFactory) -> None:
    store = open_store()
    store.replace_documents(corpus())
    result = store.replace_documents({"a": corpus()["a"][:1]})
    assert (result.written, result.unchanged, result.deleted) == (0, 1, 1)
    assert keys(store.document_chunks("a")) == [("a", 0)]
    assert ("a", 1) not in keys(store.search([0.8, 0.6, 0, 0], 5))


def test_empty_chunk_list_removes_the_document(open_store: StoreFactory) -> None:
    store = open_store()
    store.replace_documents(corpus())
    result = store.replace_documents({"b": []})
    assert result.deleted == 2
    assert store.document_chunks("b") == []
    assert store.count_documents() == 2


def test_delete_counts_removed_chunks_and_ignores_unknown_ids(open_store: StoreFactory) -> None:
    store = open_store()
    store.replace_documents(corpus())
    assert store.delete_documents(["a", "no-such-doc"]) == 2
    assert store.delete_documents(["a"]) == 0
    assert store.count_chunks() == 3
    assert all(hit.doc_id != "a" for hit in store.search(QUERY, 10))


def test_an_older_version_never_overwrites_a_newer_one(open_store: StoreFactory) -> None:
    store = open_store()
    docs = corpus()
    newer = [chunk("a", 0, "newest text", [1, 0, 0, 0])]
    assert store.replace_documents({"a": newer}, {"a": (2, 50)}).written == 1
    # A zombie consumer (or a replay) writes the document as it was at offset 40 of the same partition.
    result = store.replace_documents({"a": docs["a"]}, {"a": (2, 40)})
    assert result.fenced == 1 and result.written == 0
    assert [h.text for h in store.document_chunks("a")] == ["newest text"]
    # The same version again (a replay after a crash) and a newer one are applied.
    assert store.replace_documents({"a": newer}, {"a": (2, 50)}).fenced == 0
    assert store.replace_documents({"a": docs["a"]}, {"a": (2, 60)}).fenced == 0
    assert len(store.document_chunks("a")) == len(docs["a"])


def test_a_delete_is_fenced_too_and_an_older_upsert_cannot_resurrect_the_document(
    open_store: StoreFactory,
) -> None:
    store = open_store()
    store.replace_documents(corpus(), {"a": (1, 10), "b": (1, 11)})
    assert store.delete_documents(["a"], {"a": (1, 5)}) == 0  # older than the stored upsert
    assert store.document_chunks("a") != []
    assert store.delete_documents(["a"], {"a": (1, 20)}) > 0
    assert store.replace_documents({"a": corpus()["a"]}, {"a": (1, 10)}).fenced == 1
    assert store.document_chunks("a") == []


def test_document_chunks_are_ordered_by_index_with_score_one(open_store: StoreFactory) -> None:
    store = open_store()
    docs = corpus()
    store.replace_documents({"a": list(reversed(docs["a"]))})
    hits = store.document_chunks("a")
    assert keys(hits) == [("a", 0), ("a", 1)]
    assert [hit.score for hit in hits] == [1.0, 1.0]
    assert hits[0].metadata == {"lang": "en", "year": 2024, "public": True}


# ------------------------------------------------------------------------------------------------ search


def test_search_ranks_by_cosine_similarity_with_exact_scores(open_store: StoreFactory) -> None:
    store = open_store()
    store.replace_documents(corpus())
    hits = store.search(QUERY, 3)
    assert keys(hits) == [("a", 0), ("a", 1), ("b", 0)]
    expected = [cosine(QUERY, v) for v in ([1, 0, 0, 0], [0.8, 0.6, 0, 0], [0, 1, 0, 0])]
    assert [hit.score for hit in hits] == pytest.approx(expected, abs=1e-5)
    assert hits[0].text == "alpha zero"


def test_scores_do_not_depend_on_vector_length(open_store: StoreFactory) -> None:
    store = open_store()
    store.replace_documents({"x": [chunk("x", 0, "long", [30, 40, 0, 0])]})
    (hit,) = store.search([3, 4, 0, 0], 1)
    assert hit.score == pytest.approx(1.0, abs=1e-5)
    (hit,) = store.search([0, 1, 0, 0], 1)
    assert hit.score == pytest.approx(0.8, abs=1e-5)


def test_top_k_larger_than_the_index_returns_every_chunk(open_store: StoreFactory) -> None:
    store = open_store()
    store.replace_documents(corpus())
    assert len(store.search(QUERY, 50)) == 5


def test_empty_index_returns_no_hits(open_store: StoreFactory) -> None:
    assert open_store().search(QUERY, 5) == []


def test_filter_by_equality_keeps_only_matching_chunks(open_store: StoreFactory) -> None:
    store = open_store()
    store.replace_documents(corpus())
    assert keys(store.search(QUERY, 5, where={"lang": "de"})) == [("b", 0), ("b", 1)]


def test_filter_with_a_list_means_any_of(open_store: StoreFactory) -> None:
    store = open_store()
    store.replace_documents(corpus())
    hits = store.search(QUERY, 5, where={"lang": ["fr", "de"]})
    assert keys(hits) == [("b", 0), ("b", 1), ("c", 0)]


def test_filter_requires_every_key(open_store: StoreFactory) -> None:
    store = open_store()
    store.replace_documents(corpus())
    assert keys(store.search(QUERY, 5, where={"public": True, "lang": ["en", "de"]})) == [("a", 0), ("a", 1)]
    assert store.search(QUERY, 5, where={"lang": "en", "year": 1999}) == []
    assert store.search(QUERY, 5, where={"missing_key": "x"}) == []


def test_filter_compares_numbers_numerically_and_keeps_booleans_apart(open_store: StoreFactory) -> None:
    store = open_store()
    store.replace_documents(corpus())
    assert {h.doc_id for h in store.search(QUERY, 5, where={"year": 2022})} == {"c"}  # stored as 2022.0
    assert {h.doc_id for h in store.search(QUERY, 5, where={"year": 2024.0})} == {"a"}
    store.replace_documents({"n": [chunk("n", 0, "one", [1, 1, 1, 1], flag=1)]})
    assert store.search(QUERY, 5, where={"flag": True}) == []
    assert {h.doc_id for h in store.search(QUERY, 5, where={"public": 1})} == set()
    assert {h.doc_id for h in store.search(QUERY, 5, where={"flag": 1})} == {"n"}


def test_filtered_search_still_returns_top_k_when_matches_are_far(open_store: StoreFactory) -> None:
    # Half the chunks sit next to the query, the half the filter keeps points away from it. On pgvector the
    # planner then walks the HNSW index, whose first candidates all fail the filter: without an iterative
    # scan it would return nothing.
    store = open_store()
    rng = np.random.default_rng(7)
    half = 1500
    near = (np.asarray(QUERY) + rng.normal(0, 0.01, (half, DIMS))).tolist()
    store.replace_documents(
        {f"near{i}": [chunk(f"near{i}", 0, "near", near[i], tag="near")] for i in range(half)}
    )
    store.replace_documents(
        {
            f"far{i}": [
                chunk(f"far{i}", 0, "far", [-1, rng.normal(0, 0.1), 0, rng.uniform(0.1, 1)], tag="far")
            ]
            for i in range(half)
        }
    )
    if store.backend == "pgvector":
        with psycopg.connect(os.environ[DSN_ENV], autocommit=True) as conn:
            conn.execute(f"ANALYZE {store.table}")  # type: ignore[attr-defined]
    hits = store.search(QUERY, 5, where={"tag": "far"})
    assert len(hits) == 5
    assert {hit.text for hit in hits} == {"far"}


def test_search_agrees_with_brute_force_on_random_vectors(open_store: StoreFactory) -> None:
    store = open_store(16)
    rng = np.random.default_rng(42)
    vectors = rng.normal(size=(300, 16)).astype(np.float32)
    store.replace_documents(
        {f"d{i}": [chunk(f"d{i}", 0, f"text {i}", vectors[i].tolist(), parity=i % 2)] for i in range(300)}
    )
    query = rng.normal(size=16).astype(np.float32)
    normed = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    similarity = normed @ (query / np.linalg.norm(query))
    for where, candidates in ((None, np.arange(300)), ({"parity": 1}, np.arange(1, 300, 2))):
        expected = [f"d{i}" for i in candidates[np.argsort(-similarity[candidates])][:10]]
        hits = store.search(query.tolist(), 10, where=where)
        found = [hit.doc_id for hit in hits]
        if store.backend == "embedded" or getattr(store, "exact", False):
            assert found == expected  # exact search
        else:
            assert len(set(found) & set(expected)) >= 9  # HNSW is approximate; recall@10 >= 0.9
        assert [hit.score for hit in hits] == sorted((hit.score for hit in hits), reverse=True)


# ------------------------------------------------------------------------------------------- validation


def test_wrong_dimensions_are_rejected_naming_the_chunk_and_nothing_is_written(
    open_store: StoreFactory,
) -> None:
    store = open_store()
    docs = corpus()
    docs["b"][1] = chunk("b", 1, "too long", [1, 2, 3, 4, 5])
    with pytest.raises(
        ValueError, match=r"document 'b' chunk 1: embedding has 5 dimensions, the index holds 4"
    ):
        store.replace_documents(docs)
    assert store.count_chunks() == 0


def test_query_with_wrong_dimensions_is_rejected(open_store: StoreFactory) -> None:
    store = open_store()
    with pytest.raises(ValueError, match="query: embedding has 3 dimensions"):
        store.search([1, 0, 0], 1)


def test_reopening_with_other_dimensions_is_rejected(open_store: StoreFactory) -> None:
    open_store().replace_documents(corpus())
    with pytest.raises(ValueError, match="4-dimensional"):
        open_store(8)


def test_zero_vectors_and_bad_arguments_are_rejected(open_store: StoreFactory) -> None:
    store = open_store()
    with pytest.raises(ValueError, match="zero vector"):
        store.replace_documents({"z": [chunk("z", 0, "zero", [0, 0, 0, 0])]})
    with pytest.raises(ValueError, match="chunk_index appears twice"):
        store.replace_documents({"z": [chunk("z", 0, "x", [1, 0, 0, 0]), chunk("z", 0, "y", [0, 1, 0, 0])]})
    with pytest.raises(ValueError, match="filed under"):
        store.replace_documents({"z": [chunk("other", 0, "x", [1, 0, 0, 0])]})
    with pytest.raises(ValueError, match="top_k"):
        store.search(QUERY, 0)
    with pytest.raises(ValueError, match="empty list"):
        store.search(QUERY, 1, where={"lang": []})


# ------------------------------------------------------------------------------------ persistence, sharing


def test_data_survives_close_and_reopen(open_store: StoreFactory) -> None:
    first = open_store()
    first.replace_documents(corpus())
    first.close()
    reopened = open_store()
    assert reopened.count_chunks() == 5
    assert keys(reopened.search(QUERY, 2)) == [("a", 0), ("a", 1)]
    assert reopened.replace_documents(corpus()).written == 0


def test_a_second_client_sees_the_first_ones_writes_and_deletes(open_store: StoreFactory) -> None:
    reader = open_store()
    writer = open_store()
    assert reader.search(QUERY, 5) == []
    writer.replace_documents(corpus())
    assert keys(reader.search(QUERY, 2)) == [("a", 0), ("a", 1)]
    writer.delete_documents(["a"])
    writer.replace_documents({"c": [chunk("c", 0, "gamma moved", [1, 0.1, 0, 0], lang="fr")]})
    hits = reader.search(QUERY, 5)
    assert hits[0].text == "gamma moved"
    assert all(hit.doc_id != "a" for hit in hits)
    assert reader.count_chunks() == 3


@pytest.mark.integration
def test_pgvector_delete_waits_for_the_per_document_lock_an_upsert_holds(
    pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    monkeypatch.setenv(DSN_ENV, pg_dsn)
    table = f"t_{uuid.uuid4().hex[:12]}"
    store = open_vector_store(PgVectorStoreSettings(dsn_env=DSN_ENV, table=table, index="exact"), DIMS)
    try:
        store.replace_documents(corpus())
        deleted = threading.Event()
        with psycopg.connect(pg_dsn) as holder:  # a writer of document "a" mid-transaction
            holder.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"{table}:a",))
            worker = threading.Thread(target=lambda: (store.delete_documents(["a"]), deleted.set()))
            worker.start()
            assert not deleted.wait(1.5), "delete_documents did not wait for the document's lock"
            holder.commit()
        assert deleted.wait(15)
        worker.join(15)
        assert store.document_chunks("a") == []
    finally:
        store.close()
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {table}")
            conn.execute(f"DROP TABLE IF EXISTS {table}_versions")
