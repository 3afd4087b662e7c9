"""`crm-connector datasette-metadata`: a Datasette metadata file beside each mirror.

The file describes the tables and columns, names each table's label column and carries
canned queries (funnel, manager league, churn); `datasette <mirror> -m <file>` opens both.
Read only: the mirror is not changed. Without `--mirror`, the config's mirror files.
"""

from __future__ import annotations

import os
import shlex

import click

from connector.cli.common import echo_json_line, fail, json_logs, load
from connector.mirror import datasette


@click.command("datasette-metadata")
@click.option(
    "--mirror",
    "mirror_path",
    default=None,
    metavar="FILE",
    help="The mirror to describe (default: the config's [storage] path, each per-source file).",
)
@click.option(
    "--out",
    default=None,
    metavar="FILE",
    help="Where to write it (default: beside the mirror, <mirror name>.metadata.json).",
)
@click.pass_context
def datasette_metadata(ctx: click.Context, mirror_path: str | None, out: str | None) -> None:
    """Write a Datasette metadata file for the mirror: tables and columns described, labels,
    canned queries; prints the command that opens both."""
    if mirror_path:
        paths = [mirror_path]
        if not os.path.isfile(mirror_path):
            fail(f"--mirror {mirror_path}: no such file", 2)
    else:
        paths = [scope.storage_path for scope in load(ctx, secrets=False).scopes()]  # reads no CRM
    if out and len(paths) > 1:
        fail("--out names one file, and the config has one mirror per source: leave --out out", 2)
    for path in paths:
        written = datasette.write(path, out)
        if json_logs(ctx):
            echo_json_line({"event": "datasette_metadata", "mirror": path, "metadata": written})
            continue
        click.echo(f"Metadata: {written}")
        click.echo(f"  open with: datasette {shlex.quote(path)} -m {shlex.quote(written)}")
