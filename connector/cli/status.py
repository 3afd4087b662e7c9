"""`crm-connector status`: sync state per stream, the last KPI job, the next scheduled runs.

Text fits the terminal ($COLUMNS, else its width, else 80): the bookmark column wraps and
last errors follow the table, wrapped. `--json` (or `--log-format json`) prints one JSON
document instead, with every field unabridged.
"""

from __future__ import annotations

import shutil
import textwrap
from datetime import datetime, timezone

import click

from adapters import bookmarks
from adapters.times import iso, parse_iso, utc_now
from connector.cli.common import connect_fleet, echo_json, echo_mirrors, fitted, load, mirror_files
from connector.run import jobs
from connector.run.scheduler import next_runs
from connector.run.sync import unrun_cause

STREAM_COLUMNS = ["source", "stream", "status", "last run", "rows", "req", "bookmark (UTC)"]
KPI_COLUMNS = ["source", "computed_at", "clients", "values_changed", "written", "failed"]
NEXT_COLUMNS = ["source", "job", "schedule", "kpi", "next run"]
FLEET_COLUMNS = ["source", "job", "state", "worker", "since", "result"]


@click.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout, every field in full.")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Per source and stream: last run, bookmark, rows, last error; next runs; last KPI job."""
    cfg = load(ctx, secrets=False)
    rows, kpis = jobs.mirror_status(cfg)
    upcoming = next_runs(cfg)
    fleet = _fleet_jobs(cfg) if cfg.engine.celery else None
    if as_json or ctx.find_root().obj.get("log_format") == "json":
        doc = {
            "mirrors": mirror_files(cfg),
            "streams": [dict(r, bookmark_text=bookmarks.describe(r["bookmark"])) for r in rows],
            "kpi_jobs": kpis,
            "next_runs": upcoming,
        }
        echo_json(doc if fleet is None else dict(doc, fleet_jobs=fleet))
        return
    width = shutil.get_terminal_size((80, 24)).columns
    echo_mirrors(cfg)
    click.echo("")
    if rows:
        click.echo(fitted([_stream_row(r) for r in rows], STREAM_COLUMNS, width, right=("rows", "req")))
        _errors(rows, width)
    else:
        click.echo("no sync has run yet: try `crm-connector sync`")
    click.echo("\nLast KPI job:")
    click.echo(fitted(kpis, KPI_COLUMNS, width) if kpis else "  none yet: try `crm-connector kpi`")
    click.echo("\nNext scheduled runs (`crm-connector run`):")
    click.echo(fitted([dict(r, **{"next run": r["next_run_local"]}) for r in upcoming], NEXT_COLUMNS, width))
    if fleet is not None:
        click.echo("\nFleet jobs (celery engine):")
        click.echo(fitted([_fleet_row(j) for j in fleet], FLEET_COLUMNS, width))


def _fleet_jobs(cfg) -> list[dict]:
    """Each source's last fleet job as every worker sees it in Redis: queued, running (and
    where) or finished."""
    board = connect_fleet(cfg).board
    return [dict(board.get(s.name) or {"state": "none"}, source=s.name) for s in cfg.sources]


def _fleet_row(job: dict) -> dict:
    result = job.get("status", "")
    if job.get("state") == "finished":
        result = f"{result}, {int(job.get('rows') or 0):,} rows" + (
            f": {job['error']}" if job.get("error") else ""
        )
    since = _ago(iso(datetime.fromtimestamp(float(job["at"]), timezone.utc))) if job.get("at") else ""
    return {
        "source": job["source"],
        "job": job.get("job", ""),
        "state": job.get("state", "none"),
        "worker": job.get("worker", ""),
        "since": since,
        "result": result,
    }


def _stream_row(r: dict) -> dict:
    return {
        "source": r["source"],
        "stream": r["stream"],
        "status": r["last_status"],
        "last run": _ago(r["last_run_started_at"]),
        "rows": _count(r["last_rows"]),
        "req": _count(r["last_requests"]),
        "bookmark (UTC)": bookmarks.describe(r["bookmark"]).replace(" UTC", ""),
    }


def _errors(rows: list[dict], width: int) -> None:
    """Each stream's last error, wrapped, with when it last succeeded; streams another
    stream's failure left unrun are named once, under it."""
    failed = [r for r in rows if r.get("last_error")]
    causes = {(r["source"], r["last_error"]) for r in failed}
    unrun: dict[tuple, list[str]] = {}
    named = set()  # (source, stream) of the unrun streams named under their cause
    for r in failed:
        cause = (r["source"], unrun_cause(r["last_status"], r["last_error"]))
        if cause in causes:
            unrun.setdefault(cause, []).append(r["stream"])
            named.add((r["source"], r["stream"]))
    if failed:
        click.echo("\nLast errors:")
    for r in failed:
        if (r["source"], r["stream"]) in named:
            continue
        ok = _ago(r.get("last_success_at")) or "never"
        text = f"{r['source']}/{r['stream']} ({r['last_status']}; last ok {ok}): {r['last_error']}"
        others = unrun.get((r["source"], r["last_error"]))
        if others:
            text += f" (so not run: {', '.join(others)})"
        click.echo(
            textwrap.fill(
                text, max(40, width), initial_indent="  ", subsequent_indent="    ", break_on_hyphens=False
            )
        )


def _count(n) -> str:
    return "" if n is None else f"{n:,}"


def _ago(moment: str | None) -> str:
    """`45s ago`, `12m ago`, `3h ago`, `2d ago` (the time itself is in `--json`)."""
    if not moment:
        return ""
    try:
        s = max(0, int((utc_now() - parse_iso(moment)).total_seconds()))
    except ValueError:
        return moment
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s // size}{unit} ago"
    return f"{s}s ago"
