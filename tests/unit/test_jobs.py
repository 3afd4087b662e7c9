"""The job runner (`connector.run.jobs.run_job`): lock, stale runs, sync, KPIs, adapter, result.

The adapter is the in-memory write-back fake with scripted streams; the mirror is a real
SQLite file in a temp folder; the sync and KPI steps are the real ones unless a test swaps one.
"""

from __future__ import annotations

import threading

import pytest

from adapters.base import Page
from adapters.errors import AuthError, StreamError
from adapters.streams import Stream
from connector.config import loader as config_mod
from connector.kpi.engine import KpiError
from connector.mirror.store import Mirror
from connector.run.jobs import Steps, run_job
from connector.run.locks import LockTimeout, source_lock
from connector.run.notify import Notifier
from connector.run.sync import UnknownStream
from tests.fakes import FakeAdapter
from tests.unit.test_kpi import mark_synced

CONFIG = """
[storage]
path = "{db}"

[[sources]]
name = "main"
kind = "amocrm"
base_url = "https://example.amocrm.ru"
access_token = "tok-xyz-1234567890"

[[sources]]
name = "other"
kind = "amocrm"
base_url = "https://other.amocrm.ru"
access_token = "tok-other-1234567890"

[schedule]
lock_timeout_s = 0

[kpi.fields]
deals_won = {{ contact = "KPI: Deals won" }}
"""

WON = {
    "id": 101,
    "contact_id": 1,
    "status": "won",
    "amount": 1000,
    "currency": "RUB",
    "created_at": "2026-01-01T00:00:00Z",
    "closed_at": "2026-01-11T00:00:00Z",
    "updated_at": "2026-01-11T00:00:00Z",
    "is_deleted": 0,
}


class CrmFake(FakeAdapter):
    """The write-back fake, with streams read from a script (a Page to yield or an exception
    to raise, one request each) and a `closed` flag."""

    def __init__(self, script=None, **kw):
        super().__init__(**kw)
        self.script = (
            script
            if script is not None
            else {
                "contacts": [Page(rows={"contacts": [{"id": 1, "name": "Ann", "is_deleted": 0}]})],
                "deals": [Page(rows={"deals": [WON]})],
            }
        )
        self.closed = False

    def stream_names(self):
        return list(self.script)

    def streams(self):
        """Declarations: each scripted stream feeds the table of its name (deals: its links too)."""
        return [
            Stream(n, (n, "deal_contacts") if n == "deals" else (n,), "changes", None) for n in self.script
        ]

    def fetch(self, stream, bookmark, run_started_at, full=False):
        for step in self.script[stream]:
            self.requests += 1
            if isinstance(step, Exception):
                raise step
            yield step

    def close(self):
        self.closed = True


class World:
    """A config, a fake CRM per source, and what the job did with them."""

    def __init__(self, tmp_path, **script):
        path = tmp_path / "config.toml"
        path.write_text(CONFIG.format(db=tmp_path / "mirror.db"))
        self.cfg = config_mod.load(str(path))
        self.src = self.cfg.source("main")
        self.adapters: list[CrmFake] = []
        self.script = script or None
        self.alerts: list[tuple[str, str]] = []
        self.notifier = Notifier(self.cfg.notify, sender=lambda t, b: self.alerts.append((t, b)))

    def adapter(self, cfg, src):
        a = CrmFake(self.script, source=src.name)
        self.adapters.append(a)
        return a

    def run(self, **kw):
        kw.setdefault("steps", Steps(adapter=self.adapter))
        return run_job(self.cfg, self.src, notifier=self.notifier, **kw)

    def mirror(self) -> Mirror:
        return Mirror(self.cfg.storage_path)


def test_sync_then_kpis_write_the_cards_and_close_the_adapter(tmp_path):
    w = World(tmp_path)
    res = w.run(kpi=True)
    assert (res.status, res.error) == ("ok", None)
    assert [(r.stream, r.status, r.rows) for r in res.results] == [("contacts", "ok", 1), ("deals", "ok", 1)]
    assert res.rows == 2 and res.requests == 2 and res.seconds > 0
    assert res.kpi.writeback.values == 1 and res.kpi.failed == 0
    (a,) = w.adapters
    assert list(a.cards.items()) == [(("contact", 1), {"UF_CRM_KPI_DEALS_WON": 1.0})]
    assert a.closed and w.alerts == []


def test_a_held_lock_means_busy_and_nothing_runs(tmp_path):
    w = World(tmp_path)
    with source_lock(w.cfg, "main", timeout_s=0):
        res = w.run(kpi=True)
    assert res.status == "busy" and "source 'main' is busy" in res.error
    assert isinstance(res.exception, LockTimeout) and res.reason == res.error
    assert w.adapters == [] and res.results == [] and res.kpi is None
    assert len(w.alerts) == 1 and "main" in w.alerts[0][0]
    with w.mirror() as m:
        assert m.conn.execute("SELECT count(*) FROM sync_runs").fetchone()[0] == 0


def test_busy_incremental_job_sends_no_alert(tmp_path):
    w = World(tmp_path)
    with source_lock(w.cfg, "main", timeout_s=0):
        assert w.run(job="incremental").status == "busy"
    assert w.alerts == []


def test_the_lock_is_held_while_the_job_runs_and_released_after(tmp_path):
    w = World(tmp_path)
    seen = []

    def sync(mirror, adapter, streams, **kw):
        with pytest.raises(LockTimeout):
            with source_lock(w.cfg, "main", timeout_s=0):
                pass
        with source_lock(w.cfg, "other", timeout_s=0):  # other sources stay free
            seen.append("other free")
        return []

    assert w.run(steps=Steps(adapter=w.adapter, sync=sync)).status == "ok"
    assert seen == ["other free"]
    with source_lock(w.cfg, "main", timeout_s=0):
        pass


def test_runs_a_dead_process_left_running_are_closed_for_this_source_only(tmp_path):
    w = World(tmp_path)
    with w.mirror() as m:
        m.start_run("dead", "main", "deals", "2026-11-23T02:00:00Z")
        m.start_run("dead", "other", "deals", "2026-11-23T02:00:00Z")
    assert w.run().status == "ok"
    with w.mirror() as m:
        rows = dict(m.conn.execute("SELECT source, status FROM sync_runs WHERE run_id = 'dead'").fetchall())
    assert rows == {"main": "interrupted", "other": "running"}


def test_a_failed_stream_means_no_kpis(tmp_path):
    w = World(
        tmp_path,
        contacts=[StreamError("source 'main': page 1 is not JSON")],
        deals=[Page(rows={"deals": [WON]})],
    )
    res = w.run(kpi=True)
    assert res.status == "failed" and res.error == "contacts: source 'main': page 1 is not JSON"
    assert [r.status for r in res.results] == ["failed", "ok"]
    assert res.kpi is None and w.adapters[0].batches == [] and w.adapters[0].closed
    with w.mirror() as m:
        assert m.conn.execute("SELECT count(*) FROM kpi_runs").fetchone()[0] == 0
    assert len(w.alerts) == 1 and "main/contacts" in w.alerts[0][0]


def test_an_auth_failure_stops_the_source_and_the_kpis(tmp_path):
    w = World(
        tmp_path,
        contacts=[AuthError("source 'main': token rejected (401)")],
        deals=[Page(rows={"deals": [WON]})],
    )
    res = w.run(kpi=True)
    assert [r.status for r in res.results] == ["failed", "failed"]
    assert res.results[1].error.startswith("not run:") and res.kpi is None
    assert w.adapters[0].requests == 1


def test_a_skipped_stream_fails_the_job_and_no_kpis_run(tmp_path):
    # a stream skipped for a missing scope leaves its tables incomplete, so
    # the job is not ok and the nightly KPI step does not run on partial data
    w = World(tmp_path)

    def sync(mirror, adapter, streams, **kw):
        from connector.run.sync import StreamResult

        return [
            StreamResult("main", "calls", "skipped", error="no scope"),
            StreamResult("main", "deals", "ok"),
        ]

    res = w.run(kpi=True, steps=Steps(adapter=w.adapter, sync=sync))
    assert res.status == "failed" and res.kpi is None and res.error == "calls: no scope"


def test_a_stop_during_the_sync_means_interrupted_and_no_kpis(tmp_path):
    w = World(tmp_path)
    stop = threading.Event()
    kpis = []

    def sync(mirror, adapter, streams, *, stop, **kw):
        stop.set()
        return []

    res = w.run(
        kpi=True, stop=stop, steps=Steps(adapter=w.adapter, sync=sync, kpi=lambda *a, **k: kpis.append(a))
    )
    assert res.status == "interrupted" and kpis == [] and w.adapters[0].closed
    again = w.run(kpi=True, stop=stop)
    assert again.status == "interrupted" and again.error == "stop requested before the job started"
    assert len(w.adapters) == 1 and w.alerts == []


def test_a_kpi_crash_is_a_failed_result_and_the_adapter_is_closed(tmp_path):
    w = World(tmp_path)

    def broken(*args, **kw):
        raise KpiError("unknown KPI: nope")

    res = w.run(kpi=True, steps=Steps(adapter=w.adapter, kpi=broken))
    assert res.status == "failed" and res.error == "KPI job: KpiError: unknown KPI: nope"
    assert res.reason == "unknown KPI: nope" and len(res.results) == 2
    assert w.adapters[0].closed
    assert len(w.alerts) == 1 and "main/kpi" in w.alerts[0][0]


def test_a_sync_crash_is_a_failed_result_without_secrets_and_the_adapter_is_closed(tmp_path):
    w = World(tmp_path)

    def broken(mirror, adapter, streams, **kw):
        raise RuntimeError(f"cannot use {w.src.access_token}")

    res = w.run(kpi=True, steps=Steps(adapter=w.adapter, sync=broken))
    assert res.status == "failed" and res.error.startswith("RuntimeError: cannot use")
    assert "tok-xyz-1234567890" not in res.error and "tok-xyz-1234567890" not in res.reason
    assert w.adapters[0].closed
    assert len(w.alerts) == 1 and "tok-xyz-1234567890" not in w.alerts[0][1]


def test_an_unknown_stream_is_reported_with_its_exception(tmp_path):
    w = World(tmp_path)
    res = w.run(streams=["nope"])
    assert res.status == "failed" and isinstance(res.exception, UnknownStream)
    assert "no stream 'nope'" in res.reason and w.adapters[0].closed


def test_rejected_cards_fail_the_job(tmp_path):
    w = World(tmp_path)

    def adapter(cfg, src):
        a = CrmFake(source=src.name, reject={1})
        w.adapters.append(a)
        return a

    res = w.run(kpi=True, steps=Steps(adapter=adapter))
    assert res.status == "failed" and res.error == "KPI write-back: 1 value(s) rejected by the CRM"
    assert res.kpi.failed == 1 and "main/kpi" in w.alerts[0][0]


def test_kpis_alone_dry_run_need_no_adapter(tmp_path):
    w = World(tmp_path)
    w.run()  # fill the mirror first
    with w.mirror() as m:  # a dry run reads the CRM's own declarations
        mark_synced(m, "main")
    res = w.run(sync=False, kpi=True, dry_run=True)
    assert res.status == "ok" and res.results == [] and len(w.adapters) == 1
    assert [(c.entity_id, c.kpi, c.new) for c in res.kpi.writeback.changes] == [(1, "deals_won", 1)]
    assert res.kpi.writeback.requests == 0


def test_kpis_alone_write_through_a_fresh_adapter(tmp_path):
    w = World(tmp_path)
    w.run()
    res = w.run(sync=False, kpi=True, only=["deals_won"])
    assert res.status == "ok" and len(w.adapters) == 2 and w.adapters[1].closed
    assert w.adapters[1].cards == {("contact", 1): {"UF_CRM_KPI_DEALS_WON": 1.0}}


def test_success_alert_only_when_the_config_asks(tmp_path):
    w = World(tmp_path)
    w.run(kpi=True)
    assert w.alerts == []
    w.cfg.notify.on_success = True
    w.notifier = Notifier(w.cfg.notify, sender=lambda t, b: w.alerts.append((t, b)))
    w.run(kpi=True)
    assert len(w.alerts) == 1 and "sync + kpi ok: main" in w.alerts[0][0]


def test_without_a_notifier_nothing_is_sent(tmp_path, monkeypatch):
    w = World(tmp_path, contacts=[StreamError("boom")], deals=[])
    channels = []
    monkeypatch.setattr("connector.run.notify.apprise_sender", lambda urls: channels.append(urls))
    w.cfg.notify.urls = ["json://127.0.0.1:9/"]  # configured, but manual commands do not alert
    res = run_job(w.cfg, w.src, steps=Steps(adapter=w.adapter))
    assert res.status == "failed" and channels == []


def test_a_refused_token_is_said_once_in_the_jobs_error(tmp_path):
    w = World(
        tmp_path,
        contacts=[AuthError("source 'main': token rejected (401)")],
        deals=[Page(rows={"deals": [WON]})],
    )
    res = w.run()
    assert res.error == "contacts: source 'main': token rejected (401); 1 other stream not run"


def test_a_stop_during_the_kpi_computation_ends_it_and_records_interrupted(tmp_path):
    """The KPI step's query is under way (it sets the stop itself as it starts, so the stop
    lands mid-query): the job ends as interrupted and releases the lock."""
    w = World(tmp_path)
    stop = threading.Event()

    def endless_kpi(cfg, mirror, source, adapter, **kw):
        mirror.conn.create_function("started", 0, lambda: stop.set() or 1)
        mirror.conn.execute(
            "WITH RECURSIVE r(x) AS (SELECT started() UNION ALL SELECT x + 1 FROM r) SELECT count(*) FROM r"
        ).fetchall()

    out = {}
    t = threading.Thread(
        target=lambda: out.update(
            res=w.run(kpi=True, sync=False, stop=stop, steps=Steps(adapter=w.adapter, kpi=endless_kpi))
        ),
        daemon=True,
    )
    t.start()
    t.join(10)
    assert not t.is_alive(), "the KPI step did not stop within 10 s of the stop"
    res = out["res"]
    assert res.status == "interrupted" and "stop" in res.error, (res.status, res.error)
    assert w.alerts == [] and w.adapters[0].closed
    with source_lock(w.cfg, "main", 0):  # released
        pass
