"""The nightly schedule: per source, the job of `connector.run.jobs`, at the times of `[schedule]`.

`Runner` runs one source's job once (`nightly`: sync, then the KPI job if every stream
succeeded; `incremental`: sync only), through `jobs.run_job`, and logs one line per job.
`build_scheduler` turns `[schedule]` into APScheduler 3 jobs, two per source at most:
`sync:<source>` and `incremental:<source>`. Every job has coalesce=True (a scheduler that was
asleep for three nights runs once, not three times), max_instances=1 and `misfire_grace_s`
(a run later than that is skipped, not run at noon).

The job's steps are injectable, so tests run the schedule without a CRM.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timezone
from typing import Callable
from zoneinfo import ZoneInfo

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.triggers.interval import IntervalTrigger

from adapters.times import iso
from connector.config.cron import cron_trigger
from connector.config.loader import Config
from connector.run.jobs import INCREMENTAL, NIGHTLY, SUCCESS, JobResult, Steps, run_job
from connector.run.notify import Notifier

log = logging.getLogger("crm_connector.scheduler")
_REAL = Steps()  # the steps a real job takes; tests pass their own


class Runner:
    """Runs a source's jobs; one Runner serves every job of the daemon (it is thread-safe:
    each job opens its own mirror connection and adapter).

    sync_fn, kpi_fn, adapter_fn, mirror_fn: the job's steps (see `jobs.Steps`), for tests.
    """

    def __init__(
        self,
        cfg: Config,
        stop: threading.Event | None = None,
        notifier: Notifier | None = None,
        *,
        sync_fn: Callable = _REAL.sync,
        kpi_fn: Callable = _REAL.kpi,
        adapter_fn: Callable = _REAL.adapter,
        mirror_fn: Callable = _REAL.mirror,
    ):
        self.cfg = cfg
        self.stop = stop or threading.Event()
        self.notifier = notifier or Notifier(cfg.notify)
        self.sync_fn, self.kpi_fn = sync_fn, kpi_fn
        self.adapter_fn, self.mirror_fn = adapter_fn, mirror_fn

    def nightly(self, source_name: str) -> JobResult:
        return self.run(source_name, NIGHTLY, kpi=self.cfg.schedule.kpi_after_sync)

    def incremental(self, source_name: str) -> JobResult:
        return self.run(source_name, INCREMENTAL, kpi=False)

    def run(self, source_name: str, job: str, kpi: bool) -> JobResult:
        steps = Steps(mirror=self.mirror_fn, adapter=self.adapter_fn, sync=self.sync_fn, kpi=self.kpi_fn)
        out = run_job(
            self.cfg,
            self.cfg.source(source_name),
            job=job,
            kpi=kpi,
            stop=self.stop,
            notifier=self.notifier,
            steps=steps,
        )
        self._log(out)
        return out

    def _log(self, out: JobResult) -> None:
        ok = sum(r.outcome in SUCCESS for r in out.results)
        kpi = out.kpi.line() if out.kpi is not None else "-"
        level = logging.INFO if out.status == "ok" else logging.WARNING
        log.log(
            level,
            "job=%s source=%s status=%s streams_ok=%d/%d rows=%d requests=%d duration=%.1fs kpi=%s%s",
            out.job,
            out.source,
            out.status,
            ok,
            len(out.results),
            out.rows,
            out.requests,
            out.seconds,
            kpi,
            f" error={out.error}" if out.error else "",
            extra={
                "fields": {
                    "event": "job",
                    "job": out.job,
                    "source": out.source,
                    "status": out.status,
                    "rows": out.rows,
                    "requests": out.requests,
                    "duration_s": round(out.seconds, 2),
                    "kpi": kpi,
                }
            },
        )


# -- the schedule -------------------------------------------------------------------------------


def triggers(cfg: Config, interval_s: float | None = None) -> dict:
    """{job kind: trigger} from [schedule]; `interval_s` replaces the sync cron (testing/ops)."""
    tz = ZoneInfo(cfg.schedule.timezone)
    out = {
        NIGHTLY: (
            IntervalTrigger(seconds=interval_s, timezone=tz)
            if interval_s
            else cron_trigger(cfg.schedule.sync, tz)
        )
    }
    if cfg.schedule.incremental:
        out[INCREMENTAL] = cron_trigger(cfg.schedule.incremental, tz)
    return out


def build_scheduler(
    cfg: Config,
    runner: Runner,
    *,
    scheduler: BaseScheduler | None = None,
    interval_s: float | None = None,
    run_now: bool = False,
) -> BaseScheduler:
    """A scheduler (not started) holding every source's jobs.

    `scheduler`: bring your own (tests use one driven by hand); default: a BackgroundScheduler
    with a thread per job, so sources run side by side. `run_now`: the nightly jobs also run
    as soon as the scheduler starts.
    """
    tz = ZoneInfo(cfg.schedule.timezone)
    trig = triggers(cfg, interval_s)
    if scheduler is None:
        scheduler = BackgroundScheduler(
            timezone=tz, executors={"default": ThreadPoolExecutor(len(cfg.sources) * len(trig))}
        )
    defaults = {"coalesce": True, "max_instances": 1, "misfire_grace_time": cfg.schedule.misfire_grace_s}
    for src in cfg.sources:
        extra = {"next_run_time": datetime.now(tz)} if run_now else {}
        scheduler.add_job(
            runner.nightly,
            trig[NIGHTLY],
            args=[src.name],
            id=f"{NIGHTLY}:{src.name}",
            name=f"nightly sync of {src.name}",
            **defaults,
            **extra,
        )
        if INCREMENTAL in trig:
            scheduler.add_job(
                runner.incremental,
                trig[INCREMENTAL],
                args=[src.name],
                id=f"{INCREMENTAL}:{src.name}",
                name=f"incremental sync of {src.name}",
                **defaults,
            )
    return scheduler


def next_runs(cfg: Config, now: datetime | None = None, interval_s: float | None = None) -> list[dict]:
    """When each source's jobs would next run, for `crm-connector status`.

    One dict per (source, job): source, job, schedule, kpi (runs the KPI job after),
    next_run (ISO UTC) and next_run_local (in [schedule] timezone).
    """
    tz = ZoneInfo(cfg.schedule.timezone)
    now = (now or datetime.now(timezone.utc)).astimezone(tz)
    text = {
        NIGHTLY: f"every {interval_s:g}s" if interval_s else cfg.schedule.sync,
        INCREMENTAL: cfg.schedule.incremental,
    }
    rows = []
    for kind, trig in triggers(cfg, interval_s).items():
        at = trig.get_next_fire_time(None, now)
        for src in cfg.sources:
            rows.append(
                {
                    "source": src.name,
                    "job": kind,
                    "schedule": text[kind],
                    "kpi": kind == NIGHTLY and cfg.schedule.kpi_after_sync,
                    "next_run": iso(at) if at else None,
                    "next_run_local": at.strftime(f"%Y-%m-%d %H:%M {cfg.schedule.timezone}") if at else None,
                }
            )
    return rows
