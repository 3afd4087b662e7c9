"""`crm-connector hooks install|remove SOURCE`: register the receiver's URL with the CRM."""

from __future__ import annotations

import click

from adapters.errors import SourceError
from connector.cli.common import connect_fleet, echo_json_line, fail, json_logs, load, sources
from connector.hooks.service import hook_url
from connector.run import runtime


@click.group()
def hooks() -> None:
    """Register or take away the webhooks (amoCRM) and event handlers (Bitrix24) that tell
    `crm-connector serve` about changes."""


@hooks.command()
@click.argument("source_name", metavar="SOURCE")
@click.pass_context
def install(ctx: click.Context, source_name: str) -> None:
    """Ask the CRM to send SOURCE's changes to [webhooks] public_url."""
    _act(ctx, source_name, "install_hooks")


@hooks.command()
@click.argument("source_name", metavar="SOURCE")
@click.pass_context
def remove(ctx: click.Context, source_name: str) -> None:
    """Ask the CRM to stop sending SOURCE's changes."""
    _act(ctx, source_name, "remove_hooks")


def _act(ctx: click.Context, source_name: str, method: str) -> None:
    cfg = load(ctx)
    (source,) = sources(cfg, source_name)
    if not source.webhook_secret:
        fail(f"{cfg.path}: source '{source.name}' has no webhook_secret: set one first", 2)
    if not cfg.webhooks.public_url:
        fail(
            f"{cfg.path}: [webhooks] public_url is not set: the address the CRM can reach "
            f"`crm-connector serve` at (for example https://hooks.example.com)",
            2,
        )
    # on the celery engine the workers may be busy with this portal: take its limits in Redis
    limits = connect_fleet(cfg).limits if cfg.engine.celery else None
    adapter = runtime.make_adapter(cfg.scoped(source.name), source, limits=limits, role=runtime.REFRESH)
    try:
        said = getattr(adapter, method)(hook_url(cfg, source))
        if json_logs(ctx):
            echo_json_line({"event": method, "source": source.name, "result": said})
        else:
            click.echo(f"{source.name}: {said}")
    except SourceError as err:
        fail(str(err))
    finally:
        adapter.close()
