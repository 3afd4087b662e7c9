"""The same calls through amoCRM and through Bitrix24 give the same mirror counts and call KPIs.

Two sandboxes get identical datasets (same seed) plus the same grid of calls, every direction
x outcome on a few contacts, companies and deals; each renders the outcome in its own codes
(amoCRM note `call_status`, Bitrix24 `CALL_FAILED_CODE`). After a sync of each, every client
has the same answered / missed / failed counts and the same `calls_90d`, `missed_calls_90d`
and `call_minutes_90d`, and the mirror's statuses are the dataset's.
"""

from __future__ import annotations

from datetime import datetime, timezone

from adapters import registry
from connector.config.kpi import KpiConfig
from connector.config.loader import SourceConfig
from connector.kpi import engine as kpi
from connector.mirror.store import Mirror
from connector.mirror.tokens import TokenStore
from connector.run.sync import sync_source
from sandbox.amocrm import AmoSandbox
from sandbox.bitrix24 import Bitrix24Sandbox
from sandbox.call_outcomes import OUTCOMES, status_of
from sandbox.data import generate

DAY = 86400
CALL_KPIS = ("calls_90d", "missed_calls_90d", "call_minutes_90d")


def dataset():
    """A small account with the call grid added; the same ids every time. amoCRM has no
    automated informational calls (Bitrix24 CALL_TYPE 5, left out of the call KPIs), so the
    generated ones are made ordinary outgoing calls here."""
    ds = generate(seed=7, size=80)
    for c in ds.calls:
        c.pop("informational", None)
    alive = {
        name: [r for r in getattr(ds, name) if not r["is_deleted"]][:2]
        for name in ("contacts", "companies", "deals")
    }
    targets = (
        [("contact", r) for r in alive["contacts"]]
        + [("company", r) for r in alive["companies"]]
        + [("deal", r) for r in alive["deals"]]
    )
    for n, (etype, row) in enumerate(targets):
        for direction in ("in", "out"):
            for k, outcome in enumerate(OUTCOMES):
                ds.add(
                    "calls",
                    direction=direction,
                    outcome=outcome,
                    status=status_of(direction, outcome),
                    duration_s=60 * (k + 1) if outcome == "talked" else 0,
                    started_at=ds.now - (n + k + 1) * DAY,
                    entity_type=etype,
                    entity_id=row["id"],
                    responsible_user_id=row["responsible_user_id"],
                    phone="+74950000001",
                )
    return ds


def source(kind: str, server) -> SourceConfig:
    if kind == "amocrm":
        return SourceConfig(
            name="main",
            kind="amocrm",
            base_url=server.url,
            access_token=server.access_token,
            requests_per_second=500.0,
        )
    return SourceConfig(
        name="main",
        kind="bitrix24",
        webhook_url=server.webhook_url,
        requests_per_second=500.0,
        bucket_size=10_000,
    )


def synced(kind: str, server, tmp_path, kpi_cfg: KpiConfig | None = None) -> Mirror:
    """A mirror of the server's account with KPIs computed (`kpi_cfg`, default settings)."""
    adapter = registry.get(kind).make_adapter(
        source(kind, server), TokenStore(str(tmp_path / f"{kind}.tokens"))
    )
    mirror = Mirror(str(tmp_path / f"{kind}.db"))
    try:
        results = sync_source(mirror, adapter)
    finally:
        adapter.close()
    assert all(r.status == "ok" for r in results), [(r.stream, r.error) for r in results]
    now = datetime.fromtimestamp(server.dataset.now, timezone.utc)
    kpi.compute(mirror, "main", kpi_cfg or KpiConfig(), now=now)
    return mirror


def call_counts(m: Mirror) -> dict:
    return {
        (et, eid, status): n
        for et, eid, status, n in m.conn.execute(
            "SELECT entity_type, entity_id, status, count(*) FROM calls GROUP BY 1, 2, 3"
        )
    }


def call_kpis(m: Mirror) -> dict:
    marks = ", ".join("?" * len(CALL_KPIS))
    return {
        (et, eid, k): v
        for et, eid, k, v in m.conn.execute(
            f"SELECT entity_type, entity_id, kpi, value FROM kpi_values WHERE kpi IN ({marks})", CALL_KPIS
        )
    }


def test_same_calls_through_both_crms_give_the_same_counts_and_kpis(tmp_path):
    amo_ds, b24_ds = dataset(), dataset()
    with AmoSandbox(amo_ds, limits=False) as amo_server:
        amo = synced("amocrm", amo_server, tmp_path)
    b24_server = Bitrix24Sandbox(b24_ds, limits=False, cost_model=False).start()
    try:
        b24 = synced("bitrix24", b24_server, tmp_path)
    finally:
        b24_server.stop()

    # Every status is the dataset's (the shared vocabulary), in both mirrors.
    for m, ds in ((amo, amo_ds), (b24, b24_ds)):
        got = dict(m.conn.execute("SELECT id, direction || ' ' || status FROM calls"))
        assert got == {c["id"]: f"{c['direction']} {c['status']}" for c in ds.calls}
    statuses = {r[0] for r in amo.conn.execute("SELECT DISTINCT direction || ' ' || status FROM calls")}
    assert statuses == {"in answered", "in missed", "out answered", "out failed"}

    assert call_counts(amo) == call_counts(b24)
    amo_kpis, b24_kpis = call_kpis(amo), call_kpis(b24)
    assert amo_kpis == b24_kpis
    missed = [v for (_, _, k), v in amo_kpis.items() if k == "missed_calls_90d" and v]
    assert missed, "the grid puts missed calls on clients inside the 90-day window"
    amo.close()
    b24.close()
