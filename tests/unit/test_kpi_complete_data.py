"""KPIs only from complete data; `kpi` before a sync; a dry run that writes nothing (the mirror
file byte for byte)."""

from __future__ import annotations

import hashlib
import re

from click.testing import CliRunner

from adapters.bitrix24.client import scope_of
from adapters.bitrix24.streams import STREAMS
from connector.cli import main
from connector.kpi import engine as kpi
from connector.kpi.custom_sql import tables_read
from connector.mirror.store import Mirror
from tests.unit.test_kpi import S
from tests.unit.test_kpi_cli import make_config


def run(cfg, *args):
    return CliRunner().invoke(main, ["--config", cfg[0], *args])


def _skip(db: str, stream: str, error: str) -> None:
    with Mirror(db) as m:
        m.conn.execute(
            "INSERT INTO sync_runs (run_id, source, stream, started_at, finished_at, status, "
            "error) VALUES ('r2', ?, ?, 'x', 'x', 'skipped', ?)",
            (S, stream, error),
        )
        m.conn.commit()


def test_every_builtin_kpi_declares_the_tables_it_reads():
    for k in kpi.catalogue().values():
        assert k.reads and "deals" in k.reads, k.name
        assert "reads:" not in k.description
    assert set(kpi.catalogue()["calls_90d"].reads) >= {"calls"}
    assert set(kpi.catalogue()["open_tasks"].reads) >= {"tasks"}


def test_every_bitrix24_stream_declares_the_scope_of_its_methods():
    methods = {
        "users": "user.get",
        "tasks": "tasks.task.list",
        "calls": "voximplant.statistic.get",
        "deals": "crm.deal.list",
    }
    by_name = {s.name: s for s in STREAMS}
    assert all(s.scope for s in STREAMS)
    for name, method in methods.items():
        assert by_name[name].scope == scope_of(method)


def test_kpis_on_activities_or_survey_answers_wait_for_the_streams_that_fill_them():
    """Both CRMs declare the tables their new streams fill, so a KPI reading `activities` or
    `survey_answers` is withheld until every stream feeding that table has completed."""
    from adapters.amocrm.streams import STREAMS as AMO
    from connector.kpi.inputs import StreamState, withheld

    def feeders(declared, table):
        return sorted(s.name for s in declared if table in s.tables)

    assert feeders(STREAMS, "activities") == ["activities", "reconcile"]
    assert feeders(STREAMS, "survey_answers") == ["calls"]
    assert feeders(AMO, "activities") == [
        "calls_companies",
        "calls_contacts",
        "calls_customers",
        "calls_leads",
        "events",
    ]
    assert feeders(AMO, "survey_answers") == ["events"]

    class K:
        name, reads, targets = "interactions_30d", ("activities", "deals"), ("contact",)

    states = [
        StreamState(s.name, s.tables, s.scope, completed=s.name != "activities", last_status="ok")
        for s in STREAMS
    ]
    assert withheld([K], ["contact"], states) == {
        "interactions_30d": "stream 'activities' has never completed a sync"
    }
    done = [StreamState(s.name, s.tables, s.scope, True, "ok") for s in STREAMS]
    assert withheld([K], ["contact"], done) == {}


def test_a_custom_kpi_reads_what_its_sql_touches():
    assert tables_read("SELECT contact_id, count(*) FROM deal_contacts GROUP BY 1") == ("deal_contacts",)


def test_a_skipped_stream_withholds_its_kpis_and_says_why(tmp_path):
    cfg = make_config(tmp_path)
    _skip(cfg[1], "calls_leads", "amoCRM source: needs the calls permission")
    r = run(cfg, "-v", "kpi", "--dry-run", "--only", "calls_90d,deals_total,win_rate")
    assert r.exit_code == 0, r.output  # calls_90d is not mapped to a card field
    assert re.search(
        r"KPIs withheld, cards keep their values: calls_90d: stream 'calls_leads' "
        r"was skipped on the last sync",
        r.output,
    )
    assert "1 KPIs withheld" in r.output and "deals_total ->" in r.output


def test_a_withheld_mapped_kpi_fails_the_run(tmp_path):
    cfg = make_config(tmp_path)
    _skip(cfg[1], "deals", "no scope")
    r = run(cfg, "kpi", "--dry-run")
    assert r.exit_code == 1 and "win_rate" in r.output and "stream 'deals' was skipped" in r.output


def test_kpi_before_any_sync_says_run_sync_and_writes_nothing(tmp_path):
    cfg = make_config(tmp_path)
    with Mirror(cfg[1]) as m:
        m.conn.execute("DELETE FROM sync_state")
        m.conn.execute("DELETE FROM sync_runs")
        m.conn.commit()
    r = run(cfg, "kpi")
    assert r.exit_code == 1
    lines = [x for x in r.output.splitlines() if x.strip()]
    assert lines == [
        f"error: source '{S}' has no complete sync yet: run `crm-connector sync --source {S}` first"
    ]
    with Mirror(cfg[1]) as m:
        for t in ("kpi_values", "kpi_runs", "writeback_log", "kpi_fields"):
            assert m.conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] == 0, t
    show = run(cfg, "kpi", "show", S, "contact", "1")
    assert show.exit_code == 1 and f"run `crm-connector sync --source {S}` first" in show.output


def _digest(path: str) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_dry_run_leaves_the_mirror_byte_for_byte(tmp_path):
    cfg = make_config(tmp_path)
    assert run(cfg, "kpi", "--dry-run").exit_code == 0  # the first run (no history yet)
    before = _digest(cfg[1])
    r = run(cfg, "kpi", "--dry-run")
    assert r.exit_code == 0, r.output
    assert _digest(cfg[1]) == before
