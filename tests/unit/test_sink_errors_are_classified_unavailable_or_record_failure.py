"""Sink failures are sorted into "the sink is unavailable" (wait, keep the offset, dead-letter nothing)
and "this record failed" (bounded retries, then the DLQ), from real HTTP answers and real SQLite/OS
errors; and the HTTP sink sends exactly one API key."""

from __future__ import annotations

import errno
import http.server
import json
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines.consumer import SinkUnavailable
from pipelines.sinks import DocumentRejected, HttpSink, HttpSinkSettings, sink_unavailable_reason
from surge_core.records import DocumentDelete, DocumentUpsert


class _App(http.server.BaseHTTPRequestHandler):
    status = 200
    answer = b"{}"
    authorizations: list[str | None] = []
    bodies: list[dict[str, object]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        type(self).authorizations.append(self.headers.get("authorization"))
        type(self).bodies.append(json.loads(body))
        self.send_response(type(self).status)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(type(self).answer)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def app() -> Iterator[tuple[type[_App], str]]:
    handler = type("App", (_App,), {"status": 200, "answer": b"{}", "authorizations": [], "bodies": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield handler, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


DOC = [DocumentUpsert(doc_id="d1", text="hello")]


@pytest.mark.parametrize("status", [401, 403, 404, 408, 429, 502, 503, 504])
def test_auth_routing_and_overload_answers_mean_the_sink_is_unavailable(
    app: tuple[type[_App], str], status: int
) -> None:
    handler, url = app
    handler.status = status
    sink = HttpSink(HttpSinkSettings(url=url))
    with pytest.raises(SinkUnavailable):
        sink.write(DOC)


@pytest.mark.parametrize("status", [400, 413, 422, 500])
def test_other_errors_including_500_are_failures_of_the_record(
    app: tuple[type[_App], str], status: int
) -> None:
    handler, url = app
    handler.status = status
    with pytest.raises(DocumentRejected):
        HttpSink(HttpSinkSettings(url=url)).write(DOC)


def test_the_http_sink_sends_one_key_when_the_variable_holds_the_gateways_list(
    app: tuple[type[_App], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    handler, url = app
    monkeypatch.setenv("SURGE_API_KEY", " k1 , k2,k3")
    HttpSink(HttpSinkSettings(url=url)).write(DOC)
    assert handler.authorizations == ["Bearer k1"]


def test_sqlite_busy_and_full_mean_unavailable_but_a_constraint_error_does_not(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x UNIQUE)")
    holder.execute("BEGIN IMMEDIATE")
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    with pytest.raises(sqlite3.OperationalError) as busy:
        other.execute("BEGIN IMMEDIATE")
    assert sink_unavailable_reason(busy.value) is not None
    holder.execute("ROLLBACK")

    full = sqlite3.connect(tmp_path / "full.sqlite3", isolation_level=None)
    full.execute("CREATE TABLE t (x)")
    full.execute("PRAGMA max_page_count = 3")
    with pytest.raises(sqlite3.OperationalError) as disk_full:
        full.execute("INSERT INTO t SELECT zeroblob(100000)")
    assert "SQLITE_FULL" in (sink_unavailable_reason(disk_full.value) or "")

    holder.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(sqlite3.IntegrityError) as constraint:
        holder.execute("INSERT INTO t VALUES (1)")
    assert sink_unavailable_reason(constraint.value) is None


def test_enospc_means_unavailable_and_other_os_errors_do_not() -> None:
    assert sink_unavailable_reason(OSError(errno.ENOSPC, "No space left on device")) is not None
    assert sink_unavailable_reason(OSError(errno.ENOENT, "No such file")) is None


def test_the_http_sink_sends_each_documents_version_so_the_index_can_fence_it(
    app: tuple[type[_App], str],
) -> None:
    handler, url = app
    ops = [DocumentUpsert(doc_id="d1", text="hello"), DocumentDelete(doc_id="d2")]
    HttpSink(HttpSinkSettings(url=url)).write(ops, {"d1": (3, 41), "d2": (1, 7)})
    # Each request names the records' tenant: the app refuses it unless it is the sink key's tenant.
    assert handler.bodies == [
        {
            "tenant": "default",
            "documents": [{"id": "d1", "text": "hello", "metadata": {}}],
            "versions": {"d1": {"partition": 3, "offset": 41}},
        },
        {"tenant": "default", "delete": ["d2"], "versions": {"d2": {"partition": 1, "offset": 7}}},
    ]


def test_a_record_naming_another_tenant_than_the_sinks_key_is_the_records_failure(
    app: tuple[type[_App], str],
) -> None:
    # The gateway's 403 for the tenant (param "tenant"): this record is at fault (dead-lettered), not the
    # configuration; a 403 for anything else still means a misconfigured key.
    handler, url = app
    handler.status = 403
    handler.answer = json.dumps({"error": {"type": "permission_error", "param": "tenant"}}).encode()
    with pytest.raises(DocumentRejected, match="tenant"):
        HttpSink(HttpSinkSettings(url=url)).write([DocumentUpsert(doc_id="d1", text="x", tenant="acme")])
    assert handler.bodies[-1]["tenant"] == "acme"


def test_the_http_sink_wakes_the_embedder_in_the_background_with_one_tiny_call(
    app: tuple[type[_App], str],
) -> None:
    handler, url = app
    thread = HttpSink(HttpSinkSettings(url=url)).wake()
    assert thread is not None
    thread.join(timeout=10)
    assert handler.bodies == [{"model": "all-MiniLM-L6-v2", "input": ["wake"]}]
    assert HttpSink(HttpSinkSettings(url=url, wake_model=None)).wake() is None


def test_a_failed_wake_is_only_logged_never_raised() -> None:
    thread = HttpSink(HttpSinkSettings(url="http://127.0.0.1:9", timeout_s=1)).wake()
    assert thread is not None
    thread.join(timeout=10)
    assert not thread.is_alive()
