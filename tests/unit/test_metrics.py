"""Team and business measures on a small hand-built mirror with known answers.

Account time zone Europe/Moscow (UTC+3): deal 1 closes 2026-01-31 22:30 UTC, which is February
there; a lead and an NPS answer sit on such a boundary too. Edge cases: a source with no leads,
a deal that skips two stages, a manager with no closed deals, a channel with spend but no
clients, a client with no survey answer, an incoming message nobody answered.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from connector.config.kpi import KpiConfig, Spend, SpendConfig
from connector.kpi import inputs as kpi_inputs
from connector.measures import engine as metrics
from connector.mirror.store import Mirror
from tests.unit.survey_fixtures import add_survey_answers

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=timezone.utc)
S, TZ = "shop", "Europe/Moscow"
SPEND = [
    Spend("2026-02-01", "google", 3000, ""),
    Spend("2026-02-01", "yandex", 4500, "RUB"),
    Spend("2026-03-01", "facebook", 1000, ""),
    Spend("2026-03-01", "google", 10, "USD"),
]


def cfg(**kw) -> KpiConfig:
    return KpiConfig(currency_rates={"USD": 90.0}, churn_days=90, spend=SpendConfig("s.csv", SPEND), **kw)


def build(m: Mirror, source: str = S, leads: bool = True) -> None:
    db = m.db
    db["users"].insert_all(
        [dict(source=source, id=i, name=n) for i, n in ((1, "Anna"), (2, "Boris"), (3, "Vera"))]
    )
    db["pipelines"].insert(dict(source=source, id=1, entity="deal", name="Sales"))
    db["stages"].insert_all(
        [
            dict(source=source, pipeline_id=1, id=i, entity="deal", name=f"s{i}", sort=s, semantics=sem)
            for i, s, sem in (
                (10, 10, "open"),
                (20, 20, "open"),
                (30, 30, "open"),
                (142, 100, "won"),
                (143, 110, "lost"),
            )
        ]
    )
    deals = [
        # id, company, contact, channel, manager, status, amount, currency, created, closed, stage, deleted
        (
            1,
            100,
            None,
            "Google ",
            1,
            "won",
            1000,
            "RUB",
            "2026-01-10T00:00:00Z",
            "2026-01-31T22:30:00Z",
            142,
            0,
        ),
        (2, 100, None, "google", 1, "won", 500, "", "2026-03-01T00:00:00Z", "2026-03-15T00:00:00Z", 142, 0),
        (3, None, 7, "yandex", 2, "won", 100, "USD", "2026-02-01T00:00:00Z", "2026-02-10T00:00:00Z", 142, 0),
        (4, None, 8, "yandex", 2, "lost", 300, "RUB", "2026-02-05T00:00:00Z", "2026-02-20T00:00:00Z", 143, 0),
        (5, None, 9, None, 3, "open", 200, "RUB", "2026-10-01T00:00:00Z", None, 20, 0),
        (
            6,
            100,
            None,
            "google",
            1,
            "won",
            99999,
            "RUB",
            "2026-04-01T00:00:00Z",
            "2026-04-02T00:00:00Z",
            142,
            1,
        ),
    ]
    db["deals"].insert_all(
        [
            dict(
                source=source,
                id=d[0],
                company_id=d[1],
                contact_id=d[2],
                channel=d[3],
                responsible_user_id=d[4],
                status=d[5],
                amount=d[6],
                currency=d[7],
                created_at=d[8],
                closed_at=d[9],
                pipeline_id=1,
                stage_id=d[10],
                is_deleted=d[11],
            )
            for d in deals
        ]
    )
    moves = {
        1: [(10, "2026-01-10"), (20, "2026-01-15"), (30, "2026-01-20"), (142, "2026-01-31T22:30")],
        2: [(10, "2026-03-01"), (142, "2026-03-15")],  # skips 20 and 30
        3: [(10, "2026-02-01"), (20, "2026-02-03"), (142, "2026-02-10")],
        4: [(10, "2026-02-05"), (20, "2026-02-07"), (143, "2026-02-20")],
        5: [(10, "2026-10-01"), (20, "2026-10-05")],
    }
    db["stage_changes"].insert_all(
        [
            dict(
                source=source,
                id=f"{deal}-{i}",
                entity="deal",
                entity_id=deal,
                pipeline_id=1,
                stage_id=st,
                changed_at=(at + "T00:00" if "T" not in at else at) + ":00Z",
            )
            for deal, ms in moves.items()
            for i, (st, at) in enumerate(ms)
        ]
    )
    db["calls"].insert_all(
        [
            dict(
                source=source,
                id=i,
                responsible_user_id=u,
                direction="out",
                started_at="2026-02-01T00:00:00Z",
                is_deleted=int(i == 4),
            )
            for i, u in ((1, 1), (2, 1), (3, 3), (4, 2))
        ]
    )
    db["activities"].insert_all(
        [
            dict(
                source=source,
                id=a[0],
                direction=a[1],
                at=a[2],
                responsible_user_id=a[3],
                entity_type=a[4],
                entity_id=a[5],
                channel="chat",
                is_deleted=0,
            )
            for a in [
                ("e1", "in", "2026-02-01T10:00:00Z", None, "deal", 1),
                ("e2", "out", "2026-02-01T10:45:00Z", 1, "deal", 1),  # Anna: 45 min
                ("e3", "in", "2026-02-02T10:00:00Z", None, "deal", 3),
                ("e4", "in", "2026-02-02T10:05:00Z", None, "deal", 3),  # same wait
                ("e5", "out", "2026-02-02T11:00:00Z", 2, "deal", 3),  # Boris: 60 min
                ("e6", "in", "2026-10-02T10:00:00Z", None, "contact", 9),  # never answered
            ]
        ]
    )
    if leads:
        # Converted leads 0 and 5 became deals 3 (won) and 4 (lost); lead 4's deal 6 won, deleted.
        for deal, lead in ((3, 0), (4, 5), (6, 4)):
            db.execute("UPDATE deals SET lead_id = ? WHERE source = ? AND id = ?", [lead, source, deal])
        db["leads"].insert_all(
            [
                dict(
                    source=source,
                    id=i,
                    created_at=at,
                    is_deleted=0,
                    status="converted" if i in (0, 5) else "open",
                )
                for i, at in enumerate(
                    ["2026-01-31T21:30:00Z"] + ["2026-02-10T00:00:00Z"] * 3 + ["2026-03-05T00:00:00Z"] * 4
                )
            ]
        )
    add_survey_answers(
        m,
        source,
        [
            ("n1", "nps", 10, "2026-02-03T00:00:00Z", "contact", 7),
            ("n2", "nps", 9, "2026-02-04T00:00:00Z", "deal", 1),
            ("n3", "nps", 7, "2026-02-05T00:00:00Z", "deal", 3),
            ("n4", "nps", 3, "2026-02-06T00:00:00Z", "contact", 8),
            ("n5", "nps", 0, "2026-02-28T21:30:00Z", "contact", 8),  # March in Moscow
            ("c1", "csat", 5, "2026-02-03T00:00:00Z", "contact", 7),
            ("c2", "csat", 4, "2026-02-04T00:00:00Z", "deal", 1),
            ("c3", "csat", 2, "2026-02-05T00:00:00Z", "deal", 3),
        ],
    )


@pytest.fixture
def mirror():
    m = Mirror(":memory:")
    build(m)
    yield m
    m.close()


def run(m, source=S, tz=TZ, **kw):
    return metrics.compute(m, source, cfg(), "RUB", tz, now=NOW, **kw)


def got(m, measure, dimension="all", source=S) -> dict:
    """period or dimension value -> value, for one measure."""
    rows = m.conn.execute(
        "SELECT period, dimension_value, value FROM metrics WHERE source = ? AND measure = ? "
        "AND dimension = ?",
        (source, measure, dimension),
    ).fetchall()
    return {(p if dimension == "all" else (v if p == "all" else (p, v))): x for p, v, x in rows}


def test_every_group_has_a_definition_and_measures():
    groups = metrics.catalogue()
    assert set(groups) == {
        "funnel",
        "stage_time",
        "leads",
        "managers",
        "manager_response",
        "revenue",
        "churn",
        "ltv",
        "cac",
        "survey",
    }
    assert all(g.description and g.measures and g.reads for g in groups.values())
    names = [m for g in groups.values() for m in g.measures]
    assert len(names) == len(set(names))  # a measure belongs to one group: withheld rows stay whole


def test_funnel_counts_a_skipped_stage_as_passed(mirror):
    run(mirror)
    assert got(mirror, "funnel_deals", "stage") == {"1/10": 5, "1/20": 5, "1/30": 3, "1/142": 3}
    assert got(mirror, "funnel_conversion", "stage") == {"1/10": 100, "1/20": 60, "1/30": 100}


def test_median_days_in_stage(mirror):
    run(mirror)
    # stage 10: stays of 5, 14, 2, 2, 4 days; 20: 5, 7, 13; 30: 11 d 22.5 h; a skipped stage has no stay
    assert got(mirror, "stage_median_days", "stage") == {"1/10": 4, "1/20": 7, "1/30": 11.94}


def test_lead_conversion_by_local_month(mirror):
    run(mirror)
    assert got(mirror, "leads") == {"2026-02-01": 4, "2026-03-01": 4, "all": 8}  # 21:30 UTC Jan 31 is Feb
    # A cohort: of February's four leads one became a won deal; none of March's (deal 4 lost, deal
    # 6 deleted); never "deals won in the month / leads received in it".
    assert got(mirror, "lead_conversion") == {"2026-02-01": 25, "2026-03-01": 0, "all": 12.5}
    assert got(mirror, "lead_to_deal") == {"2026-02-01": 25, "2026-03-01": 25, "all": 25}


def test_no_leads_gives_no_lead_rows():
    m = Mirror(":memory:")
    build(m, "amo", leads=False)
    run(m, "amo")
    assert got(m, "leads", source="amo") == {} and got(m, "lead_conversion", source="amo") == {}
    assert got(m, "lead_to_deal", source="amo") == {}
    assert got(m, "revenue", source="amo")["all"] == 10500


def test_managers_including_one_without_closed_deals(mirror):
    run(mirror)
    assert got(mirror, "manager_deals_won", "manager") == {"1": 2, "2": 1, "3": 0}
    assert got(mirror, "manager_win_rate", "manager") == {"1": 100, "2": 50, "3": None}
    assert got(mirror, "manager_average_check", "manager") == {"1": 750, "2": 9000, "3": None}
    assert got(mirror, "manager_revenue", "manager") == {"1": 1500, "2": 9000, "3": 0}
    assert got(mirror, "manager_calls", "manager") == {"1": 2, "2": 0, "3": 1}  # call 4 deleted
    assert got(mirror, "manager_response_minutes", "manager") == {"1": 45, "2": 60}


def test_a_call_a_manager_took_answers_at_once_and_a_missed_one_waits_for_the_callback(mirror):
    """An answered incoming call is a conversation: it ends a wait and starts none. A missed one
    waits for the next answer (here Vera's callback, 20 minutes later)."""
    calls = [
        # id, direction, status, at, manager, entity
        (11, "in", "missed", "2026-03-01T09:00:00Z", None, 5),
        (12, "out", "answered", "2026-03-01T09:20:00Z", 3, 5),  # Vera's callback: 20 min
        (13, "in", "answered", "2026-03-02T09:00:00Z", 3, 5),  # taken at once: no wait
        (14, "in", "answered", "2026-03-03T09:00:00Z", 1, 1),  # Anna takes it: 0 min after ...
    ]
    mirror.db["calls"].insert_all(
        dict(
            source=S,
            id=c[0],
            direction=c[1],
            status=c[2],
            started_at=c[3],
            responsible_user_id=c[4],
            entity_type="deal",
            entity_id=c[5],
            is_deleted=0,
        )
        for c in calls
    )
    mirror.db["activities"].insert_all(
        dict(
            source=S,
            id=a[0],
            channel=a[1],
            direction=a[2],
            at=a[3],
            responsible_user_id=a[4],
            entity_type="deal",
            entity_id=a[5],
            is_deleted=0,
        )
        for a in [
            ("c13", "call", "in", "2026-03-02T09:00:00Z", 3, 5),  # the calls' own timeline rows
            ("e7", "chat", "in", "2026-03-03T08:30:00Z", None, 1),  # ... this chat, 30 min before
            ("e8", "chat", "out", "2026-03-20T08:30:00Z", 1, 1),  # not the answer: the call was
        ]
    )
    run(mirror)
    assert got(mirror, "manager_response_minutes", "manager") == {"1": 37.5, "2": 60, "3": 20}


def test_an_activity_planned_after_the_runs_clock_answers_nobody(mirror):
    """Planned after the run's `now` (if before this machine's clock), it is no answer yet."""
    mirror.db["activities"].insert(
        dict(
            source=S,
            id="p1",
            channel="chat",
            direction="out",
            at="2026-11-30T10:00:00Z",
            responsible_user_id=3,
            entity_type="contact",
            entity_id=9,
            is_deleted=0,
            is_completed=0,
        )
    )
    run(mirror)  # NOW is 2026-11-23: e6 of October stays unanswered
    assert got(mirror, "manager_response_minutes", "manager") == {"1": 45, "2": 60}


def test_revenue_and_new_clients_by_local_month(mirror):
    run(mirror)
    rev = got(mirror, "revenue")
    assert (rev["2026-01-01"], rev["2026-02-01"], rev["2026-03-01"], rev["all"]) == (0, 10000, 500, 10500)
    assert rev["2026-11-01"] == 0 and "2026-12-01" not in rev
    assert got(mirror, "new_clients")["2026-02-01"] == 2 and got(mirror, "new_clients")["all"] == 2
    assert got(mirror, "deals_won")["2026-02-01"] == 2


def test_months_follow_the_configured_time_zone(mirror):
    run(mirror, tz="UTC")
    rev = got(mirror, "revenue")
    assert (rev["2026-01-01"], rev["2026-02-01"]) == (1000, 9000)
    assert got(mirror, "leads")["2026-01-01"] == 1


def test_churn_and_repeat_purchases(mirror):
    run(mirror)
    active, churned, rate = (
        got(mirror, "active_clients"),
        got(mirror, "churned_clients"),
        got(mirror, "churn_rate"),
    )
    assert [active[f"2026-{m:02d}-01"] for m in range(1, 8)] == [0, 0, 2, 2, 2, 1, 0]
    assert churned["2026-05-01"] == 1 and churned["2026-06-01"] == 1 and sum(churned.values()) == 2
    assert (rate["2026-04-01"], rate["2026-05-01"], rate["2026-06-01"]) == (0, 50, 100)
    assert "2026-02-01" not in rate and "2026-07-01" not in rate  # nobody active at the start
    assert got(mirror, "repeat_purchase_rate") == {"2026-02-01": 0, "2026-03-01": 100}


def test_ltv_per_cohort_and_channel(mirror):
    run(mirror)
    assert got(mirror, "ltv", "channel") == {
        ("2026-02-01", "google"): 1500,
        ("2026-02-01", "yandex"): 9000,
        "google": 1500,
        "yandex": 9000,
    }
    assert got(mirror, "ltv") == {"2026-02-01": 5250, "all": 5250}


def test_cac_per_channel_and_month_with_a_channel_without_clients(mirror):
    run(mirror)
    cac = got(mirror, "cac", "channel")
    assert cac[("2026-02-01", "google")] == 3000 and cac[("2026-02-01", "yandex")] == 4500
    assert cac[("2026-03-01", "facebook")] is None and cac[("2026-03-01", "google")] is None
    assert cac["google"] == 3900 and cac["facebook"] is None  # 10 USD at 90 = 900
    assert got(mirror, "acquired_clients", "channel")[("2026-03-01", "facebook")] == 0
    ratio = got(mirror, "ltv_cac", "channel")
    assert (ratio[("2026-02-01", "google")], ratio[("2026-02-01", "yandex")], ratio["google"]) == (
        0.5,
        2,
        0.38,
    )
    assert got(mirror, "spend", "channel")["google"] == 3900


def test_nps_and_csat_per_local_month(mirror):
    run(mirror)
    assert got(mirror, "nps") == {"2026-02-01": 25, "2026-03-01": -100, "all": 0}
    assert got(mirror, "nps_answers") == {"2026-02-01": 4, "2026-03-01": 1, "all": 5}
    assert got(mirror, "csat") == {"2026-02-01": 66.67, "all": 66.67}


def test_card_field_scores_join_the_answers(mirror):
    run(mirror, card_survey=[("contact", 9, "nps", 10.0, "2026-03-10T00:00:00Z")])
    assert got(mirror, "nps")["2026-03-01"] == 0  # 0 and 10: one detractor, one promoter


def test_withheld_group_keeps_its_rows(mirror):
    run(mirror)
    mirror.conn.execute("UPDATE deals SET status = 'lost' WHERE source = ?", (S,))
    res = run(mirror, withheld={"managers": "stream 'calls' has never completed a sync"})
    assert res.withheld == {"managers": "stream 'calls' has never completed a sync"}
    assert got(mirror, "manager_deals_won", "manager") == {"1": 2, "2": 1, "3": 0}  # as before
    assert got(mirror, "revenue")["all"] == 0  # recomputed


def test_groups_are_withheld_by_the_tables_they_read():
    states = [
        kpi_inputs.StreamState("calls", ("calls",), completed=False),
        kpi_inputs.StreamState("deals", ("deals", "deal_contacts"), completed=True, last_status="ok"),
    ]
    held = kpi_inputs.withheld(metrics.catalogue().values(), (), states)
    assert set(held) == {"managers", "manager_response"}  # response time pairs calls too


def test_other_sources_are_untouched(mirror):
    build(mirror, "other", leads=False)
    run(mirror)
    assert mirror.conn.execute("SELECT count(*) FROM metrics WHERE source = 'other'").fetchone()[0] == 0


def test_median_of_an_even_number_of_stays_and_stages_out_of_sort_order():
    m = Mirror(":memory:")
    db = m.db
    db["pipelines"].insert(dict(source=S, id=2, entity="deal", name="Repairs"))
    db["stages"].insert_all(
        [
            dict(source=S, pipeline_id=2, id=i, entity="deal", sort=s, semantics=sem)
            for i, s, sem in ((7, 20, "open"), (5, 10, "open"), (142, 30, "won"))
        ]
    )
    db["deals"].insert_all(
        [
            dict(
                source=S,
                id=i,
                pipeline_id=2,
                stage_id=142,
                status="won",
                amount=1,
                created_at="2026-05-01T00:00:00Z",
                closed_at="2026-05-20T00:00:00Z",
                contact_id=i,
            )
            for i in (1, 2, 3, 4)
        ]
    )
    # stage 5 (first by sort though its id is lower than 7's): stays of 1, 4, 2 and 10 days
    db["stage_changes"].insert_all(
        [
            dict(
                source=S, id=f"{d}-{k}", entity="deal", entity_id=d, pipeline_id=2, stage_id=st, changed_at=at
            )
            for d, days in ((1, 1), (2, 4), (3, 2), (4, 10))
            for k, (st, at) in enumerate(
                [
                    (5, "2026-05-01T00:00:00Z"),
                    (7, f"2026-05-{1 + days:02d}T00:00:00Z"),
                    (142, "2026-05-20T00:00:00Z"),
                ]
            )
        ]
    )
    run(m)
    assert got(m, "stage_median_days", "stage")["2/5"] == 3  # (2 + 4) / 2
    assert got(m, "funnel_deals", "stage") == {"2/5": 4, "2/7": 4, "2/142": 4}
