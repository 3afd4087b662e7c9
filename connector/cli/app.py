"""The `crm-connector` command line. It only orchestrates: config -> adapters -> sync -> kpi."""

from __future__ import annotations

import logging
import sys

import click

from adapters.errors import SourceError
from adapters.redact import redact
from connector import logs, runtime
from connector.config import ConfigError
from connector.locks import LockTimeout, source_lock
from connector.progress import Progress

log = logging.getLogger("crm_connector")


def fail(message: str, code: int = 1) -> None:
    click.echo(f"error: {redact(message)}", err=True)
    sys.exit(code)


def load(ctx: click.Context):
    """The config named by --config, $CRM_CONNECTOR_CONFIG or ./config.toml; exit 2 if bad."""
    try:
        return runtime.load_config(ctx.obj["config"])
    except ConfigError as err:
        fail(str(err), 2)


def table(rows: list[dict], columns: list[str]) -> str:
    cells = [[("" if r.get(c) is None else str(r.get(c))) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    line = lambda vals: "  ".join(v.ljust(w) for v, w in zip(vals, widths)).rstrip()
    return "\n".join([line(columns), line(["-" * w for w in widths])] + [line(r) for r in cells])


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config", envvar="CRM_CONNECTOR_CONFIG", default=None, metavar="PATH",
              help="Config file (default: $CRM_CONNECTOR_CONFIG, else ./config.toml).")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="Log lines for people, or JSON lines for log collectors.")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@click.pass_context
def main(ctx: click.Context, config: str | None, log_format: str, verbose: bool) -> None:
    """Mirror amoCRM and Bitrix24 into SQLite, compute client KPIs, write them back to the cards."""
    ctx.ensure_object(dict)
    ctx.obj["config"] = config
    logs.setup(log_format, verbose)


@main.command()
@click.pass_context
def check(ctx: click.Context) -> None:
    """Check the config, then make one cheap authenticated call per source."""
    cfg = load(ctx)
    rows, failed = [], False
    for src in cfg.sources:
        row = {"source": src.name, "kind": src.kind}
        try:
            adapter = runtime.make_adapter(cfg, src)
            try:
                row.update(status="ok", detail=adapter.check())
            finally:
                adapter.close()
        except SourceError as err:
            row.update(status="FAILED", detail=redact(err))
            failed = True
        rows.append(row)
    click.echo(table(rows, ["source", "kind", "status", "detail"]))
    sys.exit(1 if failed else 0)


@main.command()
@click.option("--source", "source_name", metavar="NAME", help="Only this source.")
@click.option("--stream", "streams", multiple=True, metavar="NAME", help="Only this stream (repeatable).")
@click.option("--full", is_flag=True, help="Ignore bookmarks and re-read everything.")
@click.pass_context
def sync(ctx: click.Context, source_name: str | None, streams: tuple[str, ...], full: bool) -> None:
    """Pull every stream (or the ones named) into the mirror, incrementally.

    Waits for a run on the same source (the daemon, say) to finish, up to
    [schedule] lock_timeout_s."""
    cfg = load(ctx)
    try:
        sources = runtime.pick_sources(cfg, source_name)
    except ConfigError as err:
        fail(str(err), 2)
    progress = Progress()
    failed = False
    with runtime.open_mirror(cfg) as mirror:
        for src in sources:
            try:
                with source_lock(cfg, src.name, cfg.schedule.lock_timeout_s):
                    mirror.close_stale_runs(src.name)
                    results = _sync_one(cfg, mirror, src, list(streams) or src.streams, full, progress)
            except LockTimeout as err:
                fail(str(err))
            for r in results:
                if r.status == "failed":
                    failed = True
                    click.echo(f"error: {r.source}/{r.stream}: {r.error}", err=True)
            total = sum(r.rows for r in results)
            reqs = sum(r.requests for r in results)
            click.echo(f"{src.name}: {total:,} rows, {reqs:,} requests, "
                       f"{sum(r.status == 'ok' for r in results)}/{len(results)} streams ok")
    sys.exit(1 if failed else 0)


def _sync_one(cfg, mirror, src, streams, full, progress):
    from connector.sync import UnknownStream, sync_source

    adapter = runtime.make_adapter(cfg, src)
    try:
        return sync_source(mirror, adapter, streams, full, progress)
    except UnknownStream as err:
        fail(str(err), 2)
    finally:
        adapter.close()


@main.command()
@click.pass_context
def status(ctx: click.Context) -> None:
    """Per source and stream: last run, bookmark, rows, last error; next runs; last KPI job."""
    from connector.scheduler import next_runs

    cfg = load(ctx)
    with runtime.open_mirror(cfg) as mirror:
        rows = mirror.status()
        kpis = [k for k in (mirror.last_kpi_summary(s.name) for s in cfg.sources) if k]
    if rows:
        click.echo(table(rows, ["source", "stream", "last_status", "last_run_started_at", "last_success_at",
                                "bookmark", "last_rows", "last_requests", "last_error"]))
    else:
        click.echo("no sync has run yet: try `crm-connector sync`")
    click.echo("\nLast KPI job:")
    click.echo(table(kpis, ["source", "computed_at", "clients", "values_changed", "written", "failed"])
               if kpis else "  none yet: try `crm-connector kpi`")
    click.echo("\nNext scheduled runs (`crm-connector run`):")
    click.echo(table(next_runs(cfg), ["source", "job", "schedule", "next_run_local", "kpi"]))


@main.command()
@click.argument("source_name", metavar="SOURCE")
@click.option("--code", required=True, help="The authorization code from the CRM's OAuth redirect.")
@click.pass_context
def auth(ctx: click.Context, source_name: str, code: str) -> None:
    """Exchange an OAuth authorization code for tokens (saved privately beside the mirror)."""
    cfg = load(ctx)
    try:
        src = cfg.source(source_name)
    except ConfigError as err:
        fail(str(err), 2)
    adapter = runtime.make_adapter(cfg, src)
    try:
        click.echo(adapter.exchange_code(code))
    except SourceError as err:
        fail(str(err))
    finally:
        adapter.close()


def _register_optional() -> None:
    """Commands that live in their own modules."""
    import importlib.util

    if importlib.util.find_spec("connector.cli_kpi"):  # the KPI engine may not be installed yet
        from connector.cli_kpi import kpi
        main.add_command(kpi)
    from connector.cli_run import run
    from connector.cli_sandbox import demo, sandbox
    main.add_command(run)
    main.add_command(sandbox)
    main.add_command(demo)


_register_optional()


if __name__ == "__main__":
    main()
