"""Writers wait their turn: several sources' jobs at the same minute, a manual `sync` beside
the daemon and a `kpi` beside a sync share one mirror file and never fail on `database is
locked` (every write transaction starts as BEGIN IMMEDIATE)."""

from __future__ import annotations

import sqlite3
import threading

from adapters.base import Page
from adapters.streams import Stream
from connector.config import loader as config_mod
from connector.mirror.store import Mirror
from connector.run.jobs import Steps, run_job
from connector.run.notify import quiet
from connector.run.scheduler import Runner
from tests.fakes import FakeAdapter

SOURCES = ("s1", "s2", "s3", "s4")
PAGES, ROWS = 12, 40

CONFIG = """
[storage]
path = "{db}"
{sources}
[kpi.fields]
deals_won = {{ contact = "KPI: Deals won" }}
"""
SOURCE = """
[[sources]]
name = "{name}"
kind = "amocrm"
base_url = "https://{name}.amocrm.ru"
access_token = "tok-{name}-1234567890"
"""


def load(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(
        CONFIG.format(db=tmp_path / "mirror.db", sources="".join(SOURCE.format(name=n) for n in SOURCES))
    )
    return config_mod.load(str(path))


class ManyPages(FakeAdapter):
    """Contacts and won deals, many small pages each (each page its own write transaction)."""

    def __init__(self, source, cycle=0, gate=None):
        super().__init__(source=source)
        self.cycle, self.gate = cycle, gate

    def stream_names(self):
        return ["contacts", "deals"]

    def streams(self):
        return [Stream(n, (n,), "changes", None) for n in self.stream_names()]

    def fetch(self, stream, bookmark, run_started_at, full=False):
        for p in range(PAGES):
            self.requests += 1
            ids = range(p * ROWS + 1, (p + 1) * ROWS + 1)
            if stream == "contacts":
                rows = {"contacts": [{"id": i, "name": f"c{i}.{self.cycle}", "is_deleted": 0} for i in ids]}
            else:
                rows = {
                    "deals": [
                        {
                            "id": i,
                            "contact_id": i,
                            "status": "won",
                            "amount": 10 * self.cycle,
                            "currency": "RUB",
                            "created_at": "2026-01-01T00:00:00Z",
                            "closed_at": "2026-01-02T00:00:00Z",
                            "updated_at": "2026-01-02T00:00:00Z",
                            "is_deleted": 0,
                        }
                        for i in ids
                    ]
                }
            yield Page(rows=rows, bookmark=f'{{"at": "2026-01-0{1 + p % 9}T00:00:00Z"}}')
            if self.gate is not None and p == PAGES // 2:
                self.gate()

    def close(self):
        pass


def test_sources_due_at_the_same_minute_never_fail_for_many_cycles(tmp_path):
    cfg = load(tmp_path)
    cycle = [0]
    runner = Runner(cfg, notifier=quiet(), adapter_fn=lambda c, src: ManyPages(src.name, cycle[0]))
    failures = []
    for cycle[0] in range(8):
        start = threading.Barrier(len(SOURCES))

        def nightly(name):
            start.wait(10)
            out = runner.nightly(name)
            if out.status != "ok":
                failures.append((cycle[0], name, out.status, out.error))

        threads = [threading.Thread(target=nightly, args=(n,)) for n in SOURCES]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    assert failures == []
    with Mirror(cfg.storage_path) as m:
        for name in SOURCES:
            assert m.table_counts(name)["contacts"] == PAGES * ROWS
        runs = m.conn.execute("SELECT status, count(*) FROM sync_runs GROUP BY status").fetchall()
        kpi_runs = m.conn.execute("SELECT count(*) FROM kpi_runs").fetchone()[0]
    assert runs == [("ok", 8 * len(SOURCES) * 2)]
    assert kpi_runs == 8 * len(SOURCES)


def test_a_manual_sync_and_a_kpi_run_beside_a_daemon_sync_of_another_source(tmp_path):
    """The daemon's job on s1 is mid-stream (between pages, paused by the test) while a manual
    sync of s2 runs, then a `kpi` of s3 runs; then all of them again side by side."""
    cfg = load(tmp_path)
    mid, go = threading.Event(), threading.Event()

    def pause():
        mid.set()
        assert go.wait(60)

    steps = Steps(adapter=lambda c, src: ManyPages(src.name, 2))
    for name in ("s3", "s4"):  # KPIs run only on a source that had a complete sync
        assert run_job(cfg, cfg.source(name), steps=steps).status == "ok"
    daemon = Runner(cfg, notifier=quiet(), adapter_fn=lambda c, src: ManyPages(src.name, 1, gate=pause))
    outs = {}
    t = threading.Thread(target=lambda: outs.setdefault("daemon", daemon.nightly("s1")))
    t.start()
    assert mid.wait(60)
    manual = run_job(cfg, cfg.source("s2"), steps=steps)
    kpi = run_job(cfg, cfg.source("s3"), job="kpi", sync=False, kpi=True, steps=steps)
    go.set()
    t.join(120)
    assert (manual.status, manual.error) == ("ok", None)
    assert (kpi.status, kpi.error) == ("ok", None)
    assert (outs["daemon"].status, outs["daemon"].error) == ("ok", None)

    # and now truly concurrent: syncs of three sources and KPI runs of the fourth, many times
    errors = []
    barrier = threading.Barrier(4)

    def loop(job):
        barrier.wait(10)
        for _ in range(6):
            out = job()
            if out.status != "ok":
                errors.append(out.error)

    jobs = [lambda n=n: run_job(cfg, cfg.source(n), steps=steps) for n in ("s1", "s2", "s3")]
    jobs.append(lambda: run_job(cfg, cfg.source("s4"), job="kpi", sync=False, kpi=True, steps=steps))
    threads = [threading.Thread(target=loop, args=(j,)) for j in jobs]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    assert errors == []


def test_every_write_transaction_takes_the_write_lock_at_once(tmp_path):
    """While another connection holds the write lock, a save waits instead of failing."""
    with Mirror(str(tmp_path / "m.db")) as m:
        assert m.conn.isolation_level == "IMMEDIATE"
        with m.db.atomic():
            other = sqlite3.connect(str(tmp_path / "m.db"), timeout=0)
            try:
                try:
                    other.execute("BEGIN IMMEDIATE")
                    got = True
                except sqlite3.OperationalError:
                    got = False
            finally:
                other.close()
    assert got is False  # the outer atomic() already held the write lock
