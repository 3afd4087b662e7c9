"""`crm-connector auth SOURCE --code CODE`: trade an OAuth authorization code for tokens."""

from __future__ import annotations

import click

from adapters.errors import SourceError
from connector import jobs
from connector.cli.common import fail, load, sources


@click.command()
@click.argument("source_name", metavar="SOURCE")
@click.option("--code", required=True, help="The authorization code from the CRM's OAuth redirect.")
@click.pass_context
def auth(ctx: click.Context, source_name: str, code: str) -> None:
    """Exchange an OAuth authorization code for tokens (saved privately beside the mirror)."""
    cfg = load(ctx)
    src, = sources(cfg, source_name)
    try:
        click.echo(jobs.exchange_code(cfg, src, code))
    except SourceError as err:
        fail(str(err))
