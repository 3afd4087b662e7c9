"""A quiet night writes little, against both sandboxes: with every card KPI mapped (the dates
`last_interaction_on` / `last_purchase_on` in place of the day counts), a KPI run a day later
with nothing changed in the CRM writes only what really moved: counts over a window ending now
(an interaction 30 days old leaves `interactions_30d`) and tasks that fell due; never a date,
while the day counts would have changed every card. The date KPIs land in date fields that read
back, through the CRM's own API, as the day in the account's time zone.

The sandbox's clients are all active (about seven calls each), so its windows move more than a
real account's, where most clients are quiet: a tenth of its cards get a value on a quiet night
(`MOVING_SHARE` guards that figure)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest
import requests

from connector.config.kpi import KpiConfig
from connector.kpi.engine import catalogue
from connector.mirror.store import Mirror
from connector.run.kpi_job import run_kpi_job
from connector.run.sync import sync_source
from tests.e2e.test_kpi_e2e import amo, b24, sync_later

TZ = "Europe/Moscow"
NOW = datetime.now(timezone.utc).replace(microsecond=0)
DAY_COUNTS = ("days_since_last_interaction", "days_since_last_purchase")  # mirror and report only
# KPIs over a window that ends at the run's clock, or against a deadline: a day on, their value
# may really change with nothing changed in the CRM.
WINDOWED = {
    "calls_90d",
    "call_minutes_90d",
    "missed_calls_90d",
    "interactions_30d",
    "interactions_30d_call",
    "interactions_30d_chat",
    "interactions_30d_email",
    "interactions_30d_meeting",
    "interactions_30d_sms",
    "overdue_tasks",
    "churn_risk",
}
MOVING_SHARE = 0.15  # of the cards (measured: 8.8-9.7 % on both sandboxes)


def every_card_kpi() -> KpiConfig:
    """Every built-in KPI mapped to a field of its own, the dates instead of the day counts (every
    `days_*` KPI counts days to or from an event, so it moves every night)."""
    names = [k for k in catalogue() if not k.startswith("days_")]
    assert {"last_interaction_on", "last_purchase_on"} <= set(names)
    fields = {k: {"contact": f"KPI {k}", "company": f"KPI {k}"} for k in names}
    return KpiConfig(fields=fields, timezone=TZ, currency_rates={"USD": 90.0, "EUR": 100.0})


@pytest.fixture(params=["amocrm", "bitrix24"])
def crm(request, tmp_path):
    make = amo if request.param == "amocrm" else b24
    server = request.getfixturevalue("amo_sandbox" if request.param == "amocrm" else "b24_sandbox")
    src, adapter, _ = make(server, tmp_path)
    mirror = Mirror(str(tmp_path / "mirror.db"))
    assert all(r.status == "ok" for r in sync_source(mirror, adapter))
    yield SimpleNamespace(
        server=server, src=src, adapter=adapter, mirror=mirror, cfg=SimpleNamespace(kpi=every_card_kpi())
    )
    adapter.close()
    mirror.close()


def night(crm, now):
    res = run_kpi_job(crm.cfg, crm.mirror, crm.src, crm.adapter, now=now)
    assert res.writeback.failed == 0
    return res


def card_date(crm, entity_type: str, entity_id: int, key: str) -> str | None:
    """A date field as the CRM's own API shows it, as the account's day `YYYY-MM-DD`."""
    if crm.src.kind == "amocrm":
        plural = "contacts" if entity_type == "contact" else "companies"
        r = requests.get(
            f"{crm.server.url}/api/v4/{plural}/{entity_id}",
            headers={"Authorization": f"Bearer {crm.server.access_token}"},
            timeout=10,
        )
        r.raise_for_status()
        for f in r.json().get("custom_fields_values") or []:
            if str(f["field_id"]) == key:
                stamp = f["values"][0]["value"]  # amoCRM reads dates back as Unix seconds
                return datetime.fromtimestamp(stamp, ZoneInfo(TZ)).date().isoformat()
        return None
    r = requests.post(f"{crm.server.webhook_url}crm.{entity_type}.get", json={"id": entity_id}, timeout=10)
    r.raise_for_status()
    v = r.json()["result"].get(key)  # `2026-11-23T00:00:00+03:00`
    return datetime.fromisoformat(v).date().isoformat() if v else None


def test_a_quiet_night_writes_to_few_cards(crm, capsys):
    first = night(crm, NOW)
    assert first.writeback.values > 100
    sync_later(crm.mirror, crm.adapter)  # our writes bumped the cards: read them back
    assert night(crm, NOW).writeback.values == 0

    quiet = night(crm, NOW + timedelta(days=1))  # the clock a day on, nothing changed in the CRM
    conn = crm.mirror.conn
    # Every live card, not the pass's clients: a pass between full ones recomputes only a few.
    cards = conn.execute(
        "SELECT (SELECT count(*) FROM contacts WHERE source = 'main' AND is_deleted = 0)"
        " + (SELECT count(*) FROM companies WHERE source = 'main' AND is_deleted = 0)"
    ).fetchone()[0]
    share = quiet.writeback.clients / cards
    # what the day counts alone would have written, had they been mapped: nearly every card
    drift = conn.execute(
        "SELECT count(DISTINCT entity_type || entity_id) FROM kpi_values WHERE kpi IN (?, ?) AND computed_at = ?",
        (*DAY_COUNTS, quiet.compute.computed_at),
    ).fetchone()[0]
    with capsys.disabled():
        print(
            f"\n{crm.src.kind} quiet night: {quiet.writeback.values} values on {quiet.writeback.clients} "
            f"of {cards} cards ({share:.1%}), {quiet.writeback.requests} requests; the day counts "
            f"would have changed {drift} cards ({drift / cards:.0%})"
        )
    assert {c.kpi for c in quiet.writeback.changes} <= WINDOWED, quiet.writeback.changes
    assert share <= MOVING_SHARE
    assert drift > cards / 2  # the measure is not vacuous: the day counts do move every night

    # the date KPIs are on the cards as the account's day, in date fields
    rows = conn.execute(
        """
        SELECT l.entity_type, l.entity_id, f.field_key, f.type, l.value FROM kpi_latest l
        JOIN kpi_fields f ON f.source = l.source AND f.entity_type = l.entity_type AND f.kpi = l.kpi
        WHERE l.kpi IN ('last_interaction_on', 'last_purchase_on') AND l.value IS NOT NULL
        ORDER BY l.entity_type, l.entity_id"""
    ).fetchall()
    assert rows and {r[3] for r in rows} == {"date"}
    for t, i, key, _, value in rows[:: max(1, len(rows) // 10)]:
        day = f"{int(value):08d}"
        assert card_date(crm, t, i, key) == f"{day[:4]}-{day[4:6]}-{day[6:]}", (t, i, key)
