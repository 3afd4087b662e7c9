"""End to end against the local amoCRM sandbox: sync every stream into a mirror, re-sync
with no changes, pick up changes, write KPI values back, OAuth rotation under concurrency."""

import threading
from datetime import datetime, timedelta, timezone

import pytest

from adapters import redact
from adapters.amocrm.adapter import AmoCrmAdapter
from adapters.base import FieldWrite
from connector.config.loader import SourceConfig
from connector.mirror.store import Mirror
from connector.mirror.tokens import TokenStore
from connector.run.sync import sync_source
from sandbox.amocrm import WON, AmoSandbox

TABLES = (
    "users",
    "pipelines",
    "stages",
    "deals",
    "deal_contacts",
    "contacts",
    "companies",
    "tasks",
    "calls",
    "stage_changes",
)


def adapter_for(server, tmp_path, **kw) -> AmoCrmAdapter:
    cfg = dict(
        name="main",
        kind="amocrm",
        base_url=server.url,
        access_token=server.access_token,
        requests_per_second=500.0,
        max_workers=4,
    )
    cfg.update(kw)
    redact.register(cfg.get("access_token"))
    return AmoCrmAdapter(SourceConfig(**cfg), TokenStore(str(tmp_path / "tokens.json")))


def dump(mirror) -> dict:
    return {t: mirror.conn.execute(f"SELECT * FROM [{t}] ORDER BY 1, 2, 3").fetchall() for t in TABLES}


def sync_later(mirror, adapter, seconds=60):
    """One sync run that starts `seconds` from now. The sandbox stamps each mutation one
    second after the previous one, so a burst of test mutations is dated a few seconds ahead
    of the wall clock; a run starting right away would (correctly) leave them to the next run,
    as it leaves rows newer than its start."""
    run = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=seconds)
    for stream in adapter.stream_names():
        for page in adapter.fetch(stream, mirror.get_bookmark("main", stream), run):
            mirror.save_page("main", stream, page)


def count(mirror, sql, *args):
    return mirror.conn.execute(sql, args).fetchone()[0]


@pytest.fixture
def synced(amo_sandbox, tmp_path):
    adapter = adapter_for(amo_sandbox, tmp_path)
    mirror = Mirror(str(tmp_path / "mirror.db"))
    results = sync_source(mirror, adapter)
    yield amo_sandbox, adapter, mirror, results
    adapter.close()
    mirror.close()


def test_full_sync_fills_every_table(synced):
    server, adapter, mirror, results = synced
    ds = server.dataset
    assert [(r.stream, r.status) for r in results] == [(s, "ok") for s in adapter.stream_names()]
    live = lambda rows: [r for r in rows if not r["is_deleted"]]  # noqa: E731
    assert count(mirror, "SELECT count(*) FROM deals") == len(live(ds.deals))
    assert count(mirror, "SELECT count(*) FROM contacts") == len(live(ds.contacts))
    assert count(mirror, "SELECT count(*) FROM companies") == len(live(ds.companies))
    assert count(mirror, "SELECT count(*) FROM tasks") == len(live(ds.tasks))
    assert count(mirror, "SELECT count(*) FROM calls") == len(ds.calls)
    assert count(mirror, "SELECT count(*) FROM users") == len(ds.users)
    assert count(mirror, "SELECT count(*) FROM pipelines") == len(ds.pipelines)
    assert count(mirror, "SELECT count(*) FROM deal_contacts") == sum(
        len(d["contact_ids"]) for d in live(ds.deals)
    )
    # every stage change, the entry-stage rows (lead_added) included, all filled
    assert count(mirror, "SELECT count(*) FROM stage_changes") == len(ds.stage_changes)
    assert count(mirror, "SELECT count(*) FROM stage_changes WHERE stage_id IS NULL") == 0
    # every deal's status agrees with the dataset; won deals sit in stage 142
    by_id = {d["id"]: d for d in ds.deals}
    for did, status, stage, amount, main in mirror.conn.execute(
        "SELECT id, status, stage_id, amount, contact_id FROM deals"
    ):
        d = by_id[did]
        assert status == d["status"]
        assert (stage == WON) == (d["status"] == "won")
        assert amount == round(d["amount"])
        assert main == (d["contact_ids"][0] if d["contact_ids"] else None)
    # timestamps are ISO UTC, raw is JSON
    row = mirror.conn.execute("SELECT created_at, raw FROM deals LIMIT 1").fetchone()
    assert row[0].endswith("Z") and row[1].startswith("{")
    calls = dict(mirror.conn.execute("SELECT status, count(*) FROM calls GROUP BY status"))
    assert calls == {s: sum(1 for c in ds.calls if c["status"] == s) for s in calls}
    # deletions seen through events: dataset-deleted rows that are mirrored are flagged
    assert count(mirror, "SELECT count(*) FROM deals WHERE is_deleted = 1") == 0
    # no secret anywhere in the mirror
    with open(mirror.path, "rb") as fh:
        assert server.access_token.encode() not in fh.read()


def test_second_run_without_changes_is_identical_and_cheap(synced):
    server, adapter, mirror, _ = synced
    before = dump(mirror)
    server.clear_log()
    results = sync_source(mirror, adapter)
    assert all(r.status == "ok" for r in results)
    assert all(r.requests <= 1 for r in results), [(r.stream, r.requests) for r in results]
    assert len(server.request_log) <= len(results)
    assert dump(mirror) == before


def test_changes_deletions_and_restores_are_picked_up(synced):
    server, adapter, mirror, _ = synced
    ds = server.dataset
    deal = next(d for d in ds.deals if d["status"] == "open" and not d["is_deleted"])
    won_stage = next(s["id"] for s in ds.pipelines[0]["stages"] if s["semantics"] == "won")
    ds.update("deals", deal["id"], stage_id=won_stage)
    contact = next(c for c in ds.contacts if not c["is_deleted"])
    ds.delete("contacts", contact["id"])
    company = next(c for c in ds.companies if not c["is_deleted"])
    ds.delete("companies", company["id"])
    ds.restore("companies", company["id"])
    task = ds.add(
        "tasks",
        text="New task from the test",
        entity_type="contact",
        entity_id=contact["id"],
        responsible_user_id=ds.users[0]["id"],
    )
    sync_later(mirror, adapter)
    row = mirror.conn.execute(
        "SELECT status, stage_id, closed_at FROM deals WHERE id = ?", (deal["id"],)
    ).fetchone()
    assert row[0] == "won" and row[1] == WON and row[2]
    assert (
        count(
            mirror, "SELECT count(*) FROM stage_changes WHERE entity_id = ? AND stage_id = ?", deal["id"], WON
        )
        >= 1
    )
    assert count(mirror, "SELECT is_deleted FROM contacts WHERE id = ?", contact["id"]) == 1
    assert count(mirror, "SELECT is_deleted FROM companies WHERE id = ?", company["id"]) == 0
    assert mirror.conn.execute(
        "SELECT text, entity_type FROM tasks WHERE id = ?", (task["id"],)
    ).fetchone() == ("New task from the test", "contact")


def test_without_api_filter_second_run_is_one_request_per_stream(amo_dataset, tmp_path):
    with AmoSandbox(amo_dataset, limits=False, api_filter=False) as server:
        adapter = adapter_for(server, tmp_path)
        with Mirror(str(tmp_path / "m.db")) as mirror:
            first = sync_source(mirror, adapter)
            assert all(r.status == "ok" for r in first)
            before = dump(mirror)
            assert count(mirror, "SELECT count(*) FROM deals") == sum(
                1 for d in amo_dataset.deals if not d["is_deleted"]
            )
            server.clear_log()
            second = sync_source(mirror, adapter)
            assert all(r.requests <= 1 for r in second)
            assert not server.requests_to("/api/v4/account")
            assert dump(mirror) == before
            contact = next(c for c in amo_dataset.contacts if not c["is_deleted"])
            amo_dataset.update("contacts", contact["id"], name="Renamed Contact")
            sync_later(mirror, adapter)
            assert (
                mirror.conn.execute("SELECT name FROM contacts WHERE id = ?", (contact["id"],)).fetchone()[0]
                == "Renamed Contact"
            )
        adapter.close()


@pytest.mark.parametrize("fault", ["badjson", "truncated"])
def test_a_bad_200_is_retried_and_the_stream_completes(amo_sandbox, tmp_path, fault):
    adapter = adapter_for(amo_sandbox, tmp_path)
    adapter.http.sleep = lambda s: None
    with Mirror(str(tmp_path / "m.db")) as mirror:
        amo_sandbox.fail_next(fault)
        results = sync_source(mirror, adapter, streams=["tasks", "users"])
        assert [(r.stream, r.status) for r in results] == [("tasks", "ok"), ("users", "ok")]
        first, retry = amo_sandbox.request_log[:2]
        assert first["fault"] == fault and first["status"] == 200
        assert (
            retry["fault"] is None and retry["path"] == first["path"] and retry["params"] == first["params"]
        )
        assert count(mirror, "SELECT count(*) FROM tasks") == sum(
            1 for t in amo_sandbox.dataset.tasks if not t.get("is_deleted")
        )
    adapter.close()


def test_a_page_that_stays_bad_fails_only_that_stream(amo_sandbox, tmp_path):
    adapter = adapter_for(amo_sandbox, tmp_path)
    adapter.http.sleep = lambda s: None
    with Mirror(str(tmp_path / "m.db")) as mirror:
        amo_sandbox.fail_next("badjson", adapter.http.max_attempts)
        results = sync_source(mirror, adapter, streams=["tasks", "users"])
        assert [(r.stream, r.status) for r in results] == [("tasks", "failed"), ("users", "ok")]
        err = mirror.conn.execute("SELECT error FROM sync_runs WHERE stream = 'tasks'").fetchone()[0]
        assert "not JSON" in err and "stream 'tasks', page 1" in err and "6 attempts" in err
    adapter.close()


def test_write_back_shows_in_later_reads_and_bad_card_is_isolated(amo_sandbox, tmp_path):
    adapter = adapter_for(amo_sandbox, tmp_path)
    ds = amo_sandbox.dataset
    field = adapter.create_field("contact", "KPI_WIN_RATE", "KPI: Win rate, %")
    assert field.type == "numeric"
    listed = {f.key: f for f in adapter.list_fields("contact")}
    assert listed[field.key].code == "KPI_WIN_RATE"
    assert listed[str(899001)].type == "multitext"
    live = [c["id"] for c in ds.contacts if not c["is_deleted"]][:60]
    gone = next(c["id"] for c in ds.contacts if c["is_deleted"])
    writes = [FieldWrite(cid, {field.key: 12.5 + i}) for i, cid in enumerate(live)]
    writes.insert(7, FieldWrite(gone, {field.key: 1.0}))
    results = adapter.write_values("contact", writes)
    assert [r.entity_id for r in results] == [w.entity_id for w in writes]
    assert [r.entity_id for r in results if not r.ok] == [gone]
    assert "Entity not found" in next(r.error for r in results if not r.ok)
    run = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=60)
    values = {}
    for page in adapter.fetch("contacts", None, run, full=True):
        for c in page.rows.get("contacts", []):
            for cf in c["raw"].get("custom_fields_values") or []:
                if str(cf["field_id"]) == field.key:
                    values[c["id"]] = cf["values"][0]["value"]
    assert values[live[0]] == "12.5" and values[live[59]] == "71.5" and len(values) == 60
    # clearing
    adapter.write_values("contact", [FieldWrite(live[0], {field.key: None})])
    assert int(field.key) not in ds.by_id("contacts")[live[0]]["custom"]
    adapter.close()


def test_oauth_code_then_concurrent_401s_refresh_once(amo_dataset, tmp_path):
    with AmoSandbox(amo_dataset, limits=False, access_token=None) as server:
        adapter = adapter_for(
            server,
            tmp_path,
            access_token=None,
            client_id=server.client_id,
            client_secret=server.client_secret,
            redirect_uri=server.redirect_uri,
        )
        print(adapter.exchange_code(server.issue_code()))
        assert "Sandbox" in adapter.check()
        server.expire_access_tokens()
        errors, barrier = [], threading.Barrier(6)

        def worker():
            try:
                barrier.wait()
                adapter.check()
            except Exception as err:  # noqa: BLE001 - collected for the assertion
                errors.append(err)

        threads = [threading.Thread(target=worker) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert len(server.requests_to("/oauth2/access_token")) == 2  # the code, one refresh
        # a second adapter (another process) sharing the token file keeps working
        other = adapter_for(
            server,
            tmp_path,
            access_token=None,
            client_id=server.client_id,
            client_secret=server.client_secret,
            redirect_uri=server.redirect_uri,
        )
        assert "Sandbox" in other.check()
        with Mirror(str(tmp_path / "m.db")) as mirror:
            assert all(r.status == "ok" for r in sync_source(mirror, other, streams=["deals"]))
        adapter.close()
        other.close()


def test_no_deal_is_lost_when_a_card_is_edited_mid_read(tmp_path):
    """A user edits a deal already served while page 4 is being asked for: offset paging
    moves every later deal up one; the read must still bring every deal."""
    from sandbox.data import generate

    ds = generate(seed=1, size=3000)
    with AmoSandbox(ds, limits=False) as server:
        server.edit_during_listing("/api/v4/leads", after_page=3, name="Edited mid-read")
        adapter = adapter_for(server, tmp_path, max_workers=4)
        mirror = Mirror(str(tmp_path / "mirror.db"))
        try:
            for _ in range(2):
                [result] = sync_source(mirror, adapter, streams=["deals"])
                assert result.status == "ok", result.error
            assert server.listing_edits_done
            listed = {d["id"] for d in ds.deals if not d["is_deleted"]}
            mirrored = {r[0] for r in mirror.conn.execute("SELECT id FROM deals")}
            assert len(listed) > 2900 and mirrored == listed
        finally:
            adapter.close()
            mirror.close()
