"""Incremental KPI passes give the same kpi_values as full ones, over random changes."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pytest

from connector.config.kpi import CustomKpi, KpiConfig, SurveyConfig
from connector.kpi import engine as kpi
from connector.kpi import prep
from connector.mirror.store import Mirror

S = "main"
START = datetime(2026, 11, 23, 10, 0, tzinfo=timezone.utc)
CHANNELS = ("call", "email", "chat", "meeting", "sms")
CUSTOM = CustomKpi(
    "big_deals",
    "contact",
    "SELECT contact_id AS entity_id, count(*) AS value FROM deals WHERE source = :source "
    "AND is_deleted = 0 AND amount > 50000 GROUP BY contact_id",
)


def cfg(**kw) -> KpiConfig:
    base = dict(calls_days=20, churn_days=30, interactions_days=10)
    return KpiConfig(
        targets=["contact", "company"], currency_rates={"USD": 90}, custom=[CUSTOM], **(base | kw)
    )


def ts(rng: random.Random, now: datetime, days: float = 60) -> str:
    """A moment around now: mostly past, some in the next days (windows and due times move)."""
    t = now + timedelta(seconds=rng.uniform(-days * 86400, 5 * 86400))
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


class World:
    """The same random writes applied to every mirror given."""

    def __init__(self, seed: int, mirrors: list[Mirror]):
        self.rng, self.mirrors = random.Random(seed), mirrors
        self.contacts, self.companies, self.deals, self.next_id = 40, 8, 0, 10_000

    def sql(self, q: str, args=()) -> None:
        for m in self.mirrors:
            m.conn.execute(q, args)
            m.conn.commit()

    def pick(self, table: str) -> int | str | None:
        q = f"SELECT id FROM {table} WHERE source = ? ORDER BY id"
        if table == "activity_bindings_ids":  # an activity bound to another record
            q = "SELECT DISTINCT activity_id FROM activity_bindings WHERE source = ? ORDER BY 1"
        ids = [r[0] for r in self.mirrors[0].conn.execute(q, (S,))]
        return self.rng.choice(ids) if ids else None

    def owner(self) -> tuple[str, int]:
        r = self.rng.random()
        if r < 0.5 and self.deals:
            return "deal", self.rng.randint(1, self.deals)
        if r < 0.85:
            return "contact", self.rng.randint(1, self.contacts)
        return "company", self.rng.randint(1, self.companies)

    def seed(self, now: datetime) -> None:
        for i in range(1, self.companies + 1):
            self.sql("INSERT INTO companies (source, id, name) VALUES (?, ?, ?)", (S, i, f"co{i}"))
        for i in range(1, self.contacts + 1):
            self.sql("INSERT INTO contacts (source, id, name) VALUES (?, ?, ?)", (S, i, f"ct{i}"))
        for _ in range(120):
            self.new_deal(now)
        for _ in range(300):
            self.new_row(now)

    def new_deal(self, now: datetime) -> None:
        rng = self.rng
        self.deals += 1
        status = rng.choice(("won", "lost", "open"))
        created = ts(rng, now, 90)
        closed = ts(rng, now, 40) if status != "open" and rng.random() < 0.8 else None
        contact = rng.randint(1, self.contacts)
        company = rng.randint(1, self.companies) if rng.random() < 0.7 else None
        self.sql(
            "INSERT INTO deals (source, id, status, amount, currency, contact_id, company_id, created_at, "
            "closed_at) VALUES (?,?,?,?,?,?,?,?,?)",
            (
                S,
                self.deals,
                status,
                round(rng.random() * 100_000, 2),
                rng.choice(("RUB", "USD")),
                contact,
                company,
                created,
                closed,
            ),
        )
        self.sql(
            "INSERT INTO deal_contacts (source, deal_id, contact_id, is_main) VALUES (?,?,?,1)",
            (S, self.deals, contact),
        )
        if rng.random() < 0.3:
            self.sql(
                "INSERT OR IGNORE INTO deal_contacts (source, deal_id, contact_id) VALUES (?,?,?)",
                (S, self.deals, rng.randint(1, self.contacts)),
            )

    def new_row(self, now: datetime) -> None:
        rng, (et, eid) = self.rng, self.owner()
        self.next_id += 1
        kind = rng.choice(("call", "task", "activity", "survey"))
        if kind == "call":
            act = self.pick("activities") if rng.random() < 0.4 else None  # the call's activity
            self.sql(
                "INSERT INTO calls (source, id, direction, status, duration_s, started_at, entity_type, "
                "entity_id, activity_id, is_automated) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    S,
                    self.next_id,
                    rng.choice(("in", "out")),
                    rng.choice(("answered", "missed")),
                    rng.randrange(600),
                    ts(rng, now, 40),
                    et,
                    eid,
                    act,
                    int(rng.random() < 0.2),
                ),
            )
        elif kind == "task":
            done = int(rng.random() < 0.5)
            due = ts(rng, now, 10)
            self.sql(
                "INSERT INTO tasks (source, id, entity_type, entity_id, is_completed, due_at, completed_at) "
                "VALUES (?,?,?,?,?,?,?)",
                (S, self.next_id, et, eid, done, due, due if done else None),
            )
        elif kind == "activity":
            self.sql(  # some planned (not done), some bound to other records too
                "INSERT INTO activities (source, id, channel, direction, at, entity_type, entity_id, "
                "is_completed) VALUES (?,?,?,?,?,?,?,?)",
                (
                    S,
                    f"a{self.next_id}",
                    rng.choice(CHANNELS),
                    rng.choice(("in", "out")),
                    ts(rng, now, 20),
                    et,
                    eid,
                    int(rng.random() < 0.7),
                ),
            )
            if rng.random() < 0.3:
                self.bind(f"a{self.next_id}")
        else:
            k = rng.choice(("nps", "csat"))
            self.sql(
                "INSERT INTO survey_answers (source, id, kind, score, at, entity_type, entity_id) "
                "VALUES (?,?,?,?,?,?,?)",
                (S, f"s{self.next_id}", k, rng.randint(0, 10 if k == "nps" else 5), ts(rng, now), et, eid),
            )

    def bind(self, act: str) -> None:
        et, eid = self.owner()
        self.sql("INSERT OR IGNORE INTO activity_bindings VALUES (?, ?, ?, ?)", (S, act, et, eid))

    def change(self, now: datetime, n: int) -> None:
        """`n` random writes: edits, new rows, deletions (flags and rows), merges."""
        rng = self.rng
        for _ in range(n):
            r = rng.random()
            if r < 0.2:  # a deal edited: status, amount, owner
                d = rng.randint(1, self.deals)
                self.sql(
                    "UPDATE deals SET status = ?, amount = ?, closed_at = ?, contact_id = ? WHERE id = ?",
                    (
                        rng.choice(("won", "lost", "open")),
                        round(rng.random() * 100_000, 2),
                        ts(rng, now, 40),
                        rng.randint(1, self.contacts),
                        d,
                    ),
                )
            elif r < 0.3:
                self.new_deal(now)
            elif r < 0.5:
                self.new_row(now)
            elif r < 0.6:  # deleted in the CRM: a flag
                t = rng.choice(("deals", "calls", "tasks", "activities", "contacts", "companies"))
                i = self.pick(t)
                if i is not None:
                    self.sql(
                        f"UPDATE {t} SET is_deleted = ? WHERE source = ? AND id = ?",
                        (int(rng.random() < 0.8), S, i),
                    )
            elif r < 0.7:  # rows gone: a deal's linked contacts replaced, a survey answer removed
                d = rng.randint(1, self.deals)
                self.sql("DELETE FROM deal_contacts WHERE source = ? AND deal_id = ? AND is_main = 0", (S, d))
                i = self.pick("survey_answers")
                if i is not None:
                    self.sql("DELETE FROM survey_answers WHERE source = ? AND id = ?", (S, i))
            elif r < 0.8:  # two contacts merged: the loser's deals, links and rows move to the winner
                a, b = rng.sample(range(1, self.contacts + 1), 2)
                self.sql("UPDATE deals SET contact_id = ? WHERE source = ? AND contact_id = ?", (b, S, a))
                self.sql(
                    "UPDATE OR IGNORE deal_contacts SET contact_id = ? WHERE source = ? AND contact_id = ?",
                    (b, S, a),
                )
                for t in ("calls", "tasks", "activities"):
                    self.sql(
                        f"UPDATE {t} SET entity_id = ? WHERE source = ? AND entity_type = 'contact' "
                        f"AND entity_id = ?",
                        (b, S, a),
                    )
                self.sql("UPDATE contacts SET is_deleted = 1 WHERE source = ? AND id = ?", (S, a))
            elif r < 0.9:  # a task done, or its due time moved
                i = self.pick("tasks")
                if i is not None:
                    self.sql(
                        "UPDATE tasks SET is_completed = ?, due_at = ?, completed_at = due_at WHERE id = ?",
                        (int(rng.random() < 0.5), ts(rng, now, 5), i),
                    )
            elif r < 0.95:  # an activity done, bound to one more record, or unbound; a call automated
                act = self.pick("activities")
                if act is not None:
                    self.sql("UPDATE activities SET is_completed = 1 WHERE id = ?", (act,))
                    self.sql(  # moved in time, or another channel: its bound records see it
                        "UPDATE activities SET at = ?, channel = ? WHERE id = ?",
                        (ts(rng, now, 20), rng.choice(CHANNELS), self.pick("activity_bindings_ids")),
                    )
                    self.bind(act)
                    self.sql(
                        "DELETE FROM activity_bindings WHERE activity_id = ?", (self.pick("activities"),)
                    )
                    self.sql(
                        "UPDATE calls SET is_automated = 1 - is_automated WHERE id = ?", (self.pick("calls"),)
                    )
            else:  # a deal moved to another company
                self.sql(
                    "UPDATE deals SET company_id = ? WHERE id = ?",
                    (rng.randint(1, self.companies), rng.randint(1, self.deals)),
                )


def history(m: Mirror) -> list:
    return m.conn.execute(
        "SELECT source, entity_type, entity_id, kpi, value, computed_at FROM kpi_values ORDER BY 1, 2, 3, 4, 6"
    ).fetchall()


@pytest.mark.parametrize("lookup", ["index", "scan"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_incremental_passes_write_the_kpi_values_of_full_passes(seed, lookup, monkeypatch):
    # the rows of the clients recomputed: looked up by index, or kept from one pass over a table
    monkeypatch.setattr(prep, "SEEK_ROWS", 0 if lookup == "index" else 10**9)
    inc, full = Mirror(":memory:"), Mirror(":memory:")
    world = World(seed, [inc, full])
    now = START
    world.seed(now)
    c = cfg(full_pass_days=30)  # a full pass now and then (the clock moves up to 9 days)
    first = kpi.compute(inc, S, c, now=now, incremental=True)
    kpi.compute(full, S, c, now=now)
    assert first.mode == "full"
    modes = []
    for _ in range(8):
        # the clock: same moment, minutes, hours or days later
        now += timedelta(seconds=world.rng.choice((0, 60, 3 * 3600, 86400, 2.5 * 86400, 9 * 86400)))
        world.change(now, world.rng.randint(0, 6))
        got = kpi.compute(inc, S, c, now=now, incremental=True)
        want = kpi.compute(full, S, c, now=now)
        modes.append(got.mode)
        assert history(inc) == history(full), (seed, now, got.mode)
        if got.mode == "incremental":
            assert got.clients["contact"] <= want.clients["contact"]
    # most passes were incremental, and they recomputed fewer clients than there are
    assert modes.count("incremental") >= 5, modes


def test_an_incremental_pass_recomputes_only_the_clients_a_change_touches():
    m = Mirror(":memory:")
    world = World(7, [m])
    world.seed(START)
    c = cfg()
    kpi.compute(m, S, c, now=START, incremental=True)
    res = kpi.compute(m, S, c, now=START, incremental=True)  # nothing written, same clock
    assert (res.mode, res.clients) == ("incremental", {"company": 0, "contact": 0})
    deal = m.conn.execute(
        "SELECT id, contact_id, company_id FROM deals WHERE company_id IS NOT NULL"
    ).fetchone()
    linked = {
        r[0] for r in m.conn.execute("SELECT contact_id FROM deal_contacts WHERE deal_id = ?", deal[:1])
    }
    m.conn.execute("UPDATE deals SET amount = amount + 1 WHERE id = ?", deal[:1])
    m.conn.commit()
    res = kpi.compute(m, S, c, now=START, incremental=True)
    assert res.clients == {"company": 1, "contact": len(linked | {deal[1]})}
    assert m.conn.execute("SELECT count(*) FROM kpi_dirty").fetchone()[0] == 0


def test_a_full_pass_when_one_is_due_or_asked_for_or_the_settings_changed():
    m = Mirror(":memory:")
    World(3, [m]).seed(START)
    assert kpi.compute(m, S, cfg(), now=START, incremental=True).mode == "full"
    later = START + timedelta(days=6)
    assert kpi.compute(m, S, cfg(), now=later, incremental=True).mode == "incremental"
    res = kpi.compute(m, S, cfg(), now=START + timedelta(days=7), incremental=True)
    assert (res.mode, res.full_reason) == (
        "full",
        f"the last full pass ({START:%Y-%m-%dT%H:%M:%SZ}) is 7 day(s) old or more",
    )
    assert (
        kpi.compute(m, S, cfg(full_pass_days=0), now=later + timedelta(days=2), incremental=True).mode
        == "full"
    )
    res = kpi.compute(m, S, cfg(churn_days=31), now=later + timedelta(days=3), incremental=True)
    assert res.mode == "full" and "settings" in res.full_reason
    with_survey = cfg(churn_days=31, survey=SurveyConfig(nps_field="NPS"))
    assert kpi.compute(m, S, with_survey, now=later + timedelta(days=3), incremental=True).mode == "full"
    assert (
        kpi.compute(m, S, with_survey, now=later + timedelta(days=4), incremental=True).mode == "incremental"
    )
    m.conn.execute(  # the card field holding the scores found: scores may appear on unchanged cards
        "INSERT INTO kpi_fields (source, entity_type, kpi, label, field_key, resolved_at) "
        "VALUES (?, 'contact', 'survey:nps', 'NPS', '777', '2026-11-23T00:00:00Z')",
        (S,),
    )
    assert kpi.compute(m, S, with_survey, now=later + timedelta(days=4), incremental=True).mode == "full"


def test_a_full_pass_for_a_kpi_that_reads_the_clock_or_a_table_in_ways_not_followed(monkeypatch):
    m = Mirror(":memory:")
    World(4, [m]).seed(START)
    kpi.compute(m, S, cfg(), now=START, incremental=True)
    real = kpi.catalogue
    extra = {"x": kpi.Kpi("x", "SELECT entity_id, 1 AS value FROM kpi_clients", "x", reads=("leads",))}
    monkeypatch.setattr(kpi, "catalogue", lambda: real() | extra)
    assert (
        kpi.compute(m, S, cfg(), now=START, incremental=True).full_reason
        == "KPI 'x' is new or changed since the last pass"
    )
    res = kpi.compute(m, S, cfg(), now=START, incremental=True)
    assert (res.mode, res.full_reason) == ("full", "KPI 'x' reads leads, whose changes are not noted")
    extra = {"y": kpi.Kpi("y", "SELECT entity_id, julianday(:now) AS value FROM kpi_clients", "y")}
    assert kpi.compute(m, S, cfg(), now=START, incremental=True).mode == "full"  # a new KPI
    assert kpi.compute(m, S, cfg(), now=START, incremental=True).mode == "incremental"  # same clock
    res = kpi.compute(m, S, cfg(), now=START + timedelta(hours=1), incremental=True)
    assert (res.mode, res.full_reason) == (
        "full",
        "KPI 'y' reads the clock in a way incremental passes do not know",
    )


def test_changes_are_noted_once_a_pass_was_made_and_only_when_a_row_changed():
    m = Mirror(":memory:")
    World(5, [m]).seed(START)  # a first sync: no KPI pass yet, so nothing to note
    dirty = "SELECT entity_type, entity_id FROM kpi_dirty ORDER BY 1, 2"
    assert m.conn.execute(dirty).fetchall() == []
    kpi.compute(m, S, cfg(), now=START, incremental=True)
    deal = m.conn.execute("SELECT id, contact_id FROM deals WHERE company_id IS NULL").fetchone()
    row = {"id": deal[0], "contact_id": deal[1], "status": "won"}
    m.conn.execute("UPDATE deals SET status = 'won' WHERE id = ?", deal[:1])
    m.conn.execute("DELETE FROM kpi_dirty")
    m.db["deals"].upsert(dict(row, source=S), pk=("source", "id"))  # re-synced as it is
    assert m.conn.execute(dirty).fetchall() == []
    m.db["deals"].upsert(dict(row, source=S, contact_id=deal[1] + 1), pk=("source", "id"))
    assert m.conn.execute(dirty).fetchall() == [
        ("contact", deal[1]),
        ("contact", deal[1] + 1),
        ("deal", deal[0]),
    ]
