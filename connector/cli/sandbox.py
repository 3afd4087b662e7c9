"""`crm-connector sandbox` (serve one fake CRM) and `crm-connector demo` (the whole job, locally)."""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
import tempfile
import threading
import time

import click

DEMO_FIELDS = {
    "deals_won": "KPI: Deals won",
    "win_rate": "KPI: Win rate, %",
    "revenue_won": "KPI: Lifetime revenue",
    "avg_deal_value": "KPI: Average deal",
    "calls_90d": "KPI: Calls, 90 days",
    "overdue_tasks": "KPI: Overdue tasks",
    "churn_risk": "KPI: Churn risk",
}


def _server(kind: str, **kw):
    if kind == "amocrm":
        from sandbox.amocrm import AmoSandbox
        return AmoSandbox(**kw)
    from sandbox.bitrix24 import Bitrix24Sandbox
    return Bitrix24Sandbox(**kw)


@click.command()
@click.argument("kind", type=click.Choice(["amocrm", "bitrix24"]))
@click.option("--port", default=0, show_default=True, help="0 picks a free port.")
@click.option("--seed", default=1, show_default=True, help="Same seed, same data.")
@click.option("--size", default=1000, show_default=True, help="Number of deals to generate.")
@click.option("--latency-ms", default=0, show_default=True, help="Added to every response.")
@click.option("--no-limits", is_flag=True, help="Do not enforce the CRM's rate limits.")
def sandbox(kind: str, port: int, seed: int, size: int, latency_ms: int, no_limits: bool) -> None:
    """Serve a fake amoCRM or Bitrix24 account on 127.0.0.1 until Ctrl-C."""
    t0 = time.monotonic()
    server = _server(kind, port=port, seed=seed, size=size, latency_ms=latency_ms,
                     limits=not no_limits).start()
    click.echo(f"{kind} sandbox: {size:,} deals (seed {seed}) generated in {time.monotonic() - t0:.1f}s")
    click.echo(f"  url: {server.url}")
    if kind == "amocrm":
        click.echo(f"  access_token: {server.access_token}   (a sandbox token, not a secret)")
    else:
        click.echo(f"  webhook_url: {server.webhook_url}")
    click.echo("Ctrl-C to stop.")
    stop = threading.Event()
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


def demo_config(workdir: str, amo, b24) -> str:
    fields = "\n".join(f'{k} = "{v}"' for k, v in DEMO_FIELDS.items())
    text = f"""# Written by `crm-connector demo`: both sources are local sandboxes.
[storage]
path = "{os.path.join(workdir, 'crm-mirror.db')}"

[[sources]]
name = "amo"
kind = "amocrm"
base_url = "{amo.url}"
access_token = "{amo.access_token}"

[[sources]]
name = "b24"
kind = "bitrix24"
webhook_url = "{b24.webhook_url}"

[kpi]
targets = ["contact", "company"]
churn_days = 180

[kpi.currency_rates]
USD = 90.0

[kpi.fields]
{fields}
"""
    path = os.path.join(workdir, "config.toml")
    with open(path, "w") as fh:
        fh.write(text)
    return path


@click.command()
@click.option("--size", default=2000, show_default=True, help="Deals per sandbox account.")
@click.option("--seed", default=1, show_default=True)
@click.option("--dir", "workdir", default=None, metavar="DIR",
              help="Where to keep the config and mirror (default: a new temporary folder).")
def demo(size: int, seed: int, workdir: str | None) -> None:
    """Run the whole job on two built-in sandboxes: sync, KPIs, write-back; then summarise."""
    from connector import runtime
    from connector.progress import Progress
    from connector.sync import sync_source

    workdir = workdir or tempfile.mkdtemp(prefix="crm-connector-demo-")
    os.makedirs(workdir, exist_ok=True)
    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        logging.getLogger().setLevel(logging.WARNING)  # the demo prints its own summary
    t0 = time.monotonic()
    click.echo(f"Starting an amoCRM and a Bitrix24 sandbox ({size:,} deals each) ...")
    with _server("amocrm", seed=seed, size=size) as amo, \
            _server("bitrix24", seed=seed + 1, size=size) as b24:
        cfg = runtime.load_config(demo_config(workdir, amo, b24))
        failed = False
        with runtime.open_mirror(cfg) as mirror:
            for src in cfg.sources:
                adapter = runtime.make_adapter(cfg, src)
                try:
                    click.echo(f"Syncing {src.name} ({src.kind}) ...")
                    results = sync_source(mirror, adapter, progress=Progress())
                    bad = [r for r in results if r.status == "failed"]
                    failed |= bool(bad)
                    for r in bad:
                        click.echo(f"  {r.stream}: FAILED: {r.error}", err=True)
                    click.echo(f"  {sum(r.rows for r in results):,} rows in "
                               f"{sum(r.seconds for r in results):.1f}s, "
                               f"{sum(r.requests for r in results)} requests")
                    _demo_kpi(cfg, mirror, src, adapter)
                finally:
                    adapter.close()
            _summary(mirror, {"amo": amo, "b24": b24}, cfg)
    click.echo(f"\nDone in {time.monotonic() - t0:.0f}s; both sandboxes stopped.")
    click.echo(f"Mirror: {cfg.storage_path}  (open it with `sqlite3` or Datasette)")
    click.echo(f"Config: {cfg.path}")
    sys.exit(1 if failed else 0)


def _demo_kpi(cfg, mirror, src, adapter) -> None:
    if not importlib.util.find_spec("connector.writeback"):
        return
    from connector.kpi_job import run_kpi_job
    summary = run_kpi_job(cfg, mirror, src, adapter)
    click.echo(f"  KPIs: {summary.line()}")


def _summary(mirror, servers, cfg) -> None:
    counts = {src.name: mirror.table_counts(src.name) for src in cfg.sources}
    click.echo("\nRows in the mirror:")
    tables = ["deals", "contacts", "companies", "tasks", "calls", "stage_changes", "leads"]
    click.echo("  source  " + "".join(t.rjust(15) for t in tables))
    for source, per in sorted(counts.items()):
        click.echo(f"  {source:<7} " + "".join(f"{per.get(t, 0):>15,}" for t in tables))
    for name, server in servers.items():
        _show_cards(name, server)


def _show_cards(name: str, server) -> None:
    """A few contacts as the sandbox CRM now shows them: their KPI custom fields."""
    ds = server.dataset
    with ds.lock:
        kpi_fields = {f["id"]: f["name"] for f in ds.fields["contact"] if f["name"].startswith("KPI")}
        if not kpi_fields:
            return
        shown = [c for c in ds.contacts if any(c.get("custom", {}).get(fid) not in (None, "")
                                               for fid in kpi_fields)][:3]
        click.echo(f"\n{name}: contact cards in the CRM now show:")
        for c in shown:
            vals = ", ".join(f"{kpi_fields[fid].removeprefix('KPI: ')} = {_num(c['custom'][fid])}"
                             for fid in kpi_fields if c.get("custom", {}).get(fid) not in (None, ""))
            click.echo(f"  #{c['id']} {c['name']}: {vals}")


def _num(value) -> str:
    try:
        return f"{float(value):,.2f}".rstrip("0").rstrip(".")
    except (TypeError, ValueError):
        return str(value)
