"""The `crm-connector` command group: global options, and the commands it lists.

The global options (`--config`, `--log-format`, `-v`) are taken before or after the command
name (`crm-connector --config F check` and `crm-connector check --config F`): each command and
subcommand gets a copy that, when given, overrides the group's value.
"""

from __future__ import annotations

from importlib import metadata

import click

from adapters import registry
from connector import logs
from connector.cli.auth import auth
from connector.cli.check import check
from connector.cli.common import fail
from connector.cli.datasette_metadata import datasette_metadata
from connector.cli.demo import demo
from connector.cli.hooks import hooks
from connector.cli.kpi import kpi
from connector.cli.report import report
from connector.cli.run import run
from connector.cli.sandbox import sandbox
from connector.cli.serve import serve
from connector.cli.status import status
from connector.cli.sync import sync
from connector.cli.worker import worker
from connector.mirror.storage import StorageError

CRMS = " and ".join(registry.get(k).title for k in registry.kinds())
CONFIG_HELP = "Config file (default: $CRM_CONNECTOR_CONFIG, else ./config.toml)."
LOG_FORMATS = click.Choice(["text", "json"])


def _version() -> str:
    try:
        return metadata.version("crm-connector")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


class _Group(click.Group):
    """The command group; a storage fault any command meets is one line and its exit code."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except StorageError as err:
            fail(str(err), err.exit_code)


# No envvar on --config: the config module reads $CRM_CONNECTOR_CONFIG itself, so a "file not
# found" can say whether the path came from --config, the variable or the default.
@click.group(
    cls=_Group,
    context_settings={"help_option_names": ["-h", "--help"]},
    help=f"Mirror {CRMS} into SQLite, compute client KPIs, write them back to the cards.",
)
@click.option("--config", "config", default=None, metavar="PATH", help=CONFIG_HELP)
@click.option(
    "--log-format",
    type=LOG_FORMATS,
    default="text",
    show_default=True,
    help="Log lines for people, or JSON lines for log collectors.",
)
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@click.version_option(_version(), "--version", prog_name="crm-connector", message="%(prog)s %(version)s")
@click.pass_context
def main(ctx: click.Context, config: str | None, log_format: str, verbose: bool) -> None:
    ctx.ensure_object(dict)
    ctx.obj.update(config=config, log_format=log_format, verbose=verbose)
    logs.setup(log_format, verbose)


def _override(ctx: click.Context, param: click.Parameter, value):
    """A global option given after the command name: replaces the group's value."""
    if value is None or value is False:
        return
    obj = ctx.find_root().obj
    obj[param.name] = value
    if param.name != "config":
        logs.setup(obj["log_format"], obj["verbose"])


def _global_options() -> list[click.Option]:
    common = {"expose_value": False, "callback": _override}
    return [
        click.Option(["--config"], default=None, metavar="PATH", help=CONFIG_HELP, **common),
        click.Option(
            ["--log-format"],
            type=LOG_FORMATS,
            default=None,
            help="Log lines for people, or JSON lines for log collectors.",
            **common,
        ),
        click.Option(["-v", "--verbose"], is_flag=True, default=False, help="Debug logging.", **common),
    ]


def _add_global_options(command: click.Command) -> None:
    command.params.extend(_global_options())
    for sub in getattr(command, "commands", {}).values():
        _add_global_options(sub)


for command in (
    check,
    sync,
    status,
    auth,
    kpi,
    report,
    datasette_metadata,
    run,
    worker,
    serve,
    hooks,
    sandbox,
    demo,
):
    _add_global_options(command)
    main.add_command(command)
