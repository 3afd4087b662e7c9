"""`crm-connector sync`: pull streams into the mirror, one job per source.

SIGTERM or Ctrl-C asks for a stop: the stream under way commits the page it is saving (a wait
in the rate limiter or between retries ends at once, no further request is sent) and is
recorded as interrupted, one line says so, and the exit code is 143 / 130 (128 + signal).
A second signal exits at once; every page is its own transaction, so the mirror stays whole.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from contextlib import contextmanager

import click

from connector.cli.common import echo_json_line, fail, json_logs, load, sources
from connector.mirror.storage import StorageError
from connector.run import jobs
from connector.run.progress import Progress
from connector.run.sync import Outcome


@contextmanager
def _stop_on_signals():
    """A stop event set by the first SIGTERM / SIGINT (which one: `event.signum`)."""
    stop = threading.Event()
    stop.signum = None

    def handler(signum, _frame):
        if stop.is_set():
            os._exit(128 + signum)
        stop.signum = signum
        stop.set()

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _interrupted(stop, res) -> None:
    """One line for a run stopped by a signal, then exit 128 + its number."""
    signum = stop.signum or signal.SIGTERM
    where = next(
        (f"{r.source}/{r.stream}" for r in res.results if r.outcome is Outcome.INTERRUPTED), res.source
    )
    click.echo(
        f"interrupted by {signal.Signals(signum).name}: {where} stopped after its last "
        f"committed page ({res.rows:,} rows this run); `crm-connector sync` resumes from "
        f"the bookmarks",
        err=True,
    )
    sys.exit(128 + signum)


@click.command()
@click.option("--source", "source_name", metavar="NAME", help="Only this source.")
@click.option("--stream", "streams", multiple=True, metavar="NAME", help="Only this stream (repeatable).")
@click.option("--full", is_flag=True, help="Ignore bookmarks and re-read everything.")
@click.pass_context
def sync(ctx: click.Context, source_name: str | None, streams: tuple[str, ...], full: bool) -> None:
    """Pull every stream (or the ones named) into the mirror, incrementally.

    Waits for a run on the same source (the daemon, say) to finish, up to
    [schedule] lock_timeout_s. SIGTERM or Ctrl-C stops after the current page (exit 143 / 130)."""
    cfg = load(ctx)
    progress = Progress()
    failed = False
    with _stop_on_signals() as stop:
        for src in sources(cfg, source_name):
            res = jobs.run_job(
                cfg, src, streams=list(streams) or None, full=full, progress=progress, stop=stop
            )
            if res.status == "interrupted" and stop.is_set():
                _interrupted(stop, res)
            # busy, no sync at all, or a mirror that cannot keep what the streams wrote
            if res.exception is not None and (not res.results or isinstance(res.exception, StorageError)):
                fail(res.reason, jobs.exit_code(res.exception))
            # a stream that failed or was skipped (its KPIs would be wrong) was logged as it ended
            failed |= any(
                r.outcome in (Outcome.FAILED, Outcome.NOT_RUN, Outcome.SKIPPED) for r in res.results
            )
            if res.exception is not None:  # after the streams ran: closing the adapter, say
                failed = True
                click.echo(f"error: {src.name}: {res.reason}", err=True)
            if json_logs(ctx):
                echo_json_line(_summary_doc(res))
            else:
                click.echo(_summary(res))
    sys.exit(1 if failed else 0)


def _summary_doc(res) -> dict:
    """The summary for `--log-format json`: one JSON line per source, beside the log's lines."""
    return {
        "event": "sync_summary",
        "source": res.source,
        "rows": res.rows,
        "requests": res.requests,
        "streams": len(res.results),
        "streams_ok": sum(r.outcome is Outcome.OK for r in res.results),
        "not_ok": {r.stream: r.outcome.value for r in res.results if r.outcome is not Outcome.OK},
        "values_not_stored": sum(r.warnings for r in res.results),
    }


def _summary(res) -> str:
    """`amo: 1,000 rows, 12 requests, 9/10 streams ok (skipped: calls)`; rows are entities of
    each stream's main table."""
    ok = sum(r.outcome is Outcome.OK for r in res.results)
    by_status: dict[str, list[str]] = {}
    for r in res.results:
        if r.outcome is not Outcome.OK:
            by_status.setdefault(r.outcome.value, []).append(r.stream)
    notes = "; ".join(
        f"{k}: {', '.join(v) if len(v) < 4 else f'{len(v)} streams'}" for k, v in by_status.items()
    )
    noted = sum(r.warnings for r in res.results)  # listed in the log and sync_runs.warnings
    return (
        f"{res.source}: {res.rows:,} rows, {res.requests:,} requests, {ok}/{len(res.results)} "
        f"streams ok"
        + (f" ({notes})" if notes else "")
        + (f", {noted:,} values not stored as sent (see the log)" if noted else "")
    )
