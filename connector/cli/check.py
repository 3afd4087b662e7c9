"""`crm-connector check`: the config, then one cheap authenticated call per source."""

from __future__ import annotations

import sys

import click

from adapters.errors import SourceError
from adapters.redact import redact
from connector import jobs
from connector.cli.common import load, table


@click.command()
@click.pass_context
def check(ctx: click.Context) -> None:
    """Check the config, then make one cheap authenticated call per source."""
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
    click.echo(table(rows, ["source", "kind", "status", "detail"]))
    sys.exit(1 if failed else 0)
