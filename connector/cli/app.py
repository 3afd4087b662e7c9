"""The `crm-connector` command group: global options, and the commands it lists."""

from __future__ import annotations

import click

from adapters import registry
from connector import logs
from connector.cli.auth import auth
from connector.cli.check import check
from connector.cli.demo import demo
from connector.cli.kpi import kpi
from connector.cli.run import run
from connector.cli.sandbox import sandbox
from connector.cli.status import status
from connector.cli.sync import sync

CRMS = " and ".join(registry.get(k).title for k in registry.kinds())


@click.group(context_settings={"help_option_names": ["-h", "--help"]},
             help=f"Mirror {CRMS} into SQLite, compute client KPIs, write them back to the cards.")
@click.option("--config", "config", envvar="CRM_CONNECTOR_CONFIG", default=None, metavar="PATH",
              help="Config file (default: $CRM_CONNECTOR_CONFIG, else ./config.toml).")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="Log lines for people, or JSON lines for log collectors.")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@click.pass_context
def main(ctx: click.Context, config: str | None, log_format: str, verbose: bool) -> None:
    ctx.ensure_object(dict)
    ctx.obj["config"] = config
    logs.setup(log_format, verbose)


for command in (check, sync, status, auth, kpi, run, sandbox, demo):
    main.add_command(command)
