"""What every command shares: the error exit, loading the config, picking sources, tables."""

from __future__ import annotations

import json
import os
import shutil
import sys
import textwrap

import click

from adapters.redact import redact
from connector.config.kpi import kpi_names, nearest
from connector.config.loader import Config, ConfigError, SourceConfig
from connector.fleet.app import RedisUnreachable
from connector.fleet.dispatch import Fleet
from connector.run import runtime


def fail(message: str, code: int = 1) -> None:
    """Print `error: <message>` (secrets masked) to stderr and exit with `code`."""
    click.echo(f"error: {redact(message)}", err=True)
    sys.exit(code)


def connect_fleet(cfg: Config) -> Fleet:
    """The fleet engine for `cfg`; exit 2 naming the URL when its Redis does not answer, or
    naming the extra when it is not installed."""
    try:
        return Fleet(cfg)
    except RedisUnreachable as err:
        fail(str(err), err.exit_code)
    except ImportError as err:
        fail(
            f'{cfg.path}: [engine] kind = "celery" needs the fleet extra: '
            f"pip install 'crm-connector[fleet]' ({err})",
            2,
        )


def load(ctx: click.Context, secrets: bool = True) -> Config:
    """The config named by --config, $CRM_CONNECTOR_CONFIG or ./config.toml; exit 2 if bad.
    `secrets=False`: a command that only reads the mirror runs without the sources' secrets."""
    try:
        return runtime.load_config(ctx.find_root().obj["config"], secrets)
    except ConfigError as err:
        fail(str(err), 2)


def mirror_files(cfg: Config) -> list[dict]:
    """Each mirror file the config names (one, or one per source), absolute, and whether it
    exists yet: a path that is not the one meant shows before anything is written to it."""
    return [
        {
            "path": scope.storage_path,
            "sources": [s.name for s in scope.sources],
            "exists": os.path.exists(scope.storage_path),
        }
        for scope in cfg.scopes()
    ]


def echo_mirrors(cfg: Config) -> None:
    """`Mirror: /abs/path` (with `(not created yet)` when no file is there) per mirror file."""
    for m in mirror_files(cfg):
        who = f" ({', '.join(m['sources'])})" if cfg.per_source else ""
        click.echo(f"Mirror{who}: {m['path']}" + ("" if m["exists"] else " (not created yet)"))


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


def fitted(
    rows: list[dict], columns: list[str], width: int | None = None, right: tuple[str, ...] = ()
) -> str:
    """Like `table`, within `width` (default: the terminal's, or $COLUMNS, else 80): the last
    column gets what the others leave and wraps onto indented lines; `right`: numbers."""
    width = width or shutil.get_terminal_size((80, 24)).columns
    cells = [[("" if r.get(c) is None else str(r.get(c))) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lead = sum(widths[:-1]) + 2 * (len(columns) - 1)
    widths[-1] = max(12, min(widths[-1], width - lead))

    def lines(vals: list[str]) -> list[str]:
        first = [v.rjust(w) if c in right else v.ljust(w) for v, w, c in zip(vals, widths, columns)]
        tail = textwrap.wrap(vals[-1], widths[-1], break_on_hyphens=False) or [""]
        out = ["  ".join(first[:-1] + [tail[0]]).rstrip()]
        return out + [" " * lead + t for t in tail[1:]]

    text = lines(columns) + ["  ".join("-" * w for w in widths)]
    for row in cells:
        text += lines(row)
    return "\n".join(text)


def json_logs(ctx: click.Context) -> bool:
    """Whether `--log-format json` was asked for: then stdout carries only JSON."""
    return ctx.find_root().obj.get("log_format") == "json"


def echo_json_line(document) -> None:
    """One JSON document on one line of stdout (a summary a log collector reads as it comes)."""
    click.echo(json.dumps(document, ensure_ascii=False, default=str))


def echo_json(document) -> None:
    """The command's one JSON document on stdout (anything else goes to stderr)."""
    click.echo(json.dumps(document, ensure_ascii=False, indent=2, default=str))
