"""`crm-connector status`: sync state per stream, the last KPI job, the next scheduled runs.

Text fits the terminal ($COLUMNS, else its width, else 80): the bookmark column wraps and
last errors follow the table, wrapped. `--json` (or `--log-format json`) prints one JSON
document instead, with every field unabridged.
"""

from __future__ import annotations

import shutil
import textwrap

import click

from adapters import bookmarks
from adapters.times import parse_iso, utc_now
from connector.run import jobs
from connector.cli.common import echo_json, fitted, load
from connector.run.scheduler import next_runs
from connector.run.sync import unrun_cause

STREAM_COLUMNS = ["source", "stream", "status", "last run", "rows", "req", "bookmark (UTC)"]
KPI_COLUMNS = ["source", "computed_at", "clients", "values_changed", "written", "failed"]
NEXT_COLUMNS = ["source", "job", "schedule", "kpi", "next run"]


@click.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout, every field in full.")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Per source and stream: last run, bookmark, rows, last error; next runs; last KPI job."""
    cfg = load(ctx)
    rows, kpis = jobs.mirror_status(cfg)
    upcoming = next_runs(cfg)
    if as_json or ctx.find_root().obj.get("log_format") == "json":
        echo_json({"streams": [dict(r, bookmark_text=bookmarks.describe(r["bookmark"])) for r in rows],
                   "kpi_jobs": kpis, "next_runs": upcoming})
        return
    width = shutil.get_terminal_size((80, 24)).columns
    if rows:
        click.echo(fitted([_stream_row(r) for r in rows], STREAM_COLUMNS, width, right=("rows", "req")))
        _errors(rows, width)
    else:
        click.echo("no sync has run yet: try `crm-connector sync`")
    click.echo("\nLast KPI job:")
    click.echo(fitted(kpis, KPI_COLUMNS, width) if kpis else "  none yet: try `crm-connector kpi`")
    click.echo("\nNext scheduled runs (`crm-connector run`):")
    click.echo(fitted([dict(r, **{"next run": r["next_run_local"]}) for r in upcoming], NEXT_COLUMNS, width))


def _stream_row(r: dict) -> dict:
    return {"source": r["source"], "stream": r["stream"], "status": r["last_status"],
            "last run": _ago(r["last_run_started_at"]), "rows": _count(r["last_rows"]),
            "req": _count(r["last_requests"]),
            "bookmark (UTC)": bookmarks.describe(r["bookmark"]).replace(" UTC", "")}


def _errors(rows: list[dict], width: int) -> None:
    """Each stream's last error, wrapped, with when it last succeeded; streams another
    stream's failure left unrun are named once, under it."""
    failed = [r for r in rows if r.get("last_error")]
    causes = {(r["source"], r["last_error"]) for r in failed}
    unrun: dict[tuple, list[str]] = {}
    named = set()   # (source, stream) of the unrun streams named under their cause
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
        click.echo(textwrap.fill(text, max(40, width), initial_indent="  ", subsequent_indent="    ",
                                 break_on_hyphens=False))


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
