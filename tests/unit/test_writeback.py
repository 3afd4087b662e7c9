"""Write-back against a fake adapter: diff-only, batches, failures, field resolution, dry run."""

from __future__ import annotations

import math

import pytest

from adapters.base import CrmField
from adapters.errors import FieldTypeError, SourceError
from connector.config.kpi import KpiConfig
from connector.kpi import engine as kpi
from connector.kpi import writeback
from tests.fakes import FakeAdapter
from tests.unit.test_kpi import NOW, S, build_mirror, d

FIELDS = {
    "win_rate": "KPI: Win rate, %",
    "revenue_won": "KPI: Lifetime revenue",
    "deals_total": {"contact": "KPI: Deals"},
}


def cfg(**kw) -> KpiConfig:
    kw.setdefault("currency_rates", {"USD": 90.0})
    kw.setdefault(
        "fields", {k: v if isinstance(v, dict) else {"contact": v, "company": v} for k, v in FIELDS.items()}
    )
    return KpiConfig(**kw)


@pytest.fixture
def mirror():
    m = build_mirror()
    kpi.compute(m, S, cfg(), now=NOW)
    yield m
    m.close()


def written(adapter, entity_type, entity_id) -> dict:
    """The card's fields by label."""
    labels = {f.key: f.name for f in adapter.fields[entity_type]}
    return {labels[k]: v for k, v in adapter.cards.get((entity_type, entity_id), {}).items()}


def test_first_run_creates_fields_and_writes_mapped_values(mirror):
    a = FakeAdapter()
    rep = writeback.write_back(mirror, a, S, cfg())
    assert [f.name for f in a.fields["contact"]] == [
        "KPI: Win rate, %",
        "KPI: Lifetime revenue",
        "KPI: Deals",
    ]
    assert {f.code for f in a.fields["company"]} == {"KPI_WIN_RATE", "KPI_REVENUE_WON"}
    assert written(a, "contact", 1) == {
        "KPI: Win rate, %": 80,
        "KPI: Lifetime revenue": 10000,
        "KPI: Deals": 5,
    }
    # no value yet for win_rate: nothing sent for it; 0 is a value and is sent
    assert written(a, "contact", 2) == {"KPI: Lifetime revenue": 0, "KPI: Deals": 0}
    assert written(a, "company", 10) == {"KPI: Win rate, %": 100, "KPI: Lifetime revenue": 1000}
    assert ("contact", 5) not in a.cards  # deleted card
    # one FieldWrite per card, all its fields together
    ids = [w.entity_id for _, batch in a.batches for w in batch]
    assert len(ids) == len(set(ids)) == rep.clients == 4 + 2
    assert rep.values == sum(len(w.values) for _, b in a.batches for w in b) == 13
    assert rep.requests == a.requests and rep.field_requests == 2 + 5 and rep.failed == 0
    log = mirror.conn.execute("SELECT count(*), min(status), max(status) FROM writeback_log").fetchone()
    assert log == (13, "ok", "ok")


def test_second_run_sends_nothing(mirror):
    a = FakeAdapter()
    writeback.write_back(mirror, a, S, cfg())
    before = a.requests
    kpi.compute(mirror, S, cfg(), now=NOW)
    rep = writeback.write_back(mirror, a, S, cfg())
    assert (rep.values, rep.requests, a.requests - before) == (0, 0, 0)


def test_only_changed_fields_of_changed_clients_are_sent(mirror):
    a = FakeAdapter()
    writeback.write_back(mirror, a, S, cfg())
    a.batches.clear()
    # deal 103 (contact 1) is won after all: win rate 100 %, revenue +500; deals count unchanged
    mirror.conn.execute("UPDATE deals SET status = 'won' WHERE id = 103")
    kpi.compute(mirror, S, cfg(), now=d(2026, 11, 24))
    rep = writeback.write_back(mirror, a, S, cfg())
    sent = [(et, w.entity_id, w.values) for et, b in a.batches for w in b]
    keys = {f.name: f.key for f in a.fields["contact"]}
    assert sent == [("contact", 1, {keys["KPI: Win rate, %"]: 100, keys["KPI: Lifetime revenue"]: 10500})]
    assert rep.values == 2 and rep.requests == 1
    old = mirror.conn.execute(
        "SELECT old_value, new_value FROM writeback_log WHERE entity_id = 1 "
        "AND field = ? ORDER BY id DESC LIMIT 1",
        (keys["KPI: Win rate, %"],),
    ).fetchone()
    assert old == (80, 100)


def test_batches_of_at_most_50(mirror):
    mirror.db["contacts"].insert_all(
        [dict(source=S, id=1000 + i, name="x", is_deleted=0) for i in range(117)]
    )
    kpi.compute(mirror, S, cfg(), now=NOW)
    a = FakeAdapter()
    rep = writeback.write_back(mirror, a, S, cfg(targets=["contact"]))
    sizes = [len(b) for _, b in a.batches]
    assert max(sizes) <= 50 and sum(sizes) == rep.clients == 121
    assert rep.requests - rep.field_requests == math.ceil(121 / 50) == len(sizes)


def test_rejected_card_is_logged_and_others_written(mirror):
    a = FakeAdapter(reject={3})
    rep = writeback.write_back(mirror, a, S, cfg(targets=["contact"]))
    assert rep.failed == 1 and ("contact", 1) in a.cards and ("contact", 4) in a.cards
    rows = mirror.conn.execute(
        "SELECT entity_id, status, error FROM writeback_log WHERE status = 'failed'"
    ).fetchall()
    assert rows and all(r == (3, "failed", "card is locked") for r in rows)
    # the next run retries only the rejected card
    a.reject.clear()
    a.batches.clear()
    rep = writeback.write_back(mirror, a, S, cfg(targets=["contact"]))
    assert [w.entity_id for _, b in a.batches for w in b] == [3] and rep.failed == 0


def test_non_numeric_field_is_a_clear_error(mirror):
    a = FakeAdapter(fields=[CrmField(key="77", name="KPI: Lifetime revenue", type="text")])
    with pytest.raises(FieldTypeError) as err:
        writeback.write_back(mirror, a, S, cfg())
    msg = str(err.value)
    assert "KPI: Lifetime revenue" in msg and f"'{S}'" in msg and "text" in msg
    assert isinstance(err.value, SourceError) and a.cards == {}


def test_existing_numeric_field_is_reused_by_label_or_code(mirror):
    a = FakeAdapter(
        fields=[
            CrmField(key="66192", name="KPI: Win rate, %", type="numeric"),
            CrmField(key="66193", name="Old revenue", type="numeric", code="KPI_REVENUE_WON"),
        ]
    )
    writeback.write_back(mirror, a, S, cfg(targets=["contact"]))
    assert len(a.fields["contact"]) == 3  # only KPI: Deals was created
    assert a.cards[("contact", 1)]["66192"] == 80 and a.cards[("contact", 1)]["66193"] == 10000


def test_field_is_matched_by_code_as_the_adapters_crm_spells_it(mirror):
    """Bitrix24 keys a KPI's field UF_CRM_<code>; for amoCRM that key is just some other field."""
    old = CrmField(key="UF_CRM_KPI_DEALS_WON", name="Won deals (old label)", type="double")
    mapping = {"deals_won": {"contact": "KPI: Won"}}
    b24 = FakeAdapter(fields=[old])
    writeback.write_back(mirror, b24, S, cfg(targets=["contact"], fields=mapping))
    assert b24.fields["contact"] == [old] and ("contact", 1) in b24.cards
    mirror.conn.execute("DELETE FROM kpi_fields")
    amo = FakeAdapter(fields=[old])
    amo.kind, amo.prefix = "amocrm", ""
    writeback.write_back(mirror, amo, S, cfg(targets=["contact"], fields=mapping))
    assert [f.name for f in amo.fields["contact"]] == ["Won deals (old label)", "KPI: Won"]


def test_unmapped_kpis_are_never_written(mirror):
    a = FakeAdapter()
    writeback.write_back(mirror, a, S, cfg(fields={"deals_won": {"company": "Won"}}))
    assert {et for et, _ in a.batches} == {"company"}
    assert all(list(w.values) == ["UF_CRM_KPI_DEALS_WON"] for _, b in a.batches for w in b)


def test_dry_run_sends_and_stores_nothing(mirror):
    a = FakeAdapter()
    rep = writeback.write_back(mirror, a, S, cfg(), dry_run=True)
    assert a.requests == 0 and rep.requests == 0 and rep.values == 13
    c1 = {(c.label, c.new) for c in rep.changes if c.entity_id == 1 and c.entity_type == "contact"}
    assert c1 == {("KPI: Win rate, %", 80), ("KPI: Lifetime revenue", 10000), ("KPI: Deals", 5)}
    assert (
        mirror.conn.execute(
            "SELECT (SELECT count(*) FROM writeback_log) + (SELECT count(*) FROM kpi_written)"
        ).fetchone()[0]
        == 0
    )
    assert writeback.write_back(mirror, None, S, cfg(), dry_run=True).values == 13


def test_empty_value_clears_a_written_field_once(mirror):
    a = FakeAdapter()
    writeback.write_back(mirror, a, S, cfg(targets=["contact"]))
    mirror.conn.execute("UPDATE deals SET is_deleted = 1 WHERE id = 102")  # contact 4 loses its deal
    kpi.compute(mirror, S, cfg(), now=d(2026, 11, 24))
    a.batches.clear()
    writeback.write_back(mirror, a, S, cfg(targets=["contact"]))
    sent = {w.entity_id: w.values for _, b in a.batches for w in b}
    assert written(a, "contact", 4)["KPI: Win rate, %"] is None
    assert None in sent[4].values()
    a.batches.clear()
    kpi.compute(mirror, S, cfg(), now=d(2026, 11, 25))
    writeback.write_back(mirror, a, S, cfg(targets=["contact"]))
    assert 4 not in {w.entity_id for _, b in a.batches for w in b}


def test_change_within_precision_is_not_sent(mirror):
    a = FakeAdapter()
    writeback.write_back(mirror, a, S, cfg(targets=["contact"]))
    # a newer history row (the current value) that differs only past the field's precision
    mirror.conn.execute(
        "INSERT INTO kpi_values (source, entity_type, entity_id, kpi, value, computed_at) "
        "VALUES (?, 'contact', 1, 'win_rate', 80.0004, '2030-01-01T00:00:00Z')",
        (S,),
    )
    rep = writeback.write_back(mirror, a, S, cfg(targets=["contact"]))
    assert rep.values == 0 and rep.requests == 0
    mirror.conn.execute(
        "INSERT INTO kpi_values (source, entity_type, entity_id, kpi, value, computed_at) "
        "VALUES (?, 'contact', 1, 'win_rate', 75, '2030-01-02T00:00:00Z')",
        (S,),
    )
    rep = writeback.write_back(mirror, a, S, cfg(targets=["contact"]))
    assert rep.values == 1 and written(a, "contact", 1)["KPI: Win rate, %"] == 75


def test_adapter_error_is_logged_then_raised(mirror):
    a = FakeAdapter()
    a.fail_with = SourceError("source 'main': token rejected (401)")
    with pytest.raises(SourceError):
        writeback.write_back(mirror, a, S, cfg(targets=["company"]))
    rows = mirror.conn.execute("SELECT DISTINCT status, error FROM writeback_log").fetchall()
    assert rows == [("failed", "source 'main': token rejected (401)")]
    assert mirror.conn.execute("SELECT count(*) FROM kpi_written").fetchone()[0] == 0
