"""One KPI job for one source: compute from the mirror, then write the changes back.

Used by `crm-connector kpi` and by the scheduler after a complete nightly sync.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from connector import kpi, writeback


@dataclass
class KpiJobResult:
    source: str
    compute: kpi.ComputeResult
    writeback: writeback.WritebackReport
    dry_run: bool = False

    @property
    def failed(self) -> int:
        """Cards the CRM rejected (their values are retried on the next run)."""
        return self.writeback.failed

    def line(self) -> str:
        wb = self.writeback
        clients = sum(self.compute.clients.values())
        verb = "would change" if self.dry_run else "changed"
        text = (f"{clients:,} clients computed, {wb.clients:,} cards touched, {wb.values:,} values "
                f"{verb}, {wb.requests:,} requests")
        return text + (f", {wb.failed:,} cards rejected" if wb.failed else "")


def run_kpi_job(cfg, mirror, source_cfg, adapter=None, *, dry_run: bool = False,
                only: list[str] | None = None, now: datetime | None = None) -> KpiJobResult:
    """Compute the source's KPIs and write back what changed (dry run: compute and plan only).

    Without an `adapter` one is made from the config (and closed) when something must be sent.
    """
    comp = kpi.compute(mirror, source_cfg.name, cfg.kpi, source_cfg.currency, now=now, only=only)
    own = None
    if adapter is None and not dry_run:
        from connector import runtime
        adapter = own = runtime.make_adapter(cfg, source_cfg)
    try:
        wb = writeback.write_back(mirror, adapter, source_cfg.name, cfg.kpi, dry_run=dry_run, only=only)
    finally:
        if own is not None:
            own.close()
    return KpiJobResult(source_cfg.name, comp, wb, dry_run)
