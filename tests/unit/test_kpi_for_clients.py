"""KPIs for a few clients (a webhook refresh) equal those of a full pass, and touch no one else."""

from __future__ import annotations

from datetime import timedelta

from adapters.hooks import Change
from connector.config.kpi import KpiConfig
from connector.kpi import engine as kpi
from connector.run.refresh import touched
from tests.unit.test_kpi import NOW, S, build_mirror


def values(m, source=S) -> dict:
    return {
        (t, e, k): v
        for t, e, k, v in m.conn.execute(
            "SELECT entity_type, entity_id, kpi, value FROM kpi_latest WHERE source = ?", (source,)
        )
    }


def test_kpis_for_some_clients_equal_a_full_pass_and_leave_the_others_alone():
    cfg = KpiConfig(targets=["contact", "company"], currency_rates={"USD": 90, "EUR": 100})
    full, part = build_mirror(), build_mirror()
    kpi.compute(full, S, cfg, now=NOW)
    kpi.compute(part, S, cfg, now=NOW)
    later = NOW + timedelta(days=40)  # the day counts and 30/90-day windows move
    for m in (full, part):
        m.conn.execute("UPDATE deals SET status = 'won', closed_at = '2026-12-01T00:00:00Z' WHERE id = 106")
        m.conn.commit()
    kpi.compute(full, S, cfg, now=later)
    res = kpi.compute(part, S, cfg, now=later, clients={"contact": [3], "company": [10]})
    assert res.clients == {"contact": 1, "company": 1}
    want, got = values(full), values(part)
    for key in want:
        if key[:2] in (("contact", 3), ("company", 10)):
            assert got[key] == want[key], key
    # contact 1's day counts moved in the full pass; the partial one left it as it was
    moved = [k for k in want if k[:2] == ("contact", 1) and want[k] != got.get(k)]
    assert moved, "the full pass should have changed contact 1's day counts"
    # and wrote no kpi_runs row: `status` shows the nightly job, not a refresh
    runs = "SELECT count(*) FROM kpi_runs"
    assert (full.conn.execute(runs).fetchone()[0], part.conn.execute(runs).fetchone()[0]) == (2, 1)


def test_the_clients_a_changed_record_touches():
    m = build_mirror()
    got = touched(m, S, [Change("deals", 102), Change("contacts", 2), Change("companies", 11)])
    assert got == {"contact": {1, 4, 2}, "company": {10, 11}}
    m.conn.execute(
        "INSERT INTO tasks (source, id, entity_type, entity_id, is_deleted) "
        "VALUES (?, 9001, 'deal', 101, 0), (?, 9002, 'contact', 3, 0)",
        (S, S),
    )
    assert touched(m, S, [Change("tasks", 9001)]) == {"contact": {1}, "company": {10}}
    assert touched(m, S, [Change("tasks", 9002)]) == {"contact": {3}, "company": set()}
