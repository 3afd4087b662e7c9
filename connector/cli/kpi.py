"""`crm-connector kpi`: compute client KPIs and write the changes back; `kpi show` for one client."""

from __future__ import annotations

import sys

import click

from connector import jobs
from connector.cli.common import fail, kpis, load, sources


def _fmt(v) -> str:
    if v is None:
        return "(empty)"
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


@click.group(invoke_without_command=True)
@click.option("--source", "source_name", metavar="NAME", help="Only this source.")
@click.option("--dry-run", is_flag=True, help="Compute and print the changes; send nothing to the CRM.")
@click.option("--only", "only", multiple=True, metavar="KPI",
              help="Only this KPI (repeatable, or comma-separated).")
@click.pass_context
def kpi(ctx: click.Context, source_name: str | None, dry_run: bool, only: tuple[str, ...]) -> None:
    """Compute client KPIs from the mirror and write the changed ones to the CRM cards.

    Prints, per source, the clients computed, the cards touched, the values changed and the
    HTTP requests made. Only KPIs mapped in [kpi.fields] are written, and only values that
    differ from the last successful write.
    """
    if ctx.invoked_subcommand is not None:
        return
    cfg = load(ctx)
    names = kpis(cfg, only)
    failed = False
    for src in sources(cfg, source_name):
        res = jobs.run_job(cfg, src, job="kpi", sync=False, kpi=True, dry_run=dry_run, only=names)
        if res.kpi is None:      # busy, or the KPI job could not run
            fail(res.reason)
        for w in res.kpi.compute.warnings:
            click.echo(f"warning: {w}", err=True)
        if dry_run:
            for c in res.kpi.writeback.changes:
                click.echo(f"{src.name} {c.entity_type} {c.entity_id}  {c.kpi} -> '{c.label}': "
                           f"{_fmt(c.old)} -> {_fmt(c.new)}")
        click.echo(f"{src.name}: {res.kpi.line()}")
        failed |= res.kpi.failed > 0
    sys.exit(1 if failed else 0)


@kpi.command()
@click.argument("source_name", metavar="SOURCE")
@click.argument("entity_type", metavar="ENTITY_TYPE", type=click.Choice(["contact", "company"]))
@click.argument("entity_id", metavar="ID", type=int)
@click.pass_context
def show(ctx: click.Context, source_name: str, entity_type: str, entity_id: int) -> None:
    """Print one client's latest KPIs with their definitions."""
    cfg = load(ctx)
    sources(cfg, source_name)
    rows, defs = jobs.client_kpis(cfg, source_name, entity_type, entity_id)
    if not rows:
        fail(f"no KPIs for {entity_type} {entity_id} in source '{source_name}': "
             f"check the id, or run `crm-connector kpi --source {source_name}` first")
    click.echo(f"{source_name} {entity_type} {entity_id}, computed at {max(r['computed_at'] for r in rows)}")
    width = max(len(r["kpi"]) for r in rows)
    for r in rows:
        d = defs.get(r["kpi"])
        definition = d.description.split(": ", 1)[-1] if d else "(no longer defined)"
        click.echo(f"  {r['kpi'].ljust(width)}  {_fmt(r['value']):>12}  {definition}")
