"""KPI storage paths: a first load (nothing stored yet for a KPI) and a diff against kpi_latest
must leave the same current values and history; run settings are put back afterwards."""

from __future__ import annotations

from datetime import datetime, timezone

from connector.kpi import engine as kpi
from tests.unit.test_kpi import NOW, S, build_mirror, cfg

LATER = datetime(2026, 11, 24, 10, 0, tzinfo=timezone.utc)


def latest_rows(m):
    return m.conn.execute(
        "SELECT source, entity_type, entity_id, kpi, value, computed_at FROM kpi_latest ORDER BY 1, 2, 3, 4"
    ).fetchall()


def history_rows(m):
    return m.conn.execute(
        "SELECT source, entity_type, entity_id, kpi, value, computed_at "
        "FROM kpi_values ORDER BY 1, 2, 3, 4, 6"
    ).fetchall()


def test_first_load_and_diff_store_the_same():
    a, b = build_mirror(), build_mirror()
    kpi.compute(a, S, cfg(), now=NOW)  # every KPI loaded at once
    kpi.compute(b, S, cfg(), now=NOW, only=["deals_total", "win_rate"])
    r = kpi.compute(b, S, cfg(), now=NOW)  # two diffed, the rest loaded
    assert latest_rows(a) == latest_rows(b) and history_rows(a) == history_rows(b)
    assert r.changed == len(history_rows(b)) - sum(
        1 for row in history_rows(b) if row[3] in ("deals_total", "win_rate")
    )
    for m in (a, b):  # then one change goes through the diff the same way on both
        m.conn.execute("UPDATE deals SET status = 'lost' WHERE id = 106")
        assert kpi.compute(m, S, cfg(), now=LATER).changed > 0
    assert latest_rows(a) == latest_rows(b) and history_rows(a) == history_rows(b)


def test_first_load_stores_only_non_empty_values_in_key_order():
    m = build_mirror()
    res = kpi.compute(m, S, cfg(), now=NOW)
    rows = history_rows(m)
    assert res.changed == len(rows) == len(latest_rows(m)) > 0
    assert all(v is not None for *_, v, _ in rows)
    assert [r[:4] for r in rows] == [r[:4] for r in latest_rows(m)]


def test_rerun_in_the_same_second_keeps_one_row_per_value():
    m = build_mirror()
    kpi.compute(m, S, cfg(), now=NOW)
    before = history_rows(m)
    m.conn.execute("UPDATE deals SET is_deleted = 1 WHERE id = 102")  # contact 4 loses its deal
    kpi.compute(m, S, cfg(), now=NOW)
    after = history_rows(m)
    assert len({r[:4] + (r[5],) for r in after}) == len(after)  # no duplicate keys
    assert ("main", "contact", 4, "win_rate", 100.0, "2026-11-23T10:00:00Z") in before
    # the run's own row is overwritten: the value of this second is the newer one
    assert ("main", "contact", 4, "win_rate", None, "2026-11-23T10:00:00Z") in after
    assert ("main", "contact", 4, "win_rate", None, "2026-11-23T10:00:00Z") in latest_rows(m)


def test_latest_view_is_the_newest_history_row():
    m = build_mirror()
    kpi.compute(m, S, cfg(), now=NOW)
    m.conn.execute("UPDATE deals SET status = 'lost' WHERE id = 106")
    assert kpi.compute(m, S, cfg(), now=LATER).changed > 0
    newest = {}
    for *key, kpi_name, value, at in history_rows(m):
        newest[(*key, kpi_name)] = (value, at)  # rows come oldest first per key
    assert newest == {tuple(r[:4]): (r[4], r[5]) for r in latest_rows(m)}
    assert any(at == "2026-11-24T10:00:00Z" for _, at in newest.values())
    shown = kpi.latest(m, S, "contact", 4)
    assert shown == sorted(
        (
            {"kpi": k[3], "value": v, "computed_at": at}
            for k, (v, at) in newest.items()
            if k[1:3] == ("contact", 4)
        ),
        key=lambda r: r["kpi"],
    )


def test_run_settings_are_put_back(tmp_path):
    m = build_mirror(str(tmp_path / "m.db"))
    m.conn.execute("PRAGMA main.cache_size = -4000")
    m.conn.execute("PRAGMA temp.cache_size = -3000")
    m.conn.execute("PRAGMA main.mmap_size = 0")
    m.conn.execute("PRAGMA threads = 0")
    kpi.compute(m, S, cfg(), now=NOW)
    assert m.conn.execute("PRAGMA main.cache_size").fetchone()[0] == -4000
    assert m.conn.execute("PRAGMA temp.cache_size").fetchone()[0] == -3000
    assert m.conn.execute("PRAGMA main.mmap_size").fetchone()[0] == 0
    assert m.conn.execute("PRAGMA threads").fetchone()[0] == 0
    assert kpi._scratch_kib(m.conn) >= 256 * 1024  # never below the 256 MiB floor
    m.close()
