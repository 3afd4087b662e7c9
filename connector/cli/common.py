"""What every command shares: the error exit, loading the config, picking sources, tables."""

from __future__ import annotations

import sys

import click

from adapters.redact import redact
from connector import runtime
from connector.config import Config, ConfigError, SourceConfig, kpi_names, nearest


def fail(message: str, code: int = 1) -> None:
    """Print `error: <message>` (secrets masked) to stderr and exit with `code`."""
    click.echo(f"error: {redact(message)}", err=True)
    sys.exit(code)


def load(ctx: click.Context) -> Config:
    """The config named by --config, $CRM_CONNECTOR_CONFIG or ./config.toml; exit 2 if bad."""
    try:
        return runtime.load_config(ctx.find_root().obj["config"])
    except ConfigError as err:
        fail(str(err), 2)


def sources(cfg: Config, name: str | None) -> list[SourceConfig]:
    """Every source, or the one named; exit 2 for a name the config lacks."""
    try:
        return runtime.pick_sources(cfg, name)
    except ConfigError as err:
        fail(str(err), 2)


def kpis(cfg: Config, only: tuple[str, ...]) -> list[str] | None:
    """The KPI names of repeated / comma-separated `--only` options (None: all); exit 2 naming
    the nearest known KPI for a name that is neither built in nor custom."""
    names = [n.strip() for o in only for n in o.split(",") if n.strip()]
    known = kpi_names(cfg.kpi)
    for n in names:
        if n not in known:
            fail(f"--only: unknown KPI '{n}'{nearest(n, known)} (KPIs: {', '.join(known)})", 2)
    return names or None


def table(rows: list[dict], columns: list[str]) -> str:
    """Rows as left-aligned text columns under a header and a rule."""
    cells = [[("" if r.get(c) is None else str(r.get(c))) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    line = lambda vals: "  ".join(v.ljust(w) for v, w in zip(vals, widths)).rstrip()
    return "\n".join([line(columns), line(["-" * w for w in widths])] + [line(r) for r in cells])
