"""Custom KPI SQL runs under a time budget and a memory cap ([kpi] custom_timeout_s,
custom_memory_mb): a runaway query fails that KPI with one line and the others are computed."""

from __future__ import annotations

import threading

import pytest

from connector.config.kpi import CustomKpi
from connector.kpi import engine as kpi
from tests.unit.test_kpi import NOW, S, build_mirror, cfg, values

GOOD = CustomKpi(
    "linked_deals",
    "contact",
    "SELECT contact_id AS entity_id, count(*) AS value FROM deal_contacts "
    "WHERE source = :source GROUP BY contact_id",
)
RUNAWAY = {
    "forever": "WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r) SELECT x, x FROM r",
    "cross3": "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000) "
    "SELECT a.i, count(*) FROM n a, n b, n c GROUP BY a.i",
    "huge_blob": "SELECT 1, length(randomblob(1000000000))",
}


def within(fn, limit_s=30.0):
    """Run `fn` in a thread (the mirror is built there: its connection is the thread's), so
    that a hang fails the test instead of hanging it."""
    out = {}

    def run():
        try:
            out["value"] = fn()
        except BaseException as err:  # handed to the test
            out["err"] = err

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(limit_s)
    assert not t.is_alive(), f"compute still running after {limit_s} s"
    if "err" in out:
        raise out["err"]
    return out["value"]


@pytest.mark.parametrize("name", sorted(RUNAWAY))
def test_a_runaway_custom_kpi_fails_alone_within_its_budget(name):
    def body():
        mirror = build_mirror()
        try:
            bad = CustomKpi(name, "contact", RUNAWAY[name])
            res = kpi.compute(
                mirror, S, cfg(custom=[bad, GOOD], custom_timeout_s=1.0, custom_memory_mb=64), now=NOW
            )
            line = res.broken.get(name, "")
            assert set(res.broken) == {name}
            assert "\n" not in line and name in line, line
            assert ("custom_timeout_s" in line) or ("custom_memory_mb" in line), line
            assert values(mirror, "contact", 1)["linked_deals"] == 2  # the others computed
            assert "deals_total" in values(mirror, "contact", 1)
            assert mirror.conn.execute("SELECT count(*) FROM kpi_runs").fetchone()[0] == 1
            assert not mirror.conn.in_transaction
            # the limits are lifted after the query: a big legitimate allocation works again
            big = mirror.conn.execute("SELECT length(randomblob(100000000))").fetchone()[0]
            assert big == 10**8
        finally:
            mirror.close()

    within(body)


MINIMAL = """
[storage]
path = "{db}"

[[sources]]
name = "amo"
kind = "amocrm"
base_url = "http://127.0.0.1:9"
access_token = "t"
"""


@pytest.mark.parametrize(
    "line, key, problem",
    [
        ("custom_timeout_s = 0", "kpi.custom_timeout_s", "greater than 0"),
        ('custom_timeout_s = "a minute"', "kpi.custom_timeout_s", "must be a number"),
        ("custom_memory_mb = 1", "kpi.custom_memory_mb", "at least 16"),
        ("custom_memory_mb = 2.5", "kpi.custom_memory_mb", "must be an integer"),
    ],
)
def test_the_limits_are_checked_like_every_key(tmp_path, line, key, problem):
    from connector.config import loader

    path = tmp_path / "config.toml"
    path.write_text(MINIMAL.format(db=tmp_path / "m.db") + f"\n[kpi]\n{line}\n")
    with pytest.raises(loader.ConfigError) as err:
        loader.load(str(path))
    assert str(err.value).startswith(f"{path}: {key}: ") and problem in str(err.value), err.value


def test_the_limits_load_with_their_defaults(tmp_path):
    from connector.config import loader

    path = tmp_path / "config.toml"
    path.write_text(MINIMAL.format(db=tmp_path / "m.db") + "\n[kpi]\ncustom_timeout_s = 2.5\n")
    cfg = loader.load(str(path)).kpi
    assert (cfg.custom_timeout_s, cfg.custom_memory_mb) == (2.5, 512)
