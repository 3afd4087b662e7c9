"""`crm-connector sandbox KIND`: serve one fake CRM (from the registry) on 127.0.0.1."""

from __future__ import annotations

import threading
import time

import click

from adapters import registry

TITLES = " or ".join(registry.get(k).title for k in registry.kinds())


@click.command(help=f"Serve a fake {TITLES} account on 127.0.0.1 until Ctrl-C.")
@click.argument("kind", type=click.Choice(registry.kinds()))
@click.option("--port", default=0, show_default=True, help="0 picks a free port.")
@click.option("--seed", default=1, show_default=True, help="Same seed, same data.")
@click.option("--size", default=1000, show_default=True, help="Number of deals to generate.")
@click.option("--latency-ms", default=0, show_default=True, help="Added to every response.")
@click.option("--no-limits", is_flag=True, help="Do not enforce the CRM's rate limits.")
def sandbox(kind: str, port: int, seed: int, size: int, latency_ms: int, no_limits: bool) -> None:
    crm = registry.get(kind)
    t0 = time.monotonic()
    server = crm.sandbox_class()(
        port=port, seed=seed, size=size, latency_ms=latency_ms, limits=not no_limits
    ).start()
    click.echo(f"{kind} sandbox: {size:,} deals (seed {seed}) generated in {time.monotonic() - t0:.1f}s")
    for line in connection_lines(crm, server):
        click.echo(f"  {line}")
    click.echo("Ctrl-C to stop.")
    stop = threading.Event()
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


def connection_lines(crm, server) -> list[str]:
    """How to point a source at the running fake: its url, then its `[[sources]]` keys.

    A credential that is not an address is flagged as the sandbox's own (a user seeing a
    token printed should not worry); a URL carrying one is shown as the address it is.
    """
    lines = [f"url: {server.url}"]
    for key, value in crm.sandbox_source(server).items():
        if value == server.url:
            continue  # the url line says it already
        note = (
            "   (a sandbox token, not a secret)"
            if key in crm.secret_keys and not str(value).startswith(server.url)
            else ""
        )
        lines.append(f"{key}: {value}{note}")
    return lines
