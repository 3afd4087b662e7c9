"""The `crm-connector` command line: parse the arguments, run `connector.run.jobs`, print the result.

One module per command (check, sync, status, auth, kpi, run, sandbox, demo); `app` is the
command group that lists them, `common` the few helpers they share (error exit, config
loading, tables). Command modules import `common` only, never each other or `app`.
"""

from connector.cli.app import main

__all__ = ["main"]
