"""`crm-connector run`: the scheduler daemon (or, with --once, one nightly job for plain cron).

With `[engine] kind = "celery"` the jobs run on the fleet's workers (`crm-connector worker`):
the daemon queues each fire (only the scheduler holding the leader lease in Redis fires), and
`--once` queues one job per source, waits for all and prints the same summary.

SIGTERM or SIGINT asks for a stop: a running sync stops after its current page, commits and
is recorded as interrupted, then the daemon exits 0. A second signal exits at once (the
mirror is still consistent: every page is its own transaction). A restart resumes from the
bookmarks.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading

import click
from apscheduler.events import EVENT_JOB_MISSED

from connector.cli.common import connect_fleet, echo_json_line, fail, json_logs, load, sources
from connector.fleet.dispatch import Enqueuer, run_once
from connector.run import jobs
from connector.run.jobs import storage_problems
from connector.run.scheduler import Runner, build_scheduler, next_runs

log = logging.getLogger("crm_connector.run")


def _on_signals(stop: threading.Event) -> None:
    def handler(signum, _frame):
        name = signal.Signals(signum).name
        if stop.is_set():
            log.warning("%s again: exiting now, without waiting for the running job", name)
            os._exit(130)
        log.info("%s: stopping after the current page (send again to exit at once)", name)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


@click.command()
@click.option("--source", "source_name", metavar="NAME", help="Only this source.")
@click.option(
    "--once",
    is_flag=True,
    help="Run the nightly job (sync, then KPIs) now and exit; for plain cron. "
    "Exit code 1 if a job failed or a source was busy.",
)
@click.option(
    "--incremental",
    is_flag=True,
    help="With --once: sync only, no KPIs; a busy source is skipped quietly (for intraday cron lines).",
)
@click.option(
    "--run-now", is_flag=True, help="Daemon: also run the nightly job as soon as it starts (ops, testing)."
)
@click.option(
    "--interval-seconds",
    type=click.FloatRange(min=1),
    default=None,
    hidden=True,
    help="Testing/ops: run the nightly job every N seconds instead of [schedule] sync.",
)
@click.pass_context
def run(
    ctx: click.Context,
    source_name: str | None,
    once: bool,
    incremental: bool,
    run_now: bool,
    interval_seconds: float | None,
) -> None:
    """Run the schedule from [schedule]: each source's sync, then its KPIs, until stopped.

    Never runs two jobs on one source at once, with this daemon or with a manual
    `sync`/`kpi`: the later one waits up to [schedule] lock_timeout_s.
    """
    cfg = load(ctx)
    cfg.sources = sources(cfg, source_name)
    if incremental and not once:
        fail("--incremental goes with --once (the daemon takes [schedule] incremental)", 2)
    stop = threading.Event()
    if cfg.engine.celery:  # the mirrors live on the workers' hosts: they check them
        fleet = connect_fleet(cfg)
        _on_signals(stop)
        if once:
            sys.exit(_fleet_once(fleet, cfg, incremental, stop))
        runner = Enqueuer(fleet)
    else:
        for problem in storage_problems(cfg):  # before the daemon waits a night to find out
            fail(str(problem), problem.exit_code)
        _on_signals(stop)
        runner = Runner(cfg, stop)
        if once:
            sys.exit(_once(runner, cfg, incremental))
    scheduler = build_scheduler(cfg, runner, interval_s=interval_seconds, run_now=run_now)
    scheduler.add_listener(
        lambda ev: log.warning(
            "job %s missed its %s run: more than misfire_grace_s=%ss late",
            ev.job_id,
            ev.scheduled_run_time.isoformat(timespec="minutes"),
            cfg.schedule.misfire_grace_s,
        ),
        EVENT_JOB_MISSED,
    )
    scheduler.start()
    for r in next_runs(cfg, interval_s=interval_seconds):
        log.info(
            "scheduled: %s of %s at %s (%s)",
            r["job"],
            r["source"],
            "now" if run_now and r["job"] == "sync" else r["next_run_local"],
            r["schedule"],
        )
    while not stop.wait(60):
        pass
    log.info("stopping: waiting for running jobs to wind down")
    scheduler.shutdown(wait=True)
    if isinstance(runner, Enqueuer):
        runner.close()
    log.info("stopped")
    sys.exit(0)


def _once(runner: Runner, cfg, incremental: bool = False) -> int:
    """Each source's job once; exit 1 if one failed (or was busy), 2 if the storage location
    is wrong (the config must change)."""
    code = 0
    for src in cfg.sources:
        out = runner.incremental(src.name) if incremental else runner.nightly(src.name)
        _line(src.name, out.status, out.rows, out.kpi.line() if out.kpi is not None else None, out.error)
        if out.status == "failed" or (out.status == "busy" and not incremental):
            code = max(code, jobs.exit_code(out.exception))
        if out.status == "interrupted":
            break
    return code


def _line(source: str, status: str, rows: int, kpi: str | None, error: str | None) -> None:
    """One source's summary line (and its error on stderr), the same for both engines."""
    if json_logs(click.get_current_context()):
        echo_json_line(
            {
                "event": "run_summary",
                "source": source,
                "status": status,
                "rows": rows,
                "kpi": kpi,
                "error": error,
            }
        )
        return
    click.echo(f"{source}: {status}, {rows:,} rows{f'; KPIs: {kpi}' if kpi else ''}")
    if error:
        click.echo(f"error: {source}: {error}", err=True)


def _fleet_once(fleet, cfg, incremental: bool, stop: threading.Event) -> int:
    """`--once` on the fleet: one job per source queued, all awaited, summaries in config order;
    exit codes as the local engine's."""
    done = run_once(fleet, cfg.sources, incremental, stop)
    code = 0
    for src in cfg.sources:
        out = done.get(src.name)
        if out is None:
            waiting = "still queued or running (stopped waiting; `crm-connector status` shows it)"
            if json_logs(click.get_current_context()):
                echo_json_line(
                    {"event": "run_summary", "source": src.name, "status": "waiting", "note": waiting}
                )
            else:
                click.echo(f"{src.name}: {waiting}")
            code = max(code, 1)
            continue
        _line(src.name, out["status"], out["rows"], out.get("kpi"), out.get("error"))
        if out["status"] == "failed" or (out["status"] == "busy" and not incremental):
            code = max(code, out.get("exit_code") or 1)
    return code
