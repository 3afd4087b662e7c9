"""One KPI job for one source: compute from the mirror, then write the changes back.

The KPI step of `connector.jobs.run_job` (`crm-connector kpi`, and the nightly job after a
complete sync).
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
    """Compute the source's KPIs and write back what changed (dry run: compute and plan only;
    `adapter` may then be None)."""
    comp = kpi.compute(mirror, source_cfg.name, cfg.kpi, source_cfg.currency, now=now, only=only)
    wb = writeback.write_back(mirror, adapter, source_cfg.name, cfg.kpi, dry_run=dry_run, only=only)
    return KpiJobResult(source_cfg.name, comp, wb, dry_run)
