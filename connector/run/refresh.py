"""Refresh a few records the CRM said changed, and the KPIs of the clients they touch.

    read the records back by id (the adapter; a delivery's content is never trusted)
    -> upsert them in one short transaction -> recompute the KPIs of the contacts and
    companies they touch, before and after the change -> write back the values that changed

What a client's KPIs read is the whole mirror, so a refresh computes only those clients but
from every row, as the nightly job does: the values equal what a full KPI pass would give.
Our own write-back makes the CRM announce a card update; its refresh finds the values equal
and writes nothing. Unlike the nightly job it takes no source lock (it would wait hours behind
a first sync): SQLite's own write lock keeps the two apart, a transaction at a time.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from adapters.hooks import Change
from connector.config.loader import Config, SourceConfig
from connector.kpi.inputs import CLIENT_TABLES
from connector.run import runtime
from connector.run.kpi_job import KpiJobResult, run_kpi_job

log = logging.getLogger("crm_connector.refresh")


# The clients a record of each table touches, as (entity_type, id) rows from the record's id
# (`:s` source, `:id`). A task, call or activity names its client directly or through a deal
# or a lead.
def _card_links(t: str) -> str:
    return (
        f"SELECT 'contact', contact_id FROM {t} WHERE source = :s AND id = :id AND contact_id IS NOT NULL "
        f"UNION SELECT 'company', company_id FROM {t} WHERE source = :s AND id = :id "
        f"AND company_id IS NOT NULL"
    )


def _owned(t: str) -> str:
    via = " ".join(
        f"UNION SELECT '{kind}', c.{kind}_id FROM {t} x JOIN {parent}s c ON c.source = x.source "
        f"AND c.id = x.entity_id WHERE x.source = :s AND x.id = :id AND x.entity_type = '{parent}' "
        f"AND c.{kind}_id IS NOT NULL"
        for parent in ("deal", "lead")
        for kind in ("contact", "company")
    )
    return (
        f"SELECT entity_type, entity_id FROM {t} WHERE source = :s AND id = :id "
        f"AND entity_type IN ('contact', 'company') "
        f"UNION SELECT 'contact', l.contact_id FROM {t} x JOIN deal_contacts l ON l.source = x.source "
        f"AND l.deal_id = x.entity_id WHERE x.source = :s AND x.id = :id AND x.entity_type = 'deal' {via}"
    )


TOUCHES = {
    "contacts": "SELECT 'contact', :id UNION SELECT 'company', company_id FROM contacts "
    "WHERE source = :s AND id = :id AND company_id IS NOT NULL",
    "companies": "SELECT 'company', :id",
    "deals": "SELECT 'contact', contact_id FROM deal_contacts WHERE source = :s AND deal_id = :id "
    "UNION " + _card_links("deals"),
    "leads": _card_links("leads"),
    "tasks": _owned("tasks"),
    "calls": _owned("calls"),
    "activities": _owned("activities"),
}


@dataclass
class RefreshResult:
    source: str
    changes: int  # records the delivery named
    rows: int = 0  # rows written to the mirror
    clients: dict[str, list[int]] = field(default_factory=dict)  # entity type -> client ids
    kpi: KpiJobResult | None = None
    requests: int = 0
    seconds: float = 0.0

    def line(self) -> str:
        n = sum(len(v) for v in self.clients.values())
        written = self.kpi.writeback.values if self.kpi is not None else 0
        return (
            f"{self.changes} change(s): {self.rows} row(s), {n} client(s) recomputed, "
            f"{written} value(s) written, {self.requests} request(s), {self.seconds:.2f}s"
        )


def touched(mirror, source: str, changes: list[Change]) -> dict[str, set[int]]:
    """The contacts and companies (entity type -> ids) that the records in `changes` belong to,
    as the mirror links them now."""
    out: dict[str, set[int]] = {t: set() for t in CLIENT_TABLES}
    for ch in changes:
        sql = TOUCHES.get(ch.table)
        if sql is None:
            continue
        for entity_type, entity_id in mirror.conn.execute(sql, {"s": source, "id": ch.id}):
            if entity_type in out and entity_id is not None:
                out[entity_type].add(int(entity_id))
    return out


def refresh(cfg: Config, source: SourceConfig, changes: list[Change], adapter, mirror) -> RefreshResult:
    """Read `changes` back, store them, recompute and write back the KPIs they touch."""
    t0, before = time.monotonic(), adapter.requests
    out = RefreshResult(source.name, len(changes))
    page = adapter.read_changes(changes)
    was = touched(mirror, source.name, changes)
    out.rows = mirror.save_page(source.name, "refresh", page)
    now = touched(mirror, source.name, changes)
    out.clients = {t: sorted(was[t] | now[t]) for t in was if was[t] | now[t]}
    if out.clients and cfg.kpi.fields:
        out.kpi = run_kpi_job(cfg, mirror, source, adapter, clients=out.clients)
    out.requests = adapter.requests - before
    out.seconds = time.monotonic() - t0
    log.info(
        "refresh of %s: %s",
        source.name,
        out.line(),
        extra={
            "fields": {
                "event": "refresh",
                "source": source.name,
                "changes": len(changes),
                "rows": out.rows,
                "requests": out.requests,
                "written": out.kpi.writeback.values if out.kpi is not None else 0,
            }
        },
    )
    return out


def refresh_source(
    cfg: Config, source: SourceConfig, changes: list[Change], limits=None, adapter=None
) -> RefreshResult:
    """`refresh` with the portal's refresh share of its limits and the mirror.

    `adapter`: the caller's, kept for every refresh of the source (the local engine's `serve`:
    its limiters live in the adapter, and one made per refresh would start each refresh with
    the whole share unused, so refreshes one after another would exceed it). Without one, an
    adapter is made for this refresh, for callers whose `limits` live outside the process
    (the fleet's workers: Redis)."""
    scope = cfg.scoped(source.name)
    own = adapter is None
    if own:
        adapter = runtime.make_adapter(scope, source, limits=limits, role=runtime.REFRESH)
    try:
        with runtime.open_mirror(scope) as mirror:
            return refresh(scope, source, changes, adapter, mirror)
    finally:
        if own:
            adapter.close()
