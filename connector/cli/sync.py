"""`crm-connector sync`: pull streams into the mirror, one job per source."""

from __future__ import annotations

import sys

import click

from connector import jobs
from connector.cli.common import fail, load, sources
from connector.progress import Progress
from connector.sync import UnknownStream


@click.command()
@click.option("--source", "source_name", metavar="NAME", help="Only this source.")
@click.option("--stream", "streams", multiple=True, metavar="NAME", help="Only this stream (repeatable).")
@click.option("--full", is_flag=True, help="Ignore bookmarks and re-read everything.")
@click.pass_context
def sync(ctx: click.Context, source_name: str | None, streams: tuple[str, ...], full: bool) -> None:
    """Pull every stream (or the ones named) into the mirror, incrementally.

    Waits for a run on the same source (the daemon, say) to finish, up to
    [schedule] lock_timeout_s."""
    cfg = load(ctx)
    progress = Progress()
    failed = False
    for src in sources(cfg, source_name):
        res = jobs.run_job(cfg, src, streams=list(streams) or None, full=full, progress=progress)
        if res.exception is not None and not res.results:   # busy, or no sync at all
            fail(res.reason, 2 if isinstance(res.exception, UnknownStream) else 1)
        for r in res.results:
            if r.status == "failed":
                failed = True
                click.echo(f"error: {r.source}/{r.stream}: {r.error}", err=True)
        if res.exception is not None:   # after the streams ran: closing the adapter, say
            failed = True
            click.echo(f"error: {src.name}: {res.reason}", err=True)
        click.echo(f"{src.name}: {res.rows:,} rows, {res.requests:,} requests, "
                   f"{sum(r.status == 'ok' for r in res.results)}/{len(res.results)} streams ok")
    sys.exit(1 if failed else 0)
