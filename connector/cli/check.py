"""`crm-connector check`: the config, then one cheap authenticated call per source."""

from __future__ import annotations

import shutil
import sys

import click

from adapters.errors import SourceError
from adapters.redact import redact
from connector.cli.common import echo_json, echo_mirrors, fitted, json_logs, load, mirror_files
from connector.run import jobs

# Built-in day counts (`days_*`) move every night; these have a date KPI for the cards instead.
DRIFTING = {
    "days_since_last_interaction": "last_interaction_on",
    "days_since_last_purchase": "last_purchase_on",
}


@click.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout: sources, streams, ok.")
@click.pass_context
def check(ctx: click.Context, as_json: bool) -> None:
    """Check the config and that the mirror and token file can be written where it puts them
    (and the mirror is whole), then make one cheap authenticated call per source; list each
    stream's scope and its last sync, naming the scope to add for a stream a missing scope
    skipped."""
    cfg = load(ctx)
    problems = jobs.storage_problems(cfg, deep=True)
    rows, failed = [], False
    for src in cfg.sources:
        row = {"source": src.name, "kind": src.kind}
        try:
            row.update(status="ok", detail=jobs.check_source(cfg, src))
        except SourceError as err:
            row.update(status="FAILED", detail=redact(err))
            failed = True
        rows.append(row)
    # a mirror that cannot be used has no stream states worth reading
    streams = [] if problems else [r for src in cfg.sources for r in jobs.stream_scopes(cfg, src)]
    failed |= any(r["advice"] for r in streams)
    if as_json or json_logs(ctx):
        echo_json(
            {
                "ok": not failed and not problems,
                "mirrors": mirror_files(cfg),
                "sources": [dict(r, status=r["status"].lower()) for r in rows],
                "streams": [{k.replace(" ", "_"): v for k, v in r.items()} for r in streams],
                "storage": [str(p) for p in problems],
            }
        )
    else:
        width = shutil.get_terminal_size((80, 24)).columns
        echo_mirrors(cfg)
        click.echo("\n" + fitted(rows, ["source", "kind", "status", "detail"], width))
        if streams:
            click.echo("\n" + fitted(streams, ["source", "stream", "scope", "last sync", "advice"], width))
    custom = {c.name for c in cfg.kpi.custom}
    for kpi in cfg.kpi.fields:
        if kpi.startswith("days_") and kpi not in custom:
            instead = f"; map {DRIFTING[kpi]} instead, a date that changes only with a new event"
            click.echo(
                f"warning: {cfg.path}: [kpi.fields] {kpi} changes on every card every night (it counts "
                f"days){instead if kpi in DRIFTING else ''}",
                err=True,
            )
    for p in problems:  # the mirror or token file cannot be used where the config puts it
        click.echo(f"error: {p}", err=True)
    for r in streams:
        if r["advice"]:  # skipped last time: its tables are incomplete, its KPIs withheld
            click.echo(
                f"error: {r['source']}/{r['stream']} was skipped on the last sync: "
                f"{r['advice']} in the CRM, then run `crm-connector sync`",
                err=True,
            )
    sys.exit(max(p.exit_code for p in problems) if problems else 1 if failed else 0)
