"""`crm-connector status`: sync state per stream, the last KPI job, the next scheduled runs."""

from __future__ import annotations

import click

from adapters import bookmarks
from connector import jobs
from connector.cli.common import load, table
from connector.scheduler import next_runs

STREAM_COLUMNS = ["source", "stream", "last_status", "last_run_started_at", "last_success_at",
                  "bookmark", "last_rows", "last_requests", "last_error"]
KPI_COLUMNS = ["source", "computed_at", "clients", "values_changed", "written", "failed"]


@click.command()
@click.pass_context
def status(ctx: click.Context) -> None:
    """Per source and stream: last run, bookmark, rows, last error; next runs; last KPI job."""
    cfg = load(ctx)
    rows, kpis = jobs.mirror_status(cfg)
    if rows:
        rows = [dict(r, bookmark=bookmarks.describe(r["bookmark"])) for r in rows]
        click.echo(table(rows, STREAM_COLUMNS))
    else:
        click.echo("no sync has run yet: try `crm-connector sync`")
    click.echo("\nLast KPI job:")
    click.echo(table(kpis, KPI_COLUMNS) if kpis else "  none yet: try `crm-connector kpi`")
    click.echo("\nNext scheduled runs (`crm-connector run`):")
    click.echo(table(next_runs(cfg), ["source", "job", "schedule", "next_run_local", "kpi"]))
