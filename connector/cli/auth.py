"""`crm-connector auth SOURCE [--code CODE]`: sign a source in over OAuth and save its tokens.

Without `--code` the CRM's browser sign-in runs, where it has one (Bitrix24: its code lives
30 s): the URL to open is printed, the redirect is caught on 127.0.0.1 and exchanged at once.
With `--code` a code copied by hand is exchanged (amoCRM's lives 20 minutes).
"""

from __future__ import annotations

import click

from adapters.errors import SourceError
from connector.cli.common import fail, load, sources
from connector.run import jobs


@click.command()
@click.argument("source_name", metavar="SOURCE")
@click.option("--code", help="An authorization code copied from the CRM's OAuth redirect.")
@click.option(
    "--timeout",
    "timeout_s",
    type=float,
    default=None,
    help="Seconds to wait for the browser's redirect (default 300).",
)
@click.pass_context
def auth(ctx: click.Context, source_name: str, code: str | None, timeout_s: float | None) -> None:
    """Sign in over OAuth (in the browser, or with --code) and save the tokens privately."""
    cfg = load(ctx)
    (src,) = sources(cfg, source_name)
    try:
        if code:
            click.echo(jobs.exchange_code(cfg, src, code))
        else:
            click.echo(jobs.sign_in(cfg, src, click.echo, timeout_s))
    except SourceError as err:
        fail(str(err))
