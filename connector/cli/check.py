"""`crm-connector check`: the config, then one cheap authenticated call per source."""

from __future__ import annotations

import sys

import click

from adapters.errors import SourceError
from adapters.redact import redact
from connector import jobs
from connector.cli.common import echo_json, load, table


@click.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout: sources, streams, ok.")
@click.pass_context
def check(ctx: click.Context, as_json: bool) -> None:
    """Check the config, then make one cheap authenticated call per source; list each stream's
    scope and its last sync, naming the scope to add for a stream a missing scope skipped."""
    cfg = load(ctx)
    rows, failed = [], False
    for src in cfg.sources:
        row = {"source": src.name, "kind": src.kind}
        try:
            row.update(status="ok", detail=jobs.check_source(cfg, src))
        except SourceError as err:
            row.update(status="FAILED", detail=redact(err))
            failed = True
        rows.append(row)
    streams = [r for src in cfg.sources for r in jobs.stream_scopes(cfg, src)]
    failed |= any(r["advice"] for r in streams)
    if as_json:
        echo_json({"ok": not failed, "sources": [dict(r, status=r["status"].lower()) for r in rows],
                   "streams": [{k.replace(" ", "_"): v for k, v in r.items()} for r in streams]})
    else:
        click.echo(table(rows, ["source", "kind", "status", "detail"]))
        click.echo("\n" + table(streams, ["source", "stream", "scope", "last sync", "advice"]))
    for r in streams:
        if r["advice"]:   # skipped last time: its tables are incomplete, its KPIs withheld
            click.echo(f"error: {r['source']}/{r['stream']} was skipped on the last sync: "
                       f"{r['advice']} in the CRM, then run `crm-connector sync`", err=True)
    sys.exit(1 if failed else 0)
