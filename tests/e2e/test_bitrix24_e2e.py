"""The Bitrix24 adapter end to end against the sandbox portal, into a real mirror."""

from __future__ import annotations

import json
import logging
import random
import time
from datetime import datetime, timezone

import pytest

from adapters.base import FieldWrite
from adapters.bitrix24.adapter import Bitrix24Adapter
from connector.config.kpi import KpiConfig
from connector.config.loader import SourceConfig
from connector.kpi import engine as kpi
from connector.mirror.store import Mirror
from connector.mirror.tokens import TokenStore
from connector.run.sync import sync_source
from sandbox.bitrix24 import Bitrix24Sandbox
from sandbox.data_build import Builder
from sandbox.data_store import Dataset

TABLES = (
    "users",
    "pipelines",
    "stages",
    "deals",
    "deal_contacts",
    "leads",
    "contacts",
    "companies",
    "tasks",
    "calls",
    "stage_changes",
)


def make(url: str, **kw) -> Bitrix24Adapter:
    cfg = SourceConfig(name="b24", kind="bitrix24", webhook_url=url, requests_per_second=50.0, **kw)
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
    assert (
        mirror.conn.execute("SELECT is_completed FROM tasks WHERE id = ?", (task["id"],)).fetchone()[0] == 1
    )


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
        cfg = SourceConfig(
            name="b24",
            kind="bitrix24",
            portal_url=srv.url,
            client_id="sandbox.app",
            client_secret="sandbox-secret",
            oauth_url=srv.oauth_url,
            requests_per_second=50.0,
        )
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
        cfg = SourceConfig(
            name="b24", kind="bitrix24", webhook_url=srv.webhook_url, requests_per_second=50.0, bucket_size=10
        )
        a = Bitrix24Adapter(cfg, None)
        results = sync_source(mirror, a)
        assert all(r.status == "ok" for r in results)
        assert srv.limit_errors == 0 and a.client.limit_errors == 0


def test_calls_and_stage_history_in_parallel_windows_match_one_window(b24_sandbox, tmp_path, monkeypatch):
    """Parallel ID windows hand rows over in ID order: same rows, previous stages, bindings
    and bookmarks as reading one window."""
    # windows planned to a tenth of a batch: this small portal is read in several windows
    monkeypatch.setattr("adapters.bitrix24.paging.FILL", 0.1)
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
        mirrors[workers] = (
            {t: snapshot(m)[t] for t in ("calls", "stage_changes")},
            m.get_bookmark("b24", "calls"),
            m.get_bookmark("b24", "stage_history"),
        )
        m.close()
    assert mirrors[4] == mirrors[1]
    parallel = {(method, ordered) for w, method, n, ordered in seen_windows if w == 4 and n > 1}
    assert parallel == {("voximplant.statistic.get", True), ("crm.stagehistory.list", True)}
    calls, _, _ = mirrors[4]
    assert any("'deal'" in row for row in calls["calls"])  # bound through crm.activity.list


# ---- small portals, deleted tasks, the moment a deal closed --------------------------------


def small_portal(n: int, now: int | None = None) -> Dataset:
    """A portal with users and pipelines and `n` records of every stream (a deal per contact,
    a task and a call per deal, a lead per contact: the second lead closed)."""
    ds = Dataset(now or int(time.time()) // 3600 * 3600)
    build = Builder(ds, random.Random(1), 0)
    build.users(), build.pipelines(), build.fields()
    for i in range(n):
        add_client(ds, i)
    return ds


def add_client(ds: Dataset, i: int) -> None:
    co = ds.add("company", name=f"Company {i}")
    c = ds.add("contact", name=f"Contact {i}", company_id=co["id"])
    d = ds.add("deal", contact_ids=[c["id"]], company_id=co["id"])
    lead = ds.add("lead", contact_id=c["id"])
    if i % 2:
        ds.update("lead", lead["id"], status_code="CONVERTED")
    ds.add("task", entity_type="deal", entity_id=d["id"])
    ds.add("call", entity_type="deal", entity_id=d["id"])


def assert_mirror_matches(m: Mirror, srv: Bitrix24Sandbox) -> None:
    """The mirror against the sandbox's own state, table by table."""
    ds = srv.dataset
    live = lambda t: {r["id"] for r in ds.rows(t) if not r.get("is_deleted")}  # noqa: E731
    kept = lambda t: {r[0] for r in m.conn.execute(f"SELECT id FROM {t} WHERE is_deleted = 0")}  # noqa: E731
    for t in ("companies", "contacts", "deals", "leads", "tasks"):
        assert kept(t) == live(t), t
    assert kept("calls") == {r["id"] for r in ds.calls}
    assert {r[0] for r in m.conn.execute("SELECT id FROM users")} == {u["id"] for u in ds.users}
    history = {f"{k}:{r['id']}" for k in ("deal", "lead") for r in srv.portal.history(k)}
    assert {r[0] for r in m.conn.execute("SELECT id FROM stage_changes")} == history
    links = {(d["id"], c) for d in ds.deals if not d["is_deleted"] for c in d["contact_ids"]}
    assert set(m.conn.execute("SELECT deal_id, contact_id FROM deal_contacts")) >= links
    closed = {r["id"]: iso_ts(r["closed_at"]) for r in ds.rows("deals") + ds.rows("leads")}
    got = dict(m.conn.execute("SELECT id, closed_at FROM deals UNION ALL SELECT id, closed_at FROM leads"))
    assert got == {i: closed[i] for i in got}


def iso_ts(ts: int | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


QUIET = {"activities": 3}  # requests a quiet night may cost, where more than one


@pytest.mark.parametrize("n", [0, 1, 2])
def test_every_stream_with_zero_one_and_two_records_first_sync_nightly_and_reconcile(n, tmp_path):
    with (
        Bitrix24Sandbox(small_portal(n), limits=False, cost_model=False) as srv,
        Mirror(str(tmp_path / "m.db")) as m,
    ):
        first = sync_source(m, make(srv.webhook_url, max_workers=4))
        assert [r.status for r in first] == ["ok"] * len(first), [r.error for r in first]
        assert_mirror_matches(m, srv)
        quiet = sync_source(m, make(srv.webhook_url, max_workers=4))  # nightly, nothing new
        # One request a stream; the activities re-read in the overlap window bring their bindings
        # (crm.activity.binding.list answers per activity: 50 a batch, after one probe call of
        # the method, as the operating budget does for any method it has not seen this run).
        assert all(r.status == "ok" and r.requests <= QUIET.get(r.stream, 1) for r in quiet), [
            (r.stream, r.requests) for r in quiet
        ]
        add_client(srv.dataset, n)
        nightly = sync_source(m, make(srv.webhook_url, max_workers=4))
        assert [r.status for r in nightly] == ["ok"] * len(nightly), [r.error for r in nightly]
        assert_mirror_matches(m, srv)
        for entity in ("company", "contact", "deal", "lead", "task"):
            srv.dataset.delete(entity, srv.dataset.rows(entity)[0]["id"])
        res = sync_source(m, make(srv.webhook_url, max_workers=4, reconcile_hours=0.0), streams=["reconcile"])
        assert res[0].status == "ok", res[0].error
        assert_mirror_matches(m, srv)


def test_a_deleted_task_is_reconciled_and_the_clients_task_counts_drop(b24_sandbox, b24_dataset, mirror):
    a = make(b24_sandbox.webhook_url, reconcile_hours=0.0)
    assert all(r.status == "ok" for r in sync_source(mirror, a))
    task = next(
        t
        for t in b24_dataset.tasks
        if not t["is_deleted"]
        and not t["is_completed"]
        and t["entity_type"] == "contact"
        and t["due_at"] < b24_dataset.now
    )
    counts = lambda: task_counts(mirror, task["entity_id"])  # noqa: E731
    before = counts()
    b24_dataset.delete("task", task["id"])
    res = sync_source(mirror, a, streams=["tasks", "reconcile"])
    assert [r.status for r in res] == ["ok", "ok"]
    assert mirror.conn.execute("SELECT is_deleted FROM tasks WHERE id = ?", (task["id"],)).fetchone()[0] == 1
    assert counts() == {k: v - 1 for k, v in before.items()}
    assert mirror.conn.execute("SELECT id FROM tasks WHERE is_deleted = 1").fetchall() == [(task["id"],)]


def task_counts(mirror: Mirror, contact_id: int) -> dict:
    kpi.compute(
        mirror, "b24", KpiConfig(), now=datetime.now(timezone.utc), only=["open_tasks", "overdue_tasks"]
    )
    return {v["kpi"]: v["value"] for v in kpi.latest(mirror, "b24", "contact", contact_id)}


def test_a_deal_won_the_day_it_was_created_closes_at_the_moment_it_was_won(tmp_path):
    created = int(datetime(2031, 3, 14, 9, 0, tzinfo=timezone.utc).timestamp())
    ds = small_portal(0, now=created - 3600)
    contact = ds.add("contact", name="Same day")
    ds.now = created  # the portal's clock: the deal comes in at 09:00 UTC
    deal = ds.add("deal", contact_ids=[contact["id"]], amount=100.0)
    assert deal["created_at"] == created
    ds.now = created + 6 * 3600 + 42 * 60  # 15:42 UTC
    won = ds.pipelines[0]["stages"][-2]
    ds.update("deal", deal["id"], stage_id=won["id"])
    with Bitrix24Sandbox(ds, limits=False, cost_model=False) as srv, Mirror(str(tmp_path / "m.db")) as m:
        assert all(r.status == "ok" for r in sync_source(m, make(srv.webhook_url)))
        closed_at, raw = m.conn.execute(
            "SELECT closed_at, raw FROM deals WHERE id = ?", (deal["id"],)
        ).fetchone()
        assert json.loads(raw)["CLOSEDATE"] == "2031-03-14T00:00:00+03:00"  # a date, not the moment
        assert closed_at == "2031-03-14T15:42:00Z"
        kpi.compute(
            m, "b24", KpiConfig(), now=datetime(2031, 3, 15, tzinfo=timezone.utc), only=["avg_cycle_days"]
        )
        (value,) = [v["value"] for v in kpi.latest(m, "b24", "contact", contact["id"])]
        assert round(value, 2) == 0.28


def test_deals_and_leads_closed_later_close_at_their_final_stage_move(b24_sandbox, b24_dataset, mirror):
    a = make(b24_sandbox.webhook_url)
    assert all(r.status == "ok" for r in sync_source(mirror, a))
    deal = next(d for d in b24_dataset.deals if d["status"] == "open" and not d["is_deleted"])
    lead = next(x for x in b24_dataset.leads if x["status"] == "open")
    lost = next(
        s
        for p in b24_dataset.pipelines
        if p["id"] == deal["pipeline_id"]
        for s in p["stages"]
        if s["semantics"] == "lost"
    )
    b24_dataset.update("deal", deal["id"], stage_id=lost["id"])
    b24_dataset.update("lead", lead["id"], status_code="JUNK")
    assert all(r.status == "ok" for r in sync_source(mirror, a))
    got = lambda t, i: mirror.conn.execute(f"SELECT closed_at FROM {t} WHERE id = ?", (i,)).fetchone()[0]  # noqa: E731
    assert got("deals", deal["id"]) == iso_ts(deal["closed_at"]) and got("leads", lead["id"]) == iso_ts(
        lead["closed_at"]
    )
    assert_mirror_matches(mirror, b24_sandbox)


def test_sync_exits_1_naming_the_scope_when_a_stream_is_skipped(b24_dataset, tmp_path):
    from click.testing import CliRunner

    from connector.cli import main

    with Bitrix24Sandbox(b24_dataset, limits=False, scopes=("crm", "task", "user")) as srv:
        cfg = tmp_path / "config.toml"
        cfg.write_text(
            f'[storage]\npath = "{tmp_path / "m.db"}"\n\n[[sources]]\nname = "b24"\n'
            f'kind = "bitrix24"\nwebhook_url = "{srv.webhook_url}"\n'
        )
        result = CliRunner().invoke(main, ["--config", str(cfg), "sync"])
    assert result.exit_code == 1
    said = [line for line in result.output.splitlines() if "telephony" in line]
    assert len(said) == 1 and "stream=calls" in said[0] and "status=skipped" in said[0], result.output
    assert "10/11 streams ok (skipped: calls)" in result.output
