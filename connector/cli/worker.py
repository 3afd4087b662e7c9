"""`crm-connector worker`: a Celery worker of the fleet engine for this config.

A thread pool: jobs wait on HTTP and on each portal's limiter far more than they compute.
Each worker process gets its own node name (`crm-<pid>@<host>`), so several on one host show
apart in `status` and Flower. SIGTERM is Celery's warm shutdown: running jobs finish first.
"""

from __future__ import annotations

import os
import socket

import click

from connector.cli.common import connect_fleet, fail, load
from connector.config.engine import DEFAULT_QUEUE


@click.command()
@click.option(
    "--queues",
    "-Q",
    default=None,
    metavar="Q,...",
    help="Queues to take jobs from (default: every queue the config's sources name).",
)
@click.option(
    "--concurrency",
    "-c",
    type=click.IntRange(1, 200),
    default=8,
    show_default=True,
    help="Jobs run side by side in this process (threads).",
)
@click.option("--name", default=None, metavar="NAME", help="Node name (default: crm-<pid>@<host>).")
@click.pass_context
def worker(ctx: click.Context, queues: str | None, concurrency: int, name: str | None) -> None:
    """Run jobs from the fleet's queues (needs [engine] kind = "celery" and its Redis)."""
    cfg = load(ctx)
    if not cfg.engine.celery:
        fail(
            f'{cfg.path}: [engine] kind is "{cfg.engine.kind}": a worker needs kind = "celery" '
            f"and broker_url",
            2,
        )
    fleet = connect_fleet(cfg)
    wanted = queues or ",".join(dict.fromkeys([DEFAULT_QUEUE] + [s.queue for s in cfg.sources]))
    node = name or f"crm-{os.getpid()}@{socket.gethostname()}"
    verbose = ctx.find_root().obj.get("verbose")
    fleet.app.worker_main(
        [
            "worker",
            "--pool=threads",
            f"--concurrency={concurrency}",
            "-Q",
            wanted,
            "-n",
            node,
            "-E",
            "--without-mingle",
            "--without-gossip",
            f"--loglevel={'DEBUG' if verbose else 'INFO'}",
        ]
    )
