"""One KPI job for one source: compute from the mirror, then write the changes back.

The KPI step of `connector.run.jobs.run_job` (`crm-connector kpi`, and the nightly job after a
complete sync). A source never synced is refused (`kpi_inputs.NotSynced`); a KPI reading a
table some stream has not completely filled is withheld (`kpi_inputs.withheld`). A dry run
computes and plans against a TEMP shadow of the history: the mirror is left as it was.
A full run (no dry run, no `only`) then computes the team and business measures
(`connector.measures.engine`), withheld alike. Survey scores in card fields (`[kpi.survey]`) are read
from the mirrored cards once the CRM has named their field keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from adapters import registry
from connector.kpi import engine as kpi
from connector.kpi import inputs as kpi_inputs
from connector.kpi import survey, writeback
from connector.measures import engine as metrics


@dataclass
class KpiJobResult:
    source: str
    compute: kpi.ComputeResult
    writeback: writeback.WritebackReport
    dry_run: bool = False
    metrics: metrics.MetricsResult | None = None

    @property
    def failed(self) -> int:
        """Cards the CRM rejected (their values are retried on the next run)."""
        return self.writeback.failed

    @property
    def withheld(self) -> dict[str, str]:
        """KPI -> why it was not computed (incomplete data)."""
        return self.compute.withheld

    def line(self) -> str:
        wb = self.writeback
        clients = sum(self.compute.clients.values())
        if self.dry_run:  # nothing was sent: say what a real run would do
            text = (
                f"{clients:,} clients computed, would touch {wb.clients:,} cards and change "
                f"{wb.values:,} values, {wb.requests:,} requests"
            )
        else:
            text = (
                f"{clients:,} clients computed, {wb.clients:,} cards touched, {wb.values:,} values "
                f"changed, {wb.requests:,} requests"
            )
        text += f", {wb.failed:,} cards rejected" if wb.failed else ""
        text += f", {len(self.withheld)} KPIs withheld" if self.withheld else ""
        broken = getattr(self.compute, "broken", None)
        text += f", {len(broken)} custom KPIs past their limits" if broken else ""
        if self.metrics is not None:
            text += f"; {self.metrics.rows:,} team and business measures"
            text += f" ({len(self.metrics.withheld)} groups withheld)" if self.metrics.withheld else ""
        return text


def declared_streams(cfg, source_cfg, adapter=None) -> list:
    """The source's stream declarations (its adapter's, else its CRM's, narrowed alike)."""
    if adapter is not None and hasattr(adapter, "streams"):
        return adapter.streams()
    return registry.get(source_cfg.kind).declarations(source_cfg.streams)


def withheld_kpis(cfg, mirror, source_cfg, adapter=None) -> dict[str, str]:
    """KPI -> why it may not be computed now (raises NotSynced for a source never synced)."""
    kpi_inputs.require_sync(mirror, source_cfg.name)
    states = kpi_inputs.stream_states(mirror, source_cfg.name, declared_streams(cfg, source_cfg, adapter))
    return kpi_inputs.withheld(kpi.all_kpis(cfg.kpi).values(), cfg.kpi.targets, states)


def withheld_measures(cfg, mirror, source_cfg, adapter=None) -> dict[str, str]:
    """Measure group -> why it may not be computed now."""
    states = kpi_inputs.stream_states(mirror, source_cfg.name, declared_streams(cfg, source_cfg, adapter))
    return kpi_inputs.withheld(metrics.catalogue().values(), (), states)


def card_survey(cfg, mirror, source_cfg, adapter, *, dry_run: bool = False) -> list[tuple]:
    """Survey scores in the cards' [kpi.survey] fields. Field keys not found before are asked
    of the CRM, except in a dry run (which sends nothing)."""
    keys = survey.cached_keys(mirror, source_cfg.name, cfg.kpi.survey)
    wanted = survey.missing(cfg.kpi.survey, cfg.kpi.targets, keys)
    if wanted and adapter is not None and not dry_run:
        found = survey.find_keys(adapter, wanted)
        survey.save_keys(mirror, source_cfg.name, found)
        for t, by_kind in found.items():
            keys.setdefault(t, {}).update({k: f.key for k, f in by_kind.items()})
    return survey.card_scores(mirror.conn, source_cfg.name, source_cfg.kind, keys) if keys else []


def run_metrics(
    cfg, mirror, source_cfg, adapter=None, *, now: datetime | None = None, scores=None
) -> metrics.MetricsResult:
    """Compute and store the source's team and business measures."""
    if scores is None:
        scores = card_survey(cfg, mirror, source_cfg, adapter)
    return metrics.compute(
        mirror,
        source_cfg.name,
        cfg.kpi,
        source_cfg.currency,
        account_tz(cfg),
        now=now,
        withheld=withheld_measures(cfg, mirror, source_cfg, adapter),
        card_survey=scores,
    )


def account_tz(cfg) -> str:
    """Months are the account's: [kpi] timezone, else [schedule] timezone, else UTC."""
    tz = getattr(cfg, "timezone", None)
    if tz:
        return tz
    return getattr(getattr(cfg, "schedule", None), "timezone", None) or "UTC"


def run_kpi_job(
    cfg,
    mirror,
    source_cfg,
    adapter=None,
    *,
    dry_run: bool = False,
    only: list[str] | None = None,
    now: datetime | None = None,
    clients: dict[str, list[int]] | None = None,
) -> KpiJobResult:
    """Compute the source's KPIs and write back what changed (dry run: compute and plan only;
    `adapter` may then be None). `clients`: only these (entity type -> ids; a refresh), and
    no team measures."""
    held = withheld_kpis(cfg, mirror, source_cfg, adapter)
    scores = card_survey(cfg, mirror, source_cfg, adapter, dry_run=dry_run)
    if dry_run:
        kpi.shadow_history(mirror.conn, source_cfg.name)
    try:
        comp = kpi.compute(
            mirror,
            source_cfg.name,
            cfg.kpi,
            source_cfg.currency,
            now=now,
            only=only,
            withheld=held,
            dry_run=dry_run,
            card_survey=scores,
            clients=clients,
            incremental=True,
        )
        wb = writeback.write_back(
            mirror,
            adapter,
            source_cfg.name,
            cfg.kpi,
            dry_run=dry_run,
            only=only,
            withheld=held,
            clients=clients,
        )
    finally:
        if dry_run:
            kpi.drop_shadow(mirror.conn)
    res = KpiJobResult(source_cfg.name, comp, wb, dry_run)
    if not dry_run and not only and clients is None:
        res.metrics = run_metrics(cfg, mirror, source_cfg, adapter, now=comp_now(comp), scores=scores)
    return res


def comp_now(comp: kpi.ComputeResult) -> datetime:
    """The KPI run's clock, so measures and KPIs share one `computed_at`."""
    return datetime.strptime(comp.computed_at, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
