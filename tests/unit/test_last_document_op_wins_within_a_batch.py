"""A batch is reduced to each document's last op: the same end state as applying the ops one by one."""

from __future__ import annotations

from pipelines.ingestion import DocumentOp, last_op_per_document
from surge_core.records import DocumentDelete, DocumentUpsert


def test_a_later_delete_cancels_an_earlier_upsert() -> None:
    upserts, deletes = last_op_per_document(
        [DocumentUpsert(doc_id="a", text="v1"), DocumentDelete(doc_id="a")]
    )
    assert upserts == [] and deletes == ["a"]


def test_a_later_upsert_replaces_an_earlier_delete_and_upsert() -> None:
    ops: list[DocumentOp] = [
        DocumentUpsert(doc_id="a", text="v1"),
        DocumentDelete(doc_id="a"),
        DocumentUpsert(doc_id="a", text="v2"),
    ]
    upserts, deletes = last_op_per_document(ops)
    assert [u.text for u in upserts] == ["v2"] and deletes == []


def test_different_documents_are_all_kept() -> None:
    ops: list[DocumentOp] = [
        DocumentUpsert(doc_id="a", text="x"),
        DocumentDelete(doc_id="b"),
        DocumentUpsert(doc_id="c", text="y"),
    ]
    upserts, deletes = last_op_per_document(ops)
    assert [u.doc_id for u in upserts] == ["a", "c"] and deletes == ["b"]


def test_the_same_batch_replayed_gives_the_same_result() -> None:
    ops: list[DocumentOp] = [DocumentUpsert(doc_id="a", text="x"), DocumentDelete(doc_id="b")]
    assert last_op_per_document(ops) == last_op_per_document(ops + ops)
