"""KPI catalogue on a small hand-built mirror with known answers."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from connector.config.kpi import CustomKpi, KpiConfig
from connector.kpi import engine as kpi
from connector.kpi.custom_sql import check_custom_sql
from connector.mirror.store import Mirror

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=timezone.utc)
S = "main"


def minutes(a: datetime, b: datetime) -> float:
    return round((b - a).total_seconds() / 60, 2)


SYNCED_STREAMS = (
    "users",
    "pipelines",
    "companies",
    "contacts",
    "leads",
    "deals",
    "tasks",
    "calls",
    "stage_history",
    "reconcile",
    "calls_leads",
    "calls_contacts",
    "calls_companies",
    "calls_customers",
    "events",
)


def mark_synced(m: Mirror, source: str = S, streams=SYNCED_STREAMS, status: str = "ok") -> None:
    """Record a completed sync of `streams` (the KPI job computes only from complete data)."""
    for name in streams:
        m.conn.execute(
            "INSERT OR REPLACE INTO sync_state (source, stream, last_success_at) VALUES (?, ?, ?)",
            (source, name, "2026-01-01T00:00:00Z" if status == "ok" else None),
        )
        m.conn.execute(
            "INSERT INTO sync_runs (run_id, source, stream, started_at, finished_at, status) "
            "VALUES ('r', ?, ?, '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z', ?)",
            (source, name, status),
        )
    m.conn.commit()


def build_mirror(path=":memory:") -> Mirror:
    """Contacts 1 (rich history), 2 (no deals), 3 (only an open deal), 4 (shares deal 102 with 1),
    5 (deleted); companies 10 (deals 101, 102) and 11 (no deals)."""
    m = Mirror(path)
    db = m.db
    db["companies"].insert_all(
        [dict(source=S, id=10, name="Alfa", is_deleted=0), dict(source=S, id=11, name="Nord", is_deleted=0)]
    )
    db["contacts"].insert_all(
        [dict(source=S, id=i, name=f"c{i}", is_deleted=int(i == 5)) for i in (1, 2, 3, 4, 5)]
    )
    deals = [
        # id, contact, company, status, amount, currency, created, closed, deleted
        (101, 1, 10, "won", 1000, "RUB", "2026-01-01T00:00:00Z", "2026-01-11T00:00:00Z", 0),
        (102, None, 10, "won", 0, "RUB", "2026-03-01T00:00:00Z", "2026-03-21T00:00:00Z", 0),
        (103, 1, None, "lost", 500, "RUB", "2026-04-01T00:00:00Z", "2026-04-05T00:00:00Z", 0),
        (104, 1, None, "won", 100, "USD", "2026-02-01T00:00:00Z", "2026-02-04T00:00:00Z", 0),
        (105, 1, 10, "won", 99999, "RUB", "2026-06-01T00:00:00Z", "2026-06-02T00:00:00Z", 1),
        (106, 3, None, "open", 700, "RUB", "2026-10-01T00:00:00Z", None, 0),
        (107, 1, None, "won", 50, "EUR", "2026-04-21T00:00:00Z", "2026-05-01T00:00:00Z", 0),
    ]
    db["deals"].insert_all(
        [
            dict(
                source=S,
                id=d[0],
                contact_id=d[1],
                company_id=d[2],
                status=d[3],
                amount=d[4],
                currency=d[5],
                created_at=d[6],
                closed_at=d[7],
                updated_at=d[7] or d[6],
                is_deleted=d[8],
            )
            for d in deals
        ]
    )
    # 101 is linked both ways (main contact and deal_contacts); 102 is shared by contacts 1 and 4.
    db["deal_contacts"].insert_all(
        [
            dict(source=S, deal_id=101, contact_id=1, is_main=1),
            dict(source=S, deal_id=102, contact_id=1, is_main=1),
            dict(source=S, deal_id=102, contact_id=4, is_main=0),
        ]
    )
    mark_synced(m)
    calls = [
        # id, entity_type, entity_id, direction, status, duration, started, deleted
        (1, "contact", 1, "out", "answered", 120, "2026-11-01T00:00:00Z", 0),
        (2, "contact", 1, "in", "missed", 0, "2026-11-02T00:00:00Z", 0),
        (3, "deal", 101, "out", "answered", 300, "2026-01-01T00:30:00Z", 0),
        (4, "contact", 1, "out", "answered", 60, "2026-10-01T00:00:00Z", 1),
        (5, "deal", 106, "in", "answered", 600, "2026-11-20T00:00:00Z", 0),
        (6, "company", 10, "in", "missed", 30, "2026-11-10T00:00:00Z", 0),
    ]
    db["calls"].insert_all(
        [
            dict(
                source=S,
                id=c[0],
                entity_type=c[1],
                entity_id=c[2],
                direction=c[3],
                status=c[4],
                duration_s=c[5],
                started_at=c[6],
                is_deleted=c[7],
            )
            for c in calls
        ]
    )
    tasks = [
        # id, entity_type, entity_id, completed, due, completed_at, deleted
        (1, "contact", 1, 0, "2026-11-01T00:00:00Z", None, 0),
        (2, "deal", 103, 0, "2026-12-01T00:00:00Z", None, 0),
        (3, "deal", 102, 1, "2026-03-02T00:00:00Z", "2026-03-01T02:00:00Z", 0),
        (4, "contact", 1, 0, "2026-01-01T00:00:00Z", None, 1),
    ]
    db["tasks"].insert_all(
        [
            dict(
                source=S,
                id=t[0],
                entity_type=t[1],
                entity_id=t[2],
                is_completed=t[3],
                due_at=t[4],
                completed_at=t[5],
                is_deleted=t[6],
            )
            for t in tasks
        ]
    )
    return m


def cfg(**kw) -> KpiConfig:
    kw.setdefault("currency_rates", {"USD": 90.0})
    return KpiConfig(**kw)


def values(m: Mirror, entity_type: str, entity_id: int) -> dict:
    """The client's non-empty current values."""
    return {r["kpi"]: r["value"] for r in kpi.latest(m, S, entity_type, entity_id) if r["value"] is not None}


@pytest.fixture
def mirror():
    m = build_mirror()
    yield m
    m.close()


def d(*a) -> datetime:
    return datetime(*a, tzinfo=timezone.utc)


def test_catalogue_has_every_kpi_with_a_definition():
    cat = kpi.catalogue()
    assert set(cat) == {
        "deals_total",
        "deals_won",
        "deals_lost",
        "deals_open",
        "win_rate",
        "revenue_won",
        "avg_deal_value",
        "repeat_purchases",
        "avg_cycle_days",
        "first_response_minutes",
        "calls_90d",
        "missed_calls_90d",
        "call_minutes_90d",
        "open_tasks",
        "overdue_tasks",
        "days_since_last_purchase",
        "last_interaction_on",
        "last_purchase_on",
        "churn_risk",
        "interactions_30d",
        "interactions_30d_call",
        "interactions_30d_email",
        "interactions_30d_chat",
        "interactions_30d_meeting",
        "interactions_30d_sms",
        "days_since_last_interaction",
        "days_to_next_contact",
        "response_minutes",
        "nps_latest",
        "csat_latest",
    }
    assert all(k.description.startswith(k.name.split("_90d")[0][:8]) for k in cat.values())


def test_contact_with_rich_history(mirror):
    res = kpi.compute(mirror, S, cfg(), now=NOW)
    v = values(mirror, "contact", 1)
    # 105 is deleted; 107 (EUR, no rate) counts as won but its amount is left out.
    assert v["deals_total"] == 5 and v["deals_won"] == 4
    assert v["deals_lost"] == 1 and v["deals_open"] == 0
    assert v["win_rate"] == 80.0
    assert v["revenue_won"] == 1000 + 0 + 100 * 90
    assert v["avg_deal_value"] == round(10000 / 3, 2)
    assert v["repeat_purchases"] == 3
    assert v["avg_cycle_days"] == (10 + 20 + 3 + 10) / 4
    assert v["days_since_last_purchase"] == (NOW - d(2026, 5, 1)).days
    assert v["churn_risk"] == 1
    # answers: 101 -> 30 min (call on deal), 102 -> 120 min (task on deal), 103/104/107 -> the
    # outgoing call on the card on 2026-11-01 (deleted call 4 ignored); median of five = 107's.
    assert v["first_response_minutes"] == minutes(d(2026, 4, 21), d(2026, 11, 1))
    assert v["calls_90d"] == 2 and v["missed_calls_90d"] == 1 and v["call_minutes_90d"] == 2.0
    assert v["open_tasks"] == 2 and v["overdue_tasks"] == 1
    assert res.clients == {"contact": 4, "company": 2}
    assert any("EUR" in w for w in res.warnings) and not any("USD" in w for w in res.warnings)


def test_shared_deal_counts_for_both_contacts(mirror):
    kpi.compute(mirror, S, cfg(), now=NOW)
    v = values(mirror, "contact", 4)
    assert (v["deals_total"], v["deals_won"], v["win_rate"]) == (1, 1, 100.0)
    assert v["revenue_won"] == 0 and v["avg_deal_value"] == 0  # a zero amount is a real value
    assert v["avg_cycle_days"] == 20 and v["first_response_minutes"] == 120
    assert v["churn_risk"] == 1 and v["open_tasks"] == 0


def test_client_without_deals(mirror):
    kpi.compute(mirror, S, cfg(), now=NOW)
    v = values(mirror, "contact", 2)
    assert v["deals_total"] == 0 and v["revenue_won"] == 0 and v["churn_risk"] == 0
    assert v["calls_90d"] == 0 and v["open_tasks"] == 0
    # empty KPIs never get a history row
    assert (
        mirror.conn.execute(
            "SELECT count(*) FROM kpi_values WHERE entity_id = 2 AND value IS NULL"
        ).fetchone()[0]
        == 0
    )
    for k in (
        "win_rate",
        "avg_deal_value",
        "avg_cycle_days",
        "days_since_last_purchase",
        "first_response_minutes",
    ):
        assert k not in v


def test_client_with_only_open_deals(mirror):
    kpi.compute(mirror, S, cfg(), now=NOW)
    v = values(mirror, "contact", 3)
    assert (v["deals_total"], v["deals_open"], v["deals_won"]) == (1, 1, 0)
    assert "win_rate" not in v and "avg_deal_value" not in v and v["churn_risk"] == 0
    assert v["calls_90d"] == 1 and v["call_minutes_90d"] == 10.0  # call on its deal
    assert "first_response_minutes" not in v  # incoming calls do not answer


def test_deleted_client_gets_nothing(mirror):
    kpi.compute(mirror, S, cfg(), now=NOW)
    assert values(mirror, "contact", 5) == {}


def test_company_kpis(mirror):
    kpi.compute(mirror, S, cfg(), now=NOW)
    v = values(mirror, "company", 10)
    assert (v["deals_total"], v["deals_won"], v["revenue_won"], v["avg_deal_value"]) == (2, 2, 1000, 500)
    assert v["calls_90d"] == 1 and v["missed_calls_90d"] == 1 and v["call_minutes_90d"] == 0.5
    assert values(mirror, "company", 11)["deals_total"] == 0


def test_windows_and_thresholds_come_from_config(mirror):
    kpi.compute(mirror, S, cfg(calls_days=365, churn_days=365), now=NOW)
    v = values(mirror, "contact", 1)
    assert v["calls_90d"] == 3 and v["call_minutes_90d"] == 7.0  # call 3 on deal 101 now inside
    assert v["churn_risk"] == 0  # a won deal within 365 days


def test_precision_rounds_values(mirror):
    kpi.compute(mirror, S, cfg(precision=0), now=NOW)
    assert values(mirror, "contact", 1)["avg_deal_value"] == 3333


def test_history_only_grows_with_changes(mirror):
    r1 = kpi.compute(mirror, S, cfg(), now=NOW)
    n1 = mirror.conn.execute("SELECT count(*) FROM kpi_values").fetchone()[0]
    assert r1.changed == n1 > 0
    r2 = kpi.compute(mirror, S, cfg(), now=NOW)
    assert r2.changed == 0
    assert mirror.conn.execute("SELECT count(*) FROM kpi_values").fetchone()[0] == n1
    mirror.conn.execute("UPDATE deals SET status = 'won', closed_at = '2026-11-20T00:00:00Z' WHERE id = 106")
    later = d(2026, 11, 23, 11)
    r3 = kpi.compute(mirror, S, cfg(), now=later)
    rows = mirror.conn.execute(
        "SELECT entity_type, entity_id, kpi, value FROM kpi_values WHERE computed_at = '2026-11-23T11:00:00Z'"
    ).fetchall()
    assert r3.changed == len(rows)
    assert {(t, i) for t, i, _, _ in rows} == {("contact", 3)}
    changed = {k: v for _, _, k, v in rows}
    assert changed["deals_won"] == 1 and changed["deals_open"] == 0 and changed["revenue_won"] == 700
    assert changed["days_since_last_purchase"] == 3
    assert mirror.conn.execute("SELECT count(*) FROM kpi_runs").fetchone()[0] == 3


def test_value_becoming_empty_is_recorded(mirror):
    kpi.compute(mirror, S, cfg(), now=NOW)
    mirror.conn.execute("UPDATE deals SET is_deleted = 1 WHERE id = 102")
    kpi.compute(mirror, S, cfg(), now=d(2026, 11, 24))
    assert "win_rate" not in values(mirror, "contact", 4)
    row = mirror.conn.execute(
        "SELECT value FROM kpi_values WHERE entity_id = 4 AND kpi = 'win_rate' "
        "ORDER BY computed_at DESC LIMIT 1"
    ).fetchone()
    assert row == (None,)


def test_only_limits_the_run(mirror):
    kpi.compute(mirror, S, cfg(), now=NOW, only=["deals_total"])
    assert set(values(mirror, "contact", 1)) == {"deals_total"}
    with pytest.raises(kpi.KpiError, match="nope"):
        kpi.compute(mirror, S, cfg(), now=NOW, only=["nope"])


def test_other_sources_do_not_leak(mirror):
    mirror.db["deals"].insert(
        dict(source="other", id=101, contact_id=1, status="won", amount=5, currency="RUB", is_deleted=0)
    )
    kpi.compute(mirror, S, cfg(), now=NOW)
    assert values(mirror, "contact", 1)["deals_total"] == 5


def test_custom_kpi(mirror):
    custom = CustomKpi(
        "linked_deals",
        "contact",
        "SELECT contact_id AS entity_id, count(*) AS value FROM deal_contacts "
        "WHERE source = :source GROUP BY contact_id",
        "deals linked by deal_contacts",
    )
    kpi.compute(mirror, S, cfg(custom=[custom]), now=NOW)
    assert values(mirror, "contact", 1)["linked_deals"] == 2
    assert values(mirror, "contact", 4)["linked_deals"] == 1
    assert "linked_deals" not in values(mirror, "company", 10)


@pytest.mark.parametrize(
    "sql, problem",
    [
        ("SELECT id, 1 FROM contacts WHERE source = :source AND created_at < :now", None),
        ("WITH x AS (SELECT id FROM deals) SELECT id, 2 FROM x", None),
        ("DELETE FROM deals", "only read"),
        ("UPDATE deals SET amount = 0 RETURNING id, amount", "only read"),
        ("SELECT id, 1 FROM deals; DROP TABLE deals", "does not run"),
        ("SELEC id FROM deals", "does not run"),
        ("SELECT id FROM no_such_table", "does not run"),
        ("SELECT id FROM deals", "two columns"),
        ("ATTACH DATABASE '/tmp/x.db' AS x", "only read"),
        ("PRAGMA table_info(deals)", "only read"),
    ],
)
def test_check_custom_sql(sql, problem):
    got = check_custom_sql(sql)
    if problem is None:
        assert got is None
    else:
        assert got and problem in got


def test_custom_sql_cannot_write_at_run_time(mirror):
    bad = CustomKpi("bad", "contact", "DELETE FROM deals RETURNING id, 1")
    with pytest.raises(kpi.KpiError, match="bad"):
        kpi.compute(mirror, S, cfg(custom=[bad]), now=NOW)
    assert mirror.conn.execute("SELECT count(*) FROM deals").fetchone()[0] == 7
