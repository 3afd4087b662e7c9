"""The nightly schedule: per source, sync then KPIs, under the source's lock, with alerts.

`Runner` runs one source's job once (`nightly`: sync, then the KPI job if every stream
succeeded; `incremental`: sync only). `build_scheduler` turns `[schedule]` into APScheduler 3
jobs, two per source at most: `sync:<source>` and `incremental:<source>`. Every job has
coalesce=True (a scheduler that was asleep for three nights runs once, not three times),
max_instances=1 and `misfire_grace_s` (a run later than that is skipped, not run at noon).

The sync and KPI functions are injectable, so tests run the schedule without a CRM.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable
from zoneinfo import ZoneInfo

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.triggers.interval import IntervalTrigger

from adapters.redact import redact
from adapters.times import iso
from connector import runtime
from connector.config import Config
from connector.cron import cron_day_of_week as cron_day_of_week  # re-exported: tests import it from here
from connector.cron import cron_trigger
from connector.locks import LockAbandoned, LockTimeout, source_lock
from connector.notify import Notifier

log = logging.getLogger("crm_connector.scheduler")

NIGHTLY, INCREMENTAL = "sync", "incremental"
SUCCESS = ("ok", "skipped")   # skipped: a scope the token lacks, by the user's choice


def default_sync(mirror, adapter, streams=None, stop=None):
    from connector.sync import sync_source
    return sync_source(mirror, adapter, streams, stop=stop)


def default_kpi(cfg, mirror, source_cfg, adapter):
    from connector.kpi_job import run_kpi_job   # lazily: the KPI job is optional for a sync-only run
    return run_kpi_job(cfg, mirror, source_cfg, adapter)


@dataclass
class JobOutcome:
    """What one run of one source's job did."""
    source: str
    job: str                 # sync (nightly) or incremental
    status: str              # ok, failed, interrupted, busy
    results: list = field(default_factory=list)   # StreamResult per stream
    kpi: object = None       # the KPI job's summary, when it ran
    error: str | None = None
    seconds: float = 0.0


def close_stale_runs(mirror, source: str) -> int:
    """Mark runs a killed process left 'running' as interrupted (under the source's lock)."""
    count = mirror.close_stale_runs(source)
    if count:
        log.warning("source '%s': %d run(s) left 'running' by a process that died, marked interrupted",
                    source, count)
    return count


class Runner:
    """Runs a source's jobs; one Runner serves every job of the daemon (it is thread-safe:
    each call opens its own mirror connection and adapter)."""

    def __init__(self, cfg: Config, stop: threading.Event | None = None,
                 notifier: Notifier | None = None, *, sync_fn: Callable = default_sync,
                 kpi_fn: Callable = default_kpi, adapter_fn: Callable = runtime.make_adapter,
                 mirror_fn: Callable = runtime.open_mirror):
        self.cfg = cfg
        self.stop = stop or threading.Event()
        self.notifier = notifier or Notifier(cfg.notify)
        self.sync_fn, self.kpi_fn = sync_fn, kpi_fn
        self.adapter_fn, self.mirror_fn = adapter_fn, mirror_fn

    def nightly(self, source_name: str) -> JobOutcome:
        return self.run(source_name, NIGHTLY, kpi=self.cfg.schedule.kpi_after_sync)

    def incremental(self, source_name: str) -> JobOutcome:
        return self.run(source_name, INCREMENTAL, kpi=False)

    def run(self, source_name: str, job: str, kpi: bool) -> JobOutcome:
        out = JobOutcome(source_name, job, "ok")
        t0 = time.monotonic()
        if self.stop.is_set():
            out.status, out.error = "interrupted", "stop requested before the job started"
            return out
        try:
            src = self.cfg.source(source_name)
            with source_lock(self.cfg, source_name, stop=self.stop):
                self._locked(src, out, kpi)
        except LockTimeout as err:
            out.status, out.error = "busy", str(err)
            # an incremental run bumping into the nightly one is routine; a nightly one is not
            if job == NIGHTLY:
                self.notifier.failed(source_name, "-", out.error, job=job)
        except LockAbandoned as err:
            out.status, out.error = "interrupted", str(err)
        except Exception as err:   # the daemon outlives any one job's failure
            out.status = "failed"
            out.error = redact(f"{type(err).__name__}: {err}")
            log.debug("job %s:%s crashed", job, source_name, exc_info=True)
            self.notifier.failed(source_name, "-", out.error, job=job)
        out.seconds = time.monotonic() - t0
        self._log(out)
        return out

    def _locked(self, src, out: JobOutcome, kpi: bool) -> None:
        with self.mirror_fn(self.cfg) as mirror:
            close_stale_runs(mirror, src.name)
            adapter = self.adapter_fn(self.cfg, src)
            try:
                out.results = self.sync_fn(mirror, adapter, src.streams, stop=self.stop)
                self.notifier.sync_results(src.name, out.results)
                statuses = {r.status for r in out.results}
                if "interrupted" in statuses or self.stop.is_set():
                    out.status = "interrupted"
                elif not statuses <= set(SUCCESS):
                    out.status = "failed"
                    out.error = "; ".join(f"{r.stream}: {r.error}" for r in out.results
                                          if r.status not in SUCCESS)
                if out.status != "ok" or not kpi:
                    return
                # KPIs only after a complete sync: half-synced data would write wrong numbers
                self._kpi(src, mirror, adapter, out)
            finally:
                adapter.close()

    def _kpi(self, src, mirror, adapter, out: JobOutcome) -> None:
        try:
            out.kpi = self.kpi_fn(self.cfg, mirror, src, adapter)
            if mirror.conn.in_transaction:
                # a job that returned has finished its work: keep it. (Python's sqlite3 opens a
                # transaction implicitly on DML; left open, closing the mirror would roll back.)
                log.debug("KPI job of %s left a transaction open; committing it", src.name)
                mirror.conn.commit()
        except Exception as err:
            out.status, out.error = "failed", redact(f"KPI job: {type(err).__name__}: {err}")
            log.debug("KPI job of %s crashed", src.name, exc_info=True)
            self.notifier.failed(src.name, "kpi", out.error, job="kpi")
            return
        failed = getattr(out.kpi, "failed", 0) or 0
        if failed:
            out.status, out.error = "failed", f"KPI write-back: {failed} value(s) rejected by the CRM"
            self.notifier.failed(src.name, "kpi", f"{out.error}; {out.kpi.line()}", job="kpi")
        else:
            self.notifier.succeeded(src.name, out.kpi.line(), job="sync + kpi")

    def _log(self, out: JobOutcome) -> None:
        rows = sum(r.rows for r in out.results)
        reqs = sum(r.requests for r in out.results)
        ok = sum(r.status in SUCCESS for r in out.results)
        kpi = out.kpi.line() if out.kpi is not None else "-"
        level = logging.INFO if out.status == "ok" else logging.WARNING
        log.log(level, "job=%s source=%s status=%s streams_ok=%d/%d rows=%d requests=%d "
                "duration=%.1fs kpi=%s%s", out.job, out.source, out.status, ok, len(out.results), rows,
                reqs, out.seconds, kpi, f" error={out.error}" if out.error else "",
                extra={"fields": {"event": "job", "job": out.job, "source": out.source,
                                  "status": out.status, "rows": rows, "requests": reqs,
                                  "duration_s": round(out.seconds, 2), "kpi": kpi}})


# -- the schedule -------------------------------------------------------------------------------

def triggers(cfg: Config, interval_s: float | None = None) -> dict:
    """{job kind: trigger} from [schedule]; `interval_s` replaces the sync cron (testing/ops)."""
    tz = ZoneInfo(cfg.schedule.timezone)
    out = {NIGHTLY: (IntervalTrigger(seconds=interval_s, timezone=tz) if interval_s
                     else cron_trigger(cfg.schedule.sync, tz))}
    if cfg.schedule.incremental:
        out[INCREMENTAL] = cron_trigger(cfg.schedule.incremental, tz)
    return out


def build_scheduler(cfg: Config, runner: Runner, *, scheduler: BaseScheduler | None = None,
                    interval_s: float | None = None, run_now: bool = False) -> BaseScheduler:
    """A scheduler (not started) holding every source's jobs.

    `scheduler`: bring your own (tests use one driven by hand); default: a BackgroundScheduler
    with a thread per job, so sources run side by side. `run_now`: the nightly jobs also run
    as soon as the scheduler starts.
    """
    tz = ZoneInfo(cfg.schedule.timezone)
    trig = triggers(cfg, interval_s)
    if scheduler is None:
        scheduler = BackgroundScheduler(
            timezone=tz, executors={"default": ThreadPoolExecutor(len(cfg.sources) * len(trig))})
    defaults = {"coalesce": True, "max_instances": 1, "misfire_grace_time": cfg.schedule.misfire_grace_s}
    for src in cfg.sources:
        extra = {"next_run_time": datetime.now(tz)} if run_now else {}
        scheduler.add_job(runner.nightly, trig[NIGHTLY], args=[src.name], id=f"{NIGHTLY}:{src.name}",
                          name=f"nightly sync of {src.name}", **defaults, **extra)
        if INCREMENTAL in trig:
            scheduler.add_job(runner.incremental, trig[INCREMENTAL], args=[src.name],
                              id=f"{INCREMENTAL}:{src.name}", name=f"incremental sync of {src.name}",
                              **defaults)
    return scheduler


def next_runs(cfg: Config, now: datetime | None = None, interval_s: float | None = None) -> list[dict]:
    """When each source's jobs would next run, for `crm-connector status`.

    One dict per (source, job): source, job, schedule, kpi (runs the KPI job after),
    next_run (ISO UTC) and next_run_local (in [schedule] timezone).
    """
    tz = ZoneInfo(cfg.schedule.timezone)
    now = (now or datetime.now(timezone.utc)).astimezone(tz)
    text = {NIGHTLY: f"every {interval_s:g}s" if interval_s else cfg.schedule.sync,
            INCREMENTAL: cfg.schedule.incremental}
    rows = []
    for kind, trig in triggers(cfg, interval_s).items():
        at = trig.get_next_fire_time(None, now)
        for src in cfg.sources:
            rows.append({
                "source": src.name, "job": kind, "schedule": text[kind],
                "kpi": kind == NIGHTLY and cfg.schedule.kpi_after_sync,
                "next_run": iso(at) if at else None,
                "next_run_local": at.strftime(f"%Y-%m-%d %H:%M {cfg.schedule.timezone}") if at else None,
            })
    return rows
