"""The Bitrix24 adapter end to end against the sandbox portal, into a real mirror."""

from __future__ import annotations

import logging

import pytest

from adapters.base import FieldWrite
from adapters.bitrix24.adapter import Bitrix24Adapter
from connector.config import SourceConfig
from sandbox.bitrix24 import Bitrix24Sandbox
from connector.store import Mirror
from connector.sync import sync_source
from connector.tokens import TokenStore

TABLES = ("users", "pipelines", "stages", "deals", "deal_contacts", "leads", "contacts",
          "companies", "tasks", "calls", "stage_changes")


def make(url: str, **kw) -> Bitrix24Adapter:
    cfg = SourceConfig(name="b24", kind="bitrix24", webhook_url=url, requests_per_second=50.0,
                       **kw)
    return Bitrix24Adapter(cfg, None)


def snapshot(m: Mirror) -> dict:
    out = {}
    for t in TABLES:
        cols = [c[1] for c in m.conn.execute(f"PRAGMA table_info([{t}])")]
        out[t] = sorted(map(repr, m.conn.execute(f"SELECT {', '.join(cols)} FROM [{t}]").fetchall()))
    return out


@pytest.fixture
def mirror(tmp_path):
    m = Mirror(str(tmp_path / "m.db"))
    yield m
    m.close()


def test_full_sync_fills_every_table_and_quiet_rerun_is_cheap_and_identical(b24_sandbox, b24_dataset, mirror):
    a = make(b24_sandbox.webhook_url)
    results = sync_source(mirror, a)
    assert [r.status for r in results] == ["ok"] * len(results), [r.error for r in results]
    counts = mirror.table_counts()
    alive = lambda rows: len([r for r in rows if not r.get("is_deleted")])  # noqa: E731
    assert counts["deals"] == alive(b24_dataset.deals) and counts["contacts"] == alive(b24_dataset.contacts)
    assert counts["tasks"] == alive(b24_dataset.tasks) and counts["calls"] == len(b24_dataset.calls)
    for t in TABLES:
        assert counts[t] > 0, t
    # Same column conventions as amoCRM data: ISO UTC, stage ids as given, pseudo-pipeline -1.
    d = mirror.conn.execute("SELECT updated_at, stage_id, status FROM deals LIMIT 1").fetchone()
    assert d[0].endswith("Z") and d[2] in ("open", "won", "lost")
    assert mirror.conn.execute("SELECT count(*) FROM stages WHERE pipeline_id = -1").fetchone()[0] == 4
    linked = mirror.conn.execute("SELECT count(*) FROM calls WHERE entity_type = 'deal'").fetchone()[0]
    assert linked > 0
    before = snapshot(mirror)
    again = sync_source(mirror, a)
    assert all(r.status == "ok" and r.requests <= 1 for r in again), [(r.stream, r.requests) for r in again]
    assert snapshot(mirror) == before


def test_changes_are_picked_up_incrementally(b24_sandbox, b24_dataset, mirror):
    a = make(b24_sandbox.webhook_url)
    sync_source(mirror, a)
    deal = b24_dataset.deals[5]
    b24_dataset.update("deal", deal["id"], name="Renamed deal", amount=123.0)
    task = b24_dataset.tasks[0]
    b24_dataset.update("task", task["id"], is_completed=True)
    results = {r.stream: r for r in sync_source(mirror, a, streams=["deals", "tasks"])}
    assert results["deals"].rows >= 1
    row = mirror.conn.execute("SELECT name, amount FROM deals WHERE id = ?", (deal["id"],)).fetchone()
    assert row == ("Renamed deal", 123.0)
    assert mirror.conn.execute("SELECT is_completed FROM tasks WHERE id = ?", (task["id"],)).fetchone()[0] == 1


def test_reconciliation_marks_deleted_records(b24_sandbox, b24_dataset, mirror):
    a = make(b24_sandbox.webhook_url, reconcile_hours=0.0)
    sync_source(mirror, a)
    gone_deal = next(d for d in b24_dataset.deals if not d.get("is_deleted"))
    gone_contact = next(c for c in b24_dataset.contacts if not c.get("is_deleted"))
    b24_dataset.delete("deal", gone_deal["id"])
    b24_dataset.delete("contact", gone_contact["id"])
    res = sync_source(mirror, a, streams=["reconcile"])
    assert res[0].status == "ok" and res[0].requests >= 4
    flag = lambda t, i: mirror.conn.execute(f"SELECT is_deleted FROM {t} WHERE id = ?", (i,)).fetchone()[0]  # noqa: E731
    assert flag("deals", gone_deal["id"]) == 1 and flag("contacts", gone_contact["id"]) == 1
    assert mirror.conn.execute("SELECT sum(is_deleted) FROM deals").fetchone()[0] == 1


def test_webhook_without_telephony_skips_calls_with_a_warning(b24_dataset, mirror, caplog):
    with Bitrix24Sandbox(b24_dataset, limits=False, scopes=("crm", "task", "user")) as srv:
        a = make(srv.webhook_url)
        with caplog.at_level(logging.WARNING):
            results = {r.stream: r for r in sync_source(mirror, a)}
    assert results["calls"].status == "skipped" and "telephony" in results["calls"].error
    assert any("telephony" in r.getMessage() for r in caplog.records)
    assert all(r.status == "ok" for s, r in results.items() if s != "calls")
    assert mirror.table_counts()["deals"] > 0


def test_write_back_creates_fields_and_isolates_a_bad_card(b24_sandbox, b24_dataset):
    a = make(b24_sandbox.webhook_url)
    f = a.create_field("contact", "KPI_WIN_RATE", "KPI: Win rate, %")
    assert f.key == "UF_CRM_KPI_WIN_RATE"
    listed = {x.key: x for x in a.list_fields("contact")}
    assert listed["UF_CRM_KPI_WIN_RATE"].type == "double" and listed[f.key].name == "KPI: Win rate, %"
    ids = [c["id"] for c in b24_dataset.contacts if not c.get("is_deleted")][:60]
    writes = [FieldWrite(i, {f.key: 0.5}) for i in ids] + [FieldWrite(999999999, {f.key: 1.0})]
    writes[3] = FieldWrite(ids[3], {f.key: None})
    results = a.write_values("contact", writes)
    assert [r.ok for r in results] == [True] * 60 + [False]
    assert results[-1].error
    field_id = next(x["id"] for x in b24_dataset.fields["contact"] if x.get("code") == f.key)
    row = b24_dataset.by_id("contacts")[ids[0]]
    assert row["custom"].get(field_id) == 0.5


def test_oauth_code_exchange_and_refresh_on_expiry(b24_dataset, tmp_path, mirror):
    with Bitrix24Sandbox(b24_dataset, limits=False) as srv:
        cfg = SourceConfig(name="b24", kind="bitrix24", portal_url=srv.url, client_id="sandbox.app",
                           client_secret="sandbox-secret", oauth_url=srv.oauth_url,
                           requests_per_second=50.0)
        tokens = TokenStore(str(tmp_path / "tokens.json"))
        a = Bitrix24Adapter(cfg, tokens)
        msg = a.exchange_code(srv.issue_code())
        assert "authorized" in msg and tokens.load("b24")["access_token"] not in msg
        first = tokens.load("b24")["refresh_token"]
        srv.expire_access_tokens()
        assert "user" in a.check()
        assert tokens.load("b24")["refresh_token"] != first
        assert srv.oauth.refreshes == 1
        assert sync_source(mirror, a, streams=["deals"])[0].status == "ok"


def test_limits_on_server_no_limit_errors(b24_dataset, mirror):
    with Bitrix24Sandbox(b24_dataset, limits=True, bucket_size=10, drain_rate=50.0) as srv:
        cfg = SourceConfig(name="b24", kind="bitrix24", webhook_url=srv.webhook_url,
                           requests_per_second=50.0, bucket_size=10)
        a = Bitrix24Adapter(cfg, None)
        results = sync_source(mirror, a)
        assert all(r.status == "ok" for r in results)
        assert srv.limit_errors == 0 and a.client.limit_errors == 0


def test_calls_and_stage_history_in_parallel_windows_match_one_window(b24_sandbox, tmp_path):
    """Parallel ID windows hand rows over in ID order: same rows, previous stages, bindings
    and bookmarks as reading one window."""
    seen_windows = []
    mirrors = {}
    for workers in (1, 4):
        a = make(b24_sandbox.webhook_url, max_workers=workers)
        run = a.pager.run

        def spy(spec, windows, *args, **kw):
            seen_windows.append((workers, spec.method, len(windows), kw.get("ordered")))
            return run(spec, windows, *args, **kw)
        a.pager.run = spy
        m = Mirror(str(tmp_path / f"w{workers}.db"))
        results = sync_source(m, a, streams=["calls", "stage_history"])
        assert [r.status for r in results] == ["ok", "ok"], [r.error for r in results]
        mirrors[workers] = ({t: snapshot(m)[t] for t in ("calls", "stage_changes")},
                            m.get_bookmark("b24", "calls"), m.get_bookmark("b24", "stage_history"))
        m.close()
    assert mirrors[4] == mirrors[1]
    parallel = {(method, ordered) for w, method, n, ordered in seen_windows if w == 4 and n > 1}
    assert parallel == {("voximplant.statistic.get", True), ("crm.stagehistory.list", True)}
    calls, _, _ = mirrors[4]
    assert any("'deal'" in row for row in calls["calls"])  # bound through crm.activity.list
