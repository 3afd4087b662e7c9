"""`crm-connector kpi`: compute client KPIs and write the changes back; `kpi show` for one client."""

from __future__ import annotations

import shutil
import sys
from dataclasses import replace

import click

from connector.cli.common import echo_json, echo_json_line, fail, fitted, json_logs, kpis, load, sources
from connector.kpi.engine import all_kpis
from connector.run import jobs


def _fmt(v, date: bool = False) -> str:
    """A KPI value as people read it; a date KPI's YYYYMMDD as 2026-11-23."""
    if v is None:
        return "(empty)"
    if date:
        day = f"{int(v):08d}"
        return f"{day[:4]}-{day[4:6]}-{day[6:]}"
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


@click.group(invoke_without_command=True)
@click.option("--source", "source_name", metavar="NAME", help="Only this source.")
@click.option(
    "--dry-run",
    is_flag=True,
    help="Compute and print a summary of the changes (-v: every value); write nothing anywhere.",
)
@click.option(
    "--only", "only", multiple=True, metavar="KPI", help="Only this KPI (repeatable, or comma-separated)."
)
@click.option(
    "--json", "as_json", is_flag=True, help="One JSON document on stdout, per source (-v: with every value)."
)
@click.option(
    "--full",
    is_flag=True,
    help="Recompute every client, not only those whose data or time windows changed since the "
    "last pass (as [kpi] full_pass_days does on its schedule).",
)
@click.pass_context
def kpi(
    ctx: click.Context,
    source_name: str | None,
    dry_run: bool,
    only: tuple[str, ...],
    as_json: bool,
    full: bool,
) -> None:
    """Compute client KPIs from the mirror and write the changed ones to the CRM cards.

    Prints, per source, the clients computed, the cards touched, the values changed and the
    HTTP requests made. Only KPIs mapped in [kpi.fields] are written, and only values that
    differ from the last successful write.
    """
    if ctx.invoked_subcommand is not None:
        return
    cfg = load(ctx)
    if full:
        cfg = replace(cfg, kpi=replace(cfg.kpi, full_pass_days=0))
    verbose = bool(ctx.find_root().obj.get("verbose"))
    names = kpis(cfg, only)
    failed, docs = False, []
    for src in sources(cfg, source_name):
        res = jobs.run_job(cfg, src, job="kpi", sync=False, kpi=True, dry_run=dry_run, only=names)
        if res.kpi is None:  # busy, never synced, storage, or the KPI job could not run
            if as_json:
                echo_json({"ok": False, "sources": docs + [{"source": src.name, "error": res.reason}]})
            fail(res.reason, jobs.exit_code(res.exception))
        # compute warnings (an unconverted currency) were logged as they arose: not repeated
        _withheld(src.name, res.kpi.withheld)
        # a withheld KPI that would have been written to cards is a failure the admin must fix
        bad = res.kpi.failed > 0 or bool(set(res.kpi.withheld) & set(cfg.kpi.fields))
        failed |= bad
        if as_json:
            docs.append(_document(res.kpi, verbose, ok=not bad))
            continue
        if json_logs(ctx):  # stdout carries only JSON: one line per source
            echo_json_line(_document(res.kpi, verbose, ok=not bad))
            continue
        if dry_run:
            dates = {k for k, d in all_kpis(cfg.kpi).items() if d.date}
            _dry_run(src.name, res.kpi.writeback, verbose, dates)
        click.echo(f"{src.name}: {res.kpi.line()}")
    if as_json:
        echo_json({"ok": not failed, "sources": docs})
    sys.exit(1 if failed else 0)


def _document(job, verbose: bool, ok: bool) -> dict:
    """One source's KPI job for `--json`: counts, withheld KPIs, per entity type the cards and
    values changed (and fields a dry run would create); -v: every value."""
    wb = job.writeback
    types = sorted({c.entity_type for c in wb.changes} | set(wb.unresolved))
    doc = {
        "source": job.source,
        "ok": ok,
        "dry_run": job.dry_run,
        "computed_at": job.compute.computed_at,
        "clients": job.compute.clients,
        "cards": wb.clients,
        "values_changed": wb.values,
        "requests": wb.requests,
        "rejected": wb.failed,
        "withheld": job.withheld,
        "warnings": job.compute.warnings,
        "measures": None
        if job.metrics is None
        else {"rows": job.metrics.rows, "withheld": job.metrics.withheld, "warnings": job.metrics.warnings},
        "by_type": [
            {
                "entity_type": t,
                "cards": len({c.entity_id for c in wb.changes if c.entity_type == t}),
                "values": sum(c.entity_type == t for c in wb.changes),
                "fields_to_create": wb.unresolved.get(t, []),
            }
            for t in types
        ],
    }
    if verbose:
        doc["values"] = [
            {
                "entity_type": c.entity_type,
                "entity_id": c.entity_id,
                "name": c.name,
                "kpi": c.kpi,
                "field": c.label,
                "old": c.old,
                "new": c.new,
            }
            for c in wb.changes
        ]
    return doc


def _withheld(source: str, withheld: dict[str, str]) -> None:
    """One line per reason: which KPIs were not computed and why."""
    by_reason: dict[str, list[str]] = {}
    for k, why in withheld.items():
        by_reason.setdefault(why, []).append(k)
    for why, names in by_reason.items():
        click.echo(
            f"warning: {source}: KPIs withheld, cards keep their values: {', '.join(names)}: {why}", err=True
        )


def _dry_run(source: str, wb, verbose: bool, dates=()) -> None:
    """Per entity type: cards and values that would change, fields a real run would resolve;
    with -v every value, with the client's name."""
    types = sorted({c.entity_type for c in wb.changes} | set(wb.unresolved))
    for t in types:
        changes = [c for c in wb.changes if c.entity_type == t]
        cards = len({c.entity_id for c in changes})
        line = f"{source} {t}: would touch {cards:,} cards and change {len(changes):,} values"
        if wb.unresolved.get(t):
            line += "; fields to find or create: " + ", ".join(f"'{x}'" for x in wb.unresolved[t])
        click.echo(line)
        if verbose:
            for c in changes:
                who = f" {c.name}" if c.name else ""
                click.echo(
                    f"  {t} {c.entity_id}{who}: {c.kpi} -> '{c.label}': {_fmt(c.old, c.kpi in dates)} -> {_fmt(c.new, c.kpi in dates)}"
                )


@kpi.command()
@click.argument("source_name", metavar="SOURCE")
@click.argument("entity_type", metavar="ENTITY_TYPE", type=click.Choice(["contact", "company"]))
@click.argument("entity_id", metavar="ID", type=int)
@click.pass_context
def show(ctx: click.Context, source_name: str, entity_type: str, entity_id: int) -> None:
    """Print one client's latest KPIs with their definitions."""
    cfg = load(ctx, secrets=False)
    sources(cfg, source_name)
    rows, defs = jobs.client_kpis(cfg, source_name, entity_type, entity_id)
    if not rows:
        first = "sync" if not jobs.ever_synced(cfg, source_name) else "kpi"
        fail(
            f"no KPIs for {entity_type} {entity_id} in source '{source_name}': "
            f"check the id, or run `crm-connector {first} --source {source_name}` first"
        )
    computed_at = max(r["computed_at"] for r in rows)
    listed = []
    for r in rows:
        d = defs.get(r["kpi"])
        definition = d.description.split(": ", 1)[-1] if d else "(no longer defined)"
        listed.append(
            {"kpi": r["kpi"], "value": _fmt(r["value"], bool(d and d.date)), "definition": definition}
        )
    if json_logs(ctx):
        echo_json(
            {
                "source": source_name,
                "entity_type": entity_type,
                "entity_id": entity_id,
                "computed_at": computed_at,
                # a date KPI's value as ISO text, the others as numbers
                "kpis": [
                    dict(x, value=x["value"] if defs.get(r["kpi"]) and defs[r["kpi"]].date else r["value"])
                    for x, r in zip(listed, rows)
                ],
            }
        )
        return
    click.echo(f"{source_name} {entity_type} {entity_id}, computed at {computed_at}\n")
    # the definitions wrap within the terminal's width, under their own column
    width = shutil.get_terminal_size((80, 24)).columns
    click.echo(fitted(listed, ["kpi", "value", "definition"], width, right=("value",)))
