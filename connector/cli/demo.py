"""`crm-connector demo`: the whole job (sync, KPIs, write-back) on every CRM's sandbox, locally.

Each CRM in the registry gets a fake server on 127.0.0.1 and a source named after its kind;
every source runs the job `crm-connector run` runs, then the summary shows the mirror's rows
and a few cards as the fake CRMs now show them, and the report (`crm-connector report`) is
written beside the mirror. A made-up spend file gives the channels their CAC.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import sys
import tempfile
import time
from datetime import datetime, timezone

import click

from adapters import registry
from connector.cli.report import make as make_report
from connector.mirror import datasette
from connector.run import jobs, runtime
from connector.run.progress import Progress
from connector.run.sync import Outcome

DEMO_FIELDS = {
    "deals_won": "KPI: Deals won",
    "win_rate": "KPI: Win rate, %",
    "revenue_won": "KPI: Lifetime revenue",
    "avg_deal_value": "KPI: Average deal",
    "calls_90d": "KPI: Calls, 90 days",
    "overdue_tasks": "KPI: Overdue tasks",
    "churn_risk": "KPI: Churn risk",
}
SUMMARY_TABLES = ["deals", "contacts", "companies", "tasks", "calls", "stage_changes", "leads"]
FAILED = (Outcome.FAILED, Outcome.NOT_RUN)  # a stream another's failure left unrun prints as failed


@click.command()
@click.option("--size", default=2000, show_default=True, help="Deals per sandbox account.")
@click.option("--seed", default=1, show_default=True)
@click.option(
    "--dir",
    "workdir",
    default=None,
    metavar="DIR",
    help="Where to keep the config and mirror (default: a new temporary folder).",
)
def demo(size: int, seed: int, workdir: str | None) -> None:
    """Run the whole job on the built-in sandbox CRMs: sync, KPIs, write-back; then summarise."""
    workdir = workdir or tempfile.mkdtemp(prefix="crm-connector-demo-")
    os.makedirs(workdir, exist_ok=True)
    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        logging.getLogger().setLevel(logging.WARNING)  # the demo prints its own summary
    t0 = time.monotonic()
    crms = [registry.get(k) for k in registry.kinds()]
    click.echo(
        f"Starting a sandbox for each CRM ({', '.join(c.title for c in crms)}; {size:,} deals each) ..."
    )
    with contextlib.ExitStack() as stack:
        servers = {
            c.kind: stack.enter_context(c.sandbox_class()(seed=seed + i, size=size))
            for i, c in enumerate(crms)
        }
        cfg = runtime.load_config(demo_config(workdir, servers))
        failed = False
        for src in cfg.sources:
            click.echo(f"Syncing {src.name} ({registry.get(src.kind).title}) ...")
            failed |= not _run(cfg, src)
        _summary(jobs.table_counts(cfg), servers)
    report = make_report(cfg, cfg.sources, out=os.path.join(workdir, "crm-report.html"))
    metadata = datasette.write(cfg.storage_path)
    every = "both" if len(servers) == 2 else f"all {len(servers)}"
    click.echo(f"\nDone in {time.monotonic() - t0:.0f}s; {every} sandboxes stopped.")
    click.echo(f"Mirror: {cfg.storage_path}  (open it with `sqlite3` or Datasette:)")
    click.echo(f"  datasette {shlex.quote(cfg.storage_path)} -m {shlex.quote(metadata)}")
    click.echo(f"Config: {cfg.path}")
    click.echo(f"Report: {report}  (open it in a browser; it needs no network)")
    sys.exit(1 if failed else 0)


def demo_config(workdir: str, servers: dict) -> str:
    """Write a config with one source per running sandbox (named after its kind); its path."""
    blocks = []
    for kind, server in servers.items():
        keys = {"name": kind, "kind": kind, **registry.get(kind).sandbox_source(server)}
        blocks.append("[[sources]]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in keys.items()))
    fields = "".join(f"{k} = {_toml(v)}\n" for k, v in DEMO_FIELDS.items())
    text = f"""# Written by `crm-connector demo`: every source is a local sandbox.
[storage]
path = {_toml(os.path.join(workdir, "crm-mirror.db"))}

{chr(10).join(blocks)}
[kpi]
targets = ["contact", "company"]
churn_days = 180

[kpi.currency_rates]
USD = 90.0

[kpi.spend]
file = "spend.csv"

[kpi.fields]
{fields}"""
    path = os.path.join(workdir, "config.toml")
    with open(path, "w") as fh:
        fh.write(text)
    with open(os.path.join(workdir, "spend.csv"), "w") as fh:
        fh.write(demo_spend())
    return path


DEMO_CHANNELS = {"google": 120_000, "yandex": 90_000, "facebook": 40_000, "website": 25_000, "advert": 60_000}


def demo_spend(months: int = 24) -> str:
    """A made-up spend file: the sandboxes' channels over the last `months` months."""
    today = datetime.now(timezone.utc)
    lines = ["month,channel,amount"]
    for back in range(months):
        y, m = divmod(today.year * 12 + today.month - 1 - back, 12)
        lines += [f"{y:04d}-{m + 1:02d},{c},{a + 1000 * (back % 7)}" for c, a in DEMO_CHANNELS.items()]
    return "\n".join(lines) + "\n"


def _toml(value) -> str:
    """A TOML value: strings quoted (JSON's escapes are TOML's), numbers and booleans as is."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value) if isinstance(value, str) else str(value)


def _run(cfg, src) -> bool:
    """One source's job, as the daemon runs it; prints what it did; False when it failed."""
    res = jobs.run_job(cfg, src, kpi=True, progress=Progress())
    for r in res.results:
        if r.outcome in FAILED:
            click.echo(f"  {r.stream}: FAILED: {r.error}", err=True)
    if res.results:
        click.echo(
            f"  {res.rows:,} rows in {sum(r.seconds for r in res.results):.1f}s, {res.requests} requests"
        )
    if res.kpi is not None:
        click.echo(f"  KPIs: {res.kpi.line()}")
    if res.status != "ok" and not any(r.outcome in FAILED for r in res.results):
        click.echo(f"  FAILED: {res.error}", err=True)
    return res.status == "ok"


def _summary(counts: dict[str, dict[str, int]], servers: dict) -> None:
    click.echo("\nRows in the mirror:")
    width = max([7] + [len(s) for s in counts])
    click.echo("  " + "source".ljust(width) + " " + "".join(t.rjust(15) for t in SUMMARY_TABLES))
    for source, per in sorted(counts.items()):
        click.echo(f"  {source:<{width}} " + "".join(f"{per.get(t, 0):>15,}" for t in SUMMARY_TABLES))
    for name, server in servers.items():
        _show_cards(name, server)


def _show_cards(name: str, server) -> None:
    """A few contacts as the sandbox CRM now shows them: their KPI custom fields."""
    ds = server.dataset
    with ds.lock:
        kpi_fields = {f["id"]: f["name"] for f in ds.fields["contact"] if f["name"].startswith("KPI")}
        if not kpi_fields:
            return
        shown = [
            c
            for c in ds.contacts
            if any(c.get("custom", {}).get(fid) not in (None, "") for fid in kpi_fields)
        ][:3]
        click.echo(f"\n{name}: contact cards in the CRM now show:")
        for c in shown:
            vals = ", ".join(
                f"{kpi_fields[fid].removeprefix('KPI: ')} = {_num(c['custom'][fid])}"
                for fid in kpi_fields
                if c.get("custom", {}).get(fid) not in (None, "")
            )
            click.echo(f"  #{c['id']} {c['name']}: {vals}")


def _num(value) -> str:
    try:
        return f"{float(value):,.2f}".rstrip("0").rstrip(".")
    except (TypeError, ValueError):
        return str(value)
