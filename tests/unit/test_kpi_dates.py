"""Date KPIs (`last_interaction_on`, `last_purchase_on`): the account's day of the event, as the
number YYYYMMDD, unchanged a day later (the day counts move); written as dates by each CRM."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from adapters.amocrm.fields import card_patch
from adapters.base import FieldWrite
from adapters.bitrix24.fields import _command
from connector.config.kpi import KpiConfig
from connector.kpi import engine as kpi
from connector.kpi import writeback
from tests.fakes import FakeAdapter
from tests.unit.test_kpi import NOW, S, build_mirror


def values(m, kpi_name: str) -> dict[int, float]:
    rows = m.conn.execute(
        "SELECT entity_id, value FROM kpi_latest WHERE source = ? AND entity_type = 'contact' AND kpi = ?",
        (S, kpi_name),
    )
    return {i: v for i, v in rows if v is not None}


def test_the_date_is_the_accounts_day():
    m = build_mirror()
    try:  # contact 1's last won deal closed at 2026-05-01T00:00:00Z
        kpi.compute(m, S, KpiConfig(timezone="Europe/Moscow"), now=NOW)
        assert values(m, "last_purchase_on")[1] == 20260501
        kpi.compute(m, S, KpiConfig(timezone="America/New_York"), now=NOW + timedelta(seconds=1))
        assert values(m, "last_purchase_on")[1] == 20260430  # still April 30 in New York
    finally:
        m.close()


def test_a_day_later_the_dates_stay_and_the_day_counts_move():
    m = build_mirror()
    try:
        cfg = KpiConfig(timezone="Europe/Moscow")
        kpi.compute(m, S, cfg, now=NOW)
        before = {
            k: values(m, k) for k in ("last_purchase_on", "last_interaction_on", "days_since_last_purchase")
        }
        assert before["last_purchase_on"]  # (this mirror has no interactions: see the e2e test)
        kpi.compute(m, S, cfg, now=NOW + timedelta(days=1))
        assert values(m, "last_purchase_on") == before["last_purchase_on"]
        assert values(m, "last_interaction_on") == before["last_interaction_on"]
        assert values(m, "days_since_last_purchase") == {
            i: v + 1 for i, v in before["days_since_last_purchase"].items()
        }
        changed = m.conn.execute(
            "SELECT DISTINCT kpi FROM kpi_values WHERE computed_at = ?", (kpi.iso(NOW + timedelta(days=1)),)
        ).fetchall()
        assert ("last_purchase_on",) not in changed and ("last_interaction_on",) not in changed
    finally:
        m.close()


def test_catalogue_marks_only_the_date_kpis():
    cat = kpi.catalogue()
    assert {k for k, v in cat.items() if v.date} == {"last_interaction_on", "last_purchase_on"}
    assert "type:" not in cat["last_purchase_on"].description  # the marker is no part of the text


def test_write_back_makes_a_date_field_and_sends_the_accounts_midnight():
    m = build_mirror()
    try:
        cfg = KpiConfig(
            timezone="Europe/Moscow",
            fields={"last_purchase_on": {"contact": "Bought on"}},
            targets=["contact"],
        )
        kpi.compute(m, S, cfg, now=NOW)
        adapter = FakeAdapter()
        rep = writeback.write_back(m, adapter, S, cfg)
        assert rep.failed == 0 and rep.values > 0
        (field,) = adapter.fields["contact"]
        assert (field.name, field.type) == ("Bought on", "date")
        sent = adapter.cards[("contact", 1)][field.key]
        assert sent == datetime(2026, 5, 1, tzinfo=ZoneInfo("Europe/Moscow"))
        # a field of that name that is not a date is refused, naming it
        adapter.fields["contact"] = [type(field)(key="9", name="Bought on", type="numeric", code=None)]
        m.conn.execute("DELETE FROM kpi_fields")
        try:
            writeback.write_back(m, adapter, S, cfg)
            raise AssertionError("a numeric field was taken for a date KPI")
        except writeback.FieldTypeError as err:
            assert "not a date" in str(err) and "Bought on" in str(err)
    finally:
        m.close()


def test_each_crm_spells_the_date_its_own_way():
    day = datetime(2026, 11, 23, tzinfo=ZoneInfo("Europe/Moscow"))
    patch = card_patch(FieldWrite(7, {"501": day, "502": 3.0}))
    assert patch["custom_fields_values"] == [
        {"field_id": 501, "values": [{"value": "2026-11-23T00:00:00+03:00"}]},  # RFC 3339
        {"field_id": 502, "values": [{"value": "3"}]},
    ]
    _, params = _command("contact", FieldWrite(7, {"UF_CRM_KPI_LAST_PURCHASE_ON": day, "UF_CRM_X": None}))
    assert params["fields"] == {"UF_CRM_KPI_LAST_PURCHASE_ON": "2026-11-23", "UF_CRM_X": ""}
