"""The sync engine, with a scripted adapter: isolation of failures, per-page progress, stops."""

import threading

import pytest

from adapters.base import Page
from adapters.errors import AuthError, ScopeError, StreamError
from adapters.streams import Stream
from connector.mirror.store import Mirror
from connector.run.sync import UnknownStream, sync_source


class Scripted:
    """An adapter whose streams are lists of steps: a Page to yield or an exception to raise."""

    kind = "fake"
    source = "fake"

    def __init__(self, script):
        self.script = script
        self.requests = 0
        self.seen_bookmarks = {}

    def stream_names(self):
        return list(self.script)

    def streams(self):
        """Every scripted stream counts contacts (its pages may carry other tables too)."""
        return [Stream(n, ("contacts",), "changes", None) for n in self.script]

    def fetch(self, stream, bookmark, run_started_at, full=False):
        self.seen_bookmarks[stream] = bookmark
        for step in self.script[stream]:
            self.requests += 1
            if isinstance(step, Exception):
                raise step
            yield step


def rows(n0, n1):
    return {"contacts": [{"id": i, "name": f"c{i}"} for i in range(n0, n1)]}


@pytest.fixture
def mirror(tmp_path):
    with Mirror(str(tmp_path / "m.db")) as m:
        yield m


def test_failing_stream_keeps_committed_pages_and_others_run(mirror):
    adapter = Scripted(
        {
            "a": [Page(rows=rows(1, 3), bookmark="a1"), Page(bookmark="a2")],
            "b": [Page(rows=rows(10, 12), bookmark="b1"), StreamError("source 'fake': page 2 is not JSON")],
            "c": [
                ValueError("surprise"),
            ],
            "d": [Page(rows=rows(20, 21), bookmark="d1")],
        }
    )
    results = {r.stream: r for r in sync_source(mirror, adapter)}
    assert [results[s].status for s in "abcd"] == ["ok", "failed", "failed", "ok"]
    assert results["b"].error == "source 'fake': page 2 is not JSON"
    assert "unexpected ValueError: surprise" in results["c"].error
    assert mirror.get_bookmark("fake", "a") == "a2"
    assert mirror.get_bookmark("fake", "b") == "b1"  # the committed page's progress is kept
    ids = [r[0] for r in mirror.conn.execute("SELECT id FROM contacts ORDER BY id")]
    assert ids == [1, 2, 10, 11, 20]
    runs = mirror.conn.execute(
        "SELECT stream, status, rows, requests, error FROM sync_runs ORDER BY id"
    ).fetchall()
    assert runs[1] == ("b", "failed", 2, 2, "source 'fake': page 2 is not JSON")


def test_bookmark_passed_back_next_run(mirror):
    adapter = Scripted({"a": [Page(rows=rows(1, 2), bookmark="2026-11-23T00:00:00Z")]})
    sync_source(mirror, adapter)
    sync_source(mirror, adapter)
    assert adapter.seen_bookmarks["a"] == "2026-11-23T00:00:00Z"
    sync_source(mirror, adapter, full=True)
    assert adapter.seen_bookmarks["a"] is None


def test_auth_error_stops_the_source(mirror):
    adapter = Scripted(
        {"a": [AuthError("source 'fake': token rejected (401)")], "b": [Page(rows=rows(1, 2))]}
    )
    results = sync_source(mirror, adapter)
    assert [r.status for r in results] == ["failed", "failed"]
    assert results[1].error == "not run: source 'fake': token rejected (401)"
    assert mirror.conn.execute("SELECT count(*) FROM contacts").fetchone()[0] == 0


def test_scope_error_skips_stream_with_warning(mirror, caplog):
    adapter = Scripted(
        {
            "calls": [ScopeError("source 'fake': webhook lacks scope 'telephony'")],
            "b": [Page(rows=rows(1, 2))],
        }
    )
    results = sync_source(mirror, adapter)
    assert [r.status for r in results] == ["skipped", "ok"]
    assert "telephony" in caplog.text


def test_unknown_stream(mirror):
    with pytest.raises(UnknownStream, match="no stream 'nope'"):
        sync_source(mirror, Scripted({"a": []}), streams=["nope"])


def test_stop_event_interrupts_after_the_current_page(mirror):
    stop = threading.Event()

    class Stopper(Scripted):
        def fetch(self, stream, bookmark, run_started_at, full=False):
            for page in super().fetch(stream, bookmark, run_started_at, full):
                stop.set()
                yield page

    adapter = Stopper(
        {
            "a": [Page(rows=rows(1, 2), bookmark="p1"), Page(rows=rows(2, 3), bookmark="p2")],
            "b": [Page(rows=rows(5, 6))],
        }
    )
    results = sync_source(mirror, adapter, stop=stop)
    assert [r.status for r in results] == ["interrupted", "interrupted"]
    assert mirror.get_bookmark("fake", "a") == "p1"
    assert [r[0] for r in mirror.conn.execute("SELECT id FROM contacts")] == [1]


def test_a_run_counts_entities_of_its_main_table_not_link_rows(mirror, caplog):
    class Deals(Scripted):
        def streams(self):
            return [Stream("deals", ("deals", "deal_contacts"), "changes", None)]

    deals = [{"id": i, "status": "open", "is_deleted": 0} for i in (1, 2)]
    links = [{"deal_id": d, "contact_id": c} for d in (1, 2) for c in (7, 8, 9)]
    adapter = Deals(
        {
            "deals": [
                Page(rows={"deals": deals, "deal_contacts": links}),
                Page(deleted={"deals": [2]}, bookmark="b"),
            ]
        }
    )
    caplog.set_level("INFO")
    (result,) = sync_source(mirror, adapter)
    assert mirror.conn.execute("SELECT count(*) FROM deal_contacts").fetchone()[0] == 6
    assert result.rows == 3  # two deals written, one deleted; the six links are not deals
    assert mirror.conn.execute("SELECT rows FROM sync_runs").fetchone()[0] == 3
    ends = [r.getMessage() for r in caplog.records if r.getMessage().startswith("sync source=")]
    assert len(ends) == 1 and " rows=3 " in ends[0]
