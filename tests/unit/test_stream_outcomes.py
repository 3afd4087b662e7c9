"""A stream run's outcome and the re-authorise flag are decided once, where the stream ends (by
the exception's type), and read downstream: never re-derived from the wording of the error.

Each test below would fail if a reader went back to matching message text: errors here say
"not run: ..." or "re-authorise: run `crm-connector auth ...`" without being that, or are that
without saying it.
"""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest

from adapters.base import Page
from adapters.errors import (
    AuthError,
    BlockedError,
    ReauthoriseError,
    ScopeError,
    StreamError,
    UnreachableError,
    reauthorise,
)
from connector.cli.sync import _summary
from connector.config.loader import NotifyConfig
from connector.mirror.store import Mirror
from connector.run.jobs import Steps
from connector.run.notify import Notifier
from connector.run.sync import Outcome, StreamResult, failures, sync_source, unrun_cause
from tests.unit.test_jobs import World
from tests.unit.test_sync import Scripted, rows

SPENT = reauthorise("amoCRM", "fake", "the refresh token was refused (400)", " --code CODE")
SAYS_REAUTHORISE = "source 'fake': re-authorise: run `crm-connector auth fake` (quoted by the CRM)"


@pytest.fixture
def mirror(tmp_path):
    with Mirror(str(tmp_path / "m.db")) as m:
        yield m


class Alerts:
    def __init__(self):
        self.sent: list[tuple[str, str]] = []

    def __call__(self, title, body):
        self.sent.append((title, body))

    def notifier(self, urgent_only: bool = False) -> Notifier:
        return Notifier(NotifyConfig(), sender=self, urgent_only=urgent_only)


def recorded(mirror) -> list[tuple]:
    return mirror.conn.execute("SELECT stream, status, error FROM sync_runs ORDER BY id").fetchall()


# -- where the stream ends: the outcome and the flag by exception type -------------------------


def test_a_spent_refresh_token_sets_the_flag_and_leaves_the_rest_not_run(mirror):
    results = sync_source(mirror, Scripted({"a": [SPENT], "b": [Page(rows=rows(1, 2))]}))
    a, b = results
    assert (a.outcome, a.stops_source, a.reauthorise) == (Outcome.FAILED, True, True)
    assert (b.outcome, b.stops_source, b.reauthorise) == (Outcome.NOT_RUN, False, False)
    # sync_runs keeps the text it always had: a stream left unrun is 'failed', 'not run: <cause>'
    assert recorded(mirror) == [("a", "failed", str(SPENT)), ("b", "failed", f"not run: {SPENT}")]
    assert [r.status for r in results] == ["failed", "failed"]


@pytest.mark.parametrize(
    "err",
    [
        AuthError("source 'fake': token rejected (401)"),
        BlockedError("source 'fake': account blocked (403)"),
        UnreachableError("source 'fake': host refused the connection"),
    ],
)
def test_other_source_stopping_errors_do_not_ask_to_reauthorise(mirror, err):
    a, b = sync_source(mirror, Scripted({"a": [err], "b": [Page(rows=rows(1, 2))]}))
    assert (a.outcome, a.stops_source, a.reauthorise) == (Outcome.FAILED, True, False)
    assert b.outcome is Outcome.NOT_RUN


def test_the_flag_comes_from_the_type_not_the_wording(mirror):
    a, b = sync_source(mirror, Scripted({"a": [StreamError(SAYS_REAUTHORISE)], "b": [Page(rows=rows(1, 2))]}))
    assert (a.outcome, a.stops_source, a.reauthorise) == (Outcome.FAILED, False, False)
    assert b.outcome is Outcome.OK
    alerts = Alerts()
    assert alerts.notifier().sync_results("fake", [a, b]) == 1
    assert "re-authorise source" not in alerts.sent[0][0] and "fake/a" in alerts.sent[0][0]
    assert alerts.notifier(urgent_only=True).sync_results("fake", [a, b]) == 0


def test_a_scope_skipped_stream_is_skipped_not_failed(mirror):
    results = sync_source(
        mirror,
        Scripted(
            {"calls": [ScopeError("source 'fake': no scope 'telephony'")], "b": [Page(rows=rows(1, 2))]}
        ),
    )
    calls, b = results
    assert (calls.outcome, calls.stops_source, calls.reauthorise) == (Outcome.SKIPPED, False, False)
    assert b.outcome is Outcome.OK
    assert recorded(mirror)[0][:2] == ("calls", "skipped")
    assert Alerts().notifier().sync_results("fake", results) == 0
    res = SimpleNamespace(source="fake", rows=1, requests=2, results=results)
    assert _summary(res) == "fake: 1 rows, 2 requests, 1/2 streams ok (skipped: calls)"


def test_a_stop_before_a_stream_is_interrupted_and_after_a_stopping_failure_not_run(mirror):
    stop = threading.Event()
    stop.set()
    results = sync_source(mirror, Scripted({"a": [Page(rows=rows(1, 2))], "b": []}), stop=stop)
    assert [r.outcome for r in results] == [Outcome.INTERRUPTED] * 2
    assert [r[1] for r in recorded(mirror)] == ["interrupted"] * 2

    class StopsAfterFailing(Scripted):
        def fetch(self, stream, bookmark, run_started_at, full=False):
            stop.set()  # asked for while the failing stream runs: the cause stays the failure
            yield from super().fetch(stream, bookmark, run_started_at, full)

    stop.clear()
    results = sync_source(mirror, StopsAfterFailing({"a": [SPENT], "b": [], "c": []}), stop=stop)
    assert [r.outcome for r in results] == [Outcome.FAILED, Outcome.NOT_RUN, Outcome.NOT_RUN]


# -- downstream: readers of the outcome --------------------------------------------------------


def test_a_failure_whose_message_begins_not_run_is_still_a_failure():
    results = [
        StreamResult("s", "a", Outcome.FAILED, error="not run: the CRM said so"),
        StreamResult("s", "b", Outcome.FAILED, error="token rejected", stops_source=True),
        StreamResult("s", "c", Outcome.NOT_RUN, error="not run: token rejected"),
    ]
    assert failures(results) == "a: not run: the CRM said so; b: token rejected; 1 other stream not run"
    res = SimpleNamespace(source="s", rows=0, requests=2, results=results)
    assert _summary(res) == "s: 0 rows, 2 requests, 0/3 streams ok (failed: a, b; not run: c)"
    alerts = Alerts()
    assert alerts.notifier().sync_results("s", results) == 2
    assert "not run because of this: c" in alerts.sent[1][1]


def test_the_reauthorise_alert_follows_the_flag_not_the_message():
    alerts = Alerts()
    flagged = StreamResult("s", "users", Outcome.FAILED, error="refused", stops_source=True, reauthorise=True)
    assert alerts.notifier(urgent_only=True).sync_results("s", [flagged]) == 1
    assert alerts.sent[0][0] == "crm-connector: re-authorise source 's'"
    worded = StreamResult("s", "users", Outcome.FAILED, error=SAYS_REAUTHORISE, stops_source=True)
    assert alerts.notifier(urgent_only=True).sync_results("s", [worded]) == 0


def test_a_kpi_job_stopped_by_a_spent_token_alerts_to_reauthorise(tmp_path):
    w = World(tmp_path)
    for err, title in (
        (SPENT, "crm-connector: re-authorise source 'main'"),
        (RuntimeError(SAYS_REAUTHORISE), "crm-connector: kpi failed: main/kpi"),
    ):
        w.alerts.clear()

        def kpi(*a, _err=err, **k):
            raise _err

        res = w.run(sync=False, kpi=True, steps=Steps(adapter=w.adapter, kpi=kpi))
        assert res.status == "failed" and [t for t, _ in w.alerts] == [title]


def test_a_job_that_cannot_start_for_a_spent_token_alerts_to_reauthorise(tmp_path):
    w = World(tmp_path)

    def adapter(cfg, src):
        raise ReauthoriseError(f"source '{src.name}': no refresh token saved")

    res = w.run(steps=Steps(adapter=adapter))
    assert res.status == "failed"
    assert [t for t, _ in w.alerts] == ["crm-connector: re-authorise source 'main'"]


# -- the record: text as before, read back in one place ----------------------------------------


def test_outcomes_are_recorded_as_the_text_sync_runs_always_held():
    assert {o: o.recorded for o in Outcome} == {
        Outcome.OK: "ok",
        Outcome.FAILED: "failed",
        Outcome.SKIPPED: "skipped",
        Outcome.NOT_RUN: "failed",
        Outcome.INTERRUPTED: "interrupted",
    }
    assert StreamResult("s", "x", "skipped").outcome is Outcome.SKIPPED
    with pytest.raises(ValueError):
        StreamResult("s", "x", "not a status")


def test_unrun_cause_reads_only_the_record_of_a_stream_left_unrun(mirror):
    sync_source(mirror, Scripted({"a": [SPENT], "b": []}))
    (_, sa, ea), (_, sb, eb) = recorded(mirror)
    assert unrun_cause(sa, ea) is None and unrun_cause(sb, eb) == str(SPENT)
    assert unrun_cause("interrupted", "interrupted before this stream ran") is None
    assert unrun_cause("running", None) is None
