"""Streams side by side (`sync_source(parallel=...)`): which wait for which, failures that keep
every other stream's committed pages, mirror calls on the mirror's own thread, and limiters
that hold under many threads."""

import threading
import time

import pytest

from adapters.amocrm.client import PacedLimiter
from adapters.amocrm.streams import STREAMS as AMO_STREAMS
from adapters.base import Page
from adapters.bitrix24.limits import LeakyBucket
from adapters.bitrix24.streams import STREAMS as B24_STREAMS
from adapters.errors import AuthError, StreamError
from adapters.streams import Stream
from connector.mirror.store import Mirror
from connector.run.sync import sync_source, waits_for

BARRIER_S = 10.0  # streams meet within this side by side; one after another they never do


class Threads:
    """An adapter whose streams are lists of steps: a Page, an exception to raise, or a
    callable run in the stream's thread (a barrier the streams meet at). A first stream,
    `users`, comes before them (the first stream of a run goes alone)."""

    kind = "fake"
    source = "fake"
    requests = 0

    def __init__(self, script, tables=None):
        self.script = {"users": [Page(rows={"users": [{"id": 1, "name": "u"}]})], **script}
        self.tables = {"users": ("users",), **(tables or {})}
        self.threads: dict[str, set[str]] = {}

    def stream_names(self):
        return list(self.script)

    def streams(self):
        return [Stream(n, self.tables.get(n, ("contacts",)), "changes", None) for n in self.script]

    def fetch(self, stream, bookmark, run_started_at, full=False):
        for step in self.script[stream]:
            self.threads.setdefault(stream, set()).add(threading.current_thread().name)
            if isinstance(step, Exception):
                raise step
            if callable(step):
                step()
                continue
            yield step


def rows(n0, n1):
    return {"contacts": [{"id": i, "name": f"c{i}"} for i in range(n0, n1)]}


@pytest.fixture
def mirror(tmp_path):
    with Mirror(str(tmp_path / "m.db")) as m:
        yield m


def test_a_failing_stream_loses_no_other_streams_committed_pages(mirror):
    """Three streams commit a page each, meet, then one fails: its page stays, the other two
    run to the end beside it."""
    met = threading.Barrier(3, timeout=BARRIER_S)
    adapter = Threads(
        {
            "a": [Page(rows=rows(1, 3), bookmark="a1"), met.wait, Page(rows=rows(3, 5), bookmark="a2")],
            "b": [
                Page(rows=rows(10, 12), bookmark="b1"),
                met.wait,
                StreamError("source 'fake': page 2 broke"),
            ],
            "c": [Page(rows=rows(20, 21), bookmark="c1"), met.wait, Page(rows=rows(21, 23), bookmark="c2")],
        }
    )
    results = {r.stream: r for r in sync_source(mirror, adapter, parallel=3)}
    assert {s: r.status for s, r in results.items()} == {"users": "ok", "a": "ok", "b": "failed", "c": "ok"}
    assert results["b"].error == "source 'fake': page 2 broke"
    assert [mirror.get_bookmark("fake", s) for s in "abc"] == ["a2", "b1", "c2"]
    ids = [r[0] for r in mirror.conn.execute("SELECT id FROM contacts ORDER BY id")]
    assert ids == [1, 2, 3, 4, 10, 11, 20, 21, 22]
    runs = dict(mirror.conn.execute("SELECT stream, rows FROM sync_runs WHERE stream != 'users'"))
    assert runs == {"a": 4, "b": 2, "c": 3}
    # each stream ran in a thread of its own, none on the mirror's
    named = {s: t for s, ts in adapter.threads.items() for t in ts if s != "users"}
    assert len(set(named.values())) == 3 and threading.current_thread().name not in named.values()


def test_one_after_another_the_streams_never_meet(mirror):
    """The check above is real: with parallel=1 the first stream waits at the barrier alone."""
    met = threading.Barrier(2, timeout=0.5)
    adapter = Threads({"a": [met.wait, Page(rows=rows(1, 2))], "b": [met.wait, Page(rows=rows(2, 3))]})
    results = sync_source(mirror, adapter, parallel=1)
    assert [r.status for r in results] == ["ok", "failed", "failed"]  # BrokenBarrierError in each


def test_results_come_back_in_run_order_whatever_ends_first(mirror):
    slow = threading.Event()
    adapter = Threads(
        {
            "a": [lambda: slow.wait(BARRIER_S), Page(rows=rows(1, 2))],
            "b": [Page(rows=rows(2, 3)), slow.set],
        }
    )
    assert [r.stream for r in sync_source(mirror, adapter, parallel=2)] == ["users", "a", "b"]


def test_a_source_stopping_failure_leaves_the_streams_not_started_unrun(mirror):
    """An auth failure while another stream runs: that one ends as it would; one still
    waiting (c writes a's table) is recorded not run."""
    met = threading.Barrier(2, timeout=BARRIER_S)
    adapter = Threads(
        {
            "a": [met.wait, AuthError("source 'fake': token rejected (401)")],
            "b": [met.wait, Page(rows={"tasks": [{"id": 1, "text": "t"}]})],
            "c": [Page(rows=rows(2, 3))],
        },
        tables={"a": ("deals", "contacts"), "b": ("tasks",)},
    )
    results = sync_source(mirror, adapter, parallel=3)[1:]
    assert [r.status for r in results] == ["failed", "ok", "failed"]
    assert results[0].stops_source
    assert results[2].error == "not run: source 'fake': token rejected (401)"
    assert mirror.conn.execute("SELECT count(*) FROM contacts").fetchone()[0] == 0
    assert mirror.conn.execute("SELECT count(*) FROM tasks").fetchone()[0] == 1


def test_a_stop_ends_running_streams_after_their_page_and_leaves_waiting_ones_unrun(mirror):
    stop = threading.Event()
    adapter = Threads(
        {
            "a": [Page(rows=rows(1, 2), bookmark="a1"), stop.set, Page(rows=rows(2, 3), bookmark="a2")]
            + [Page(rows=rows(3, 4), bookmark="a3")],
            "b": [Page(rows={"tasks": [{"id": 1, "text": "t"}]})],
        },
        tables={"a": ("deals", "tasks"), "b": ("tasks",)},  # b writes a's table: it waits for a
    )
    results = sync_source(mirror, adapter, stop=stop, parallel=2)[1:]
    assert [r.status for r in results] == ["interrupted", "interrupted"]
    assert results[1].error == "interrupted before this stream ran"
    assert mirror.get_bookmark("fake", "a") == "a2"  # the page under way when the stop came


def test_bitrix24_streams_wait_only_for_the_snapshots_and_reconcile_waits_for_all():
    after = waits_for(list(B24_STREAMS))
    assert after["users"] == set() and after["pipelines"] == {"users"}  # the first goes alone
    for s in ("companies", "contacts", "leads", "deals", "tasks", "calls", "stage_history", "activities"):
        assert after[s] == {"users", "pipelines"}, s
    assert after["reconcile"] == {s.name for s in B24_STREAMS} - {"reconcile"}


def test_amocrm_events_come_after_every_stream_whose_entities_they_write():
    after = waits_for(list(AMO_STREAMS))
    assert after["deals"] == {"users", "pipelines"}
    # the calls of leads, contacts and companies write rows of their own: side by side
    assert after["calls_contacts"] == {"users", "pipelines"}
    assert after["events"] == {s.name for s in AMO_STREAMS} - {"events"}


def test_a_narrowed_run_orders_only_the_streams_it_runs():
    wanted = [s for s in AMO_STREAMS if s.name in ("deals", "events")]
    assert waits_for(wanted) == {"deals": set(), "events": {"deals"}}
    wanted = [s for s in AMO_STREAMS if s.name in ("tasks", "calls_leads", "calls_contacts")]
    assert waits_for(wanted) == {"tasks": set(), "calls_leads": {"tasks"}, "calls_contacts": {"tasks"}}


def test_an_unreachable_host_is_tried_once_not_once_per_stream(mirror):
    """The first stream goes alone: its failure stops the source before any other starts."""
    from adapters.errors import UnreachableError

    adapter = Threads(
        {"a": [Page(rows=rows(1, 2))], "b": [Page(rows=rows(2, 3))]},
    )
    adapter.script["users"] = [UnreachableError("source 'fake': cannot reach 127.0.0.1 port 9")]
    results = sync_source(mirror, adapter, parallel=3)
    assert [r.status for r in results] == ["failed"] * 3
    assert [r.error for r in results[1:]] == ["not run: source 'fake': cannot reach 127.0.0.1 port 9"] * 2
    assert set(adapter.threads) == {"users"}


def _most_in_any_window(times: list[float], width: float) -> int:
    times = sorted(times)
    return max(sum(1 for u in times[i:] if u < t + width) for i, t in enumerate(times))


def test_the_paced_limiter_holds_under_many_threads():
    """amoCRM's limiter, shared by every stream's threads: never more than 7 grants in any
    window of its length, however many threads ask at once."""
    limiter = PacedLimiter(7, per=1.0)
    grants, lock = [], threading.Lock()

    def ask():
        for _ in range(3):
            limiter.acquire()
            with lock:
                grants.append(time.monotonic())

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(grants) == 24
    assert _most_in_any_window(grants, 0.999) <= 7


def test_the_leaky_bucket_holds_under_many_threads():
    """Bitrix24's bucket (10 deep, 2 under the server's depth; drains 20/s here): 40 requests
    from 8 threads, never more in any window than the bucket holds plus what drains."""
    bucket = LeakyBucket(size=10, drain=20.0)
    grants, lock = [], threading.Lock()

    def ask():
        for _ in range(5):
            bucket.acquire()
            with lock:
                grants.append(time.monotonic())

    t0 = time.monotonic()
    threads = [threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(grants) == 40
    assert max(grants) - t0 >= (40 - 8) / 20.0 - 0.05
    for width in (0.25, 0.5, 1.0):
        assert _most_in_any_window(grants, width) <= 8 + 20 * width + 1


def test_a_storage_failure_is_raised_once_the_streams_beside_it_have_ended(mirror):
    """The mirror refusing one stream's page stops the run, but a stream already running
    beside it still ends, with its pages committed."""
    from connector.mirror.storage import StorageError

    met = threading.Barrier(2, timeout=BARRIER_S)
    adapter = Threads(
        {
            "a": [met.wait, Page(rows={"tasks": [{"id": 1, "no_such_column": 1}]})],
            "b": [met.wait, Page(rows=rows(1, 2), bookmark="b1"), Page(rows=rows(2, 3), bookmark="b2")],
        },
        tables={"a": ("tasks",)},
    )
    with pytest.raises(StorageError, match="no_such_column"):
        sync_source(mirror, adapter, parallel=2)
    assert mirror.get_bookmark("fake", "b") == "b2"
    assert [r[0] for r in mirror.conn.execute("SELECT id FROM contacts ORDER BY id")] == [1, 2]


def test_eight_streams_writing_at_once_lose_nothing(mirror):
    """Eight streams of 40 pages each, side by side, into one mirror: every row, every
    stream's last bookmark and row count are there, and the file is sound."""
    script = {
        f"s{k}": [
            Page(
                rows={"contacts": [{"id": k * 10_000 + p * 10 + i, "name": "c"} for i in range(10)]},
                bookmark=f"{p}",
            )
            for p in range(40)
        ]
        for k in range(8)
    }
    results = sync_source(mirror, Threads(script), parallel=8)
    assert {r.status for r in results} == {"ok"}
    assert mirror.conn.execute("SELECT count(*) FROM contacts").fetchone()[0] == 8 * 40 * 10
    assert [mirror.get_bookmark("fake", f"s{k}") for k in range(8)] == ["39"] * 8
    assert dict(mirror.conn.execute("SELECT stream, rows FROM sync_runs WHERE stream != 'users'")) == {
        f"s{k}": 400 for k in range(8)
    }
    assert mirror.conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
