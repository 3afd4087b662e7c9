"""`crm-connector report`: the team and business measures as one self-contained HTML file."""

from __future__ import annotations

import os

import click

from connector.cli.common import echo_json_line, fail, json_logs, load, sources
from connector.report import page as report_mod
from connector.run import runtime


@click.command()
@click.option("--source", "source_name", metavar="NAME", help="Only this source (default: every source).")
@click.option(
    "--months",
    type=click.IntRange(1, 120),
    default=None,
    metavar="N",
    help="Months in the monthly charts (default: [report] months, else 12).",
)
@click.option(
    "--out",
    "out",
    default=None,
    metavar="FILE",
    help="Where to write it (default: [report] path, else crm-report.html).",
)
@click.option(
    "--lang",
    "language",
    type=click.Choice(["en", "ru"]),
    default=None,
    help="Language of labels, numbers and dates (default: [report] language, else en).",
)
@click.pass_context
def report(
    ctx: click.Context, source_name: str | None, months: int | None, out: str | None, language: str | None
) -> None:
    """Write the sales report: funnel, revenue and new clients, managers, channels (CAC and
    LTV : CAC), churn and repeat purchases, NPS / CSAT, from the measures the last KPI run
    stored. One HTML file with everything inline: it opens offline and can be mailed."""
    cfg = load(ctx, secrets=False)
    picked = sources(cfg, source_name)
    path = make(cfg, picked, months, out, language)
    if json_logs(ctx):
        echo_json_line({"event": "report", "path": path})
    else:
        click.echo(f"Report: {path}")


def make(cfg, picked, months: int | None = None, out: str | None = None, language: str | None = None) -> str:
    """Build and write the report; its absolute path (exit 1 naming the source with no measures)."""
    mirrors = {}  # mirror file -> Mirror: one shared file, or one file per source
    try:
        for src in picked:
            scope = cfg.scoped(src.name)
            if scope.storage_path not in mirrors:
                mirrors[scope.storage_path] = runtime.open_mirror(scope, read_only=True)  # only reads
        conns = {s.name: mirrors[cfg.scoped(s.name).storage_path].conn for s in picked}
        text = report_mod.build(
            conns,
            picked,
            language=language or cfg.report.language,
            months=months or cfg.report.months,
            churn_days=cfg.kpi.churn_days,
            tz=cfg.timezone,
        )
    except report_mod.ReportError as err:
        fail(str(err))
    finally:
        for mirror in mirrors.values():
            mirror.close()
    path = out or cfg.report.path
    report_mod.write(path, text)
    return os.path.abspath(path)
