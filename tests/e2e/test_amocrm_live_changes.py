"""amoCRM lists that change while they are read (the streams not ordered by their cursor):
tasks (by id), events (newest first) and cards on an account without the list-filter add-on
(newest first). A row deleted, edited or hidden mid-read must not make a
later row be skipped, so after the syncs the mirror equals the portal."""

import pytest

from adapters.times import from_unix as iso
from connector.mirror.store import Mirror
from connector.run.sync import sync_source
from sandbox.amocrm import AmoSandbox
from sandbox.data import generate
from tests.e2e.portal_check import assert_mirror_equals_portal
from tests.e2e.portal_scenarios import clock_ahead, on_request
from tests.e2e.test_amocrm_e2e import adapter_for


@pytest.fixture
def ds():
    # 1,000 tasks (4 pages), ~7k events; seed 9 has tasks deleted and restored from the
    # trash (no `task_restored` event: the list says they are back), which must end alive.
    ds = generate(seed=9, size=2000)
    assert [e for e in ds.events if (e["entity"], e["type"]) == ("task", "restored")]
    return ds


def _sync_twice(mirror, adapter, streams):
    """The run during which the list changes, then the next one (started later, as the
    sandbox stamps mutations a few seconds ahead of the wall clock)."""
    for later in (False, True):
        if later:
            with clock_ahead():
                results = sync_source(mirror, adapter, streams=streams)
        else:
            results = sync_source(mirror, adapter, streams=streams)
        assert [(r.stream, r.status) for r in results] == [(s, "ok") for s in streams], [
            r.error for r in results
        ]


def _ids(mirror, table):
    """Ids of rows read from the list (a task completion event alone makes a row with only
    its id and completion)."""
    return {r[0] for r in mirror.conn.execute(f"SELECT id FROM {table} WHERE created_at IS NOT NULL")}


def _stage_changes_equal_portal(mirror, ds) -> None:
    """Every stage change of the portal is in the mirror and no other: (deal, moment).
    (The stages themselves are the portal check's business; an entry row of a deal deleted
    before the first sync has no stage to fill, which is not about reading lists.)"""
    portal = {(sc["deal_id"], iso(sc["changed_at"])) for sc in ds.stage_changes}
    mirrored = set(mirror.conn.execute("SELECT entity_id, changed_at FROM stage_changes"))
    assert len(portal) > 5000
    assert mirrored == portal, (sorted(portal - mirrored)[:5], sorted(mirrored - portal)[:5])


@pytest.mark.parametrize("delete", [True, False], ids=["deleted", "edited"])
def test_no_task_is_lost_when_one_changes_mid_read(ds, tmp_path, delete):
    """The first task served is deleted (or edited) once two pages were served: a deletion
    moves every later task up one; an edit dated after the run start used to take the task
    out of the `[to]` window, the same shift."""
    for _ in range(3):  # the edit is dated a few seconds after the run start, as on a live
        ds.tick()  # account whose clock is ahead of ours or that is edited a bit later
    with AmoSandbox(ds, limits=False) as server:
        server.edit_during_listing("/api/v4/tasks", after_page=2, delete=delete, text="Edited mid-read")
        adapter = adapter_for(server, tmp_path, max_workers=4)
        with Mirror(str(tmp_path / "mirror.db")) as mirror:
            try:
                _sync_twice(mirror, adapter, ["tasks", "events"])
            finally:
                adapter.close()
            [changed] = server.listing_edits_done
            live = {t["id"] for t in ds.tasks if not t["is_deleted"]}
            assert len(live) > 950 and live <= _ids(mirror, "tasks")
            row = mirror.conn.execute(
                "SELECT is_deleted, text FROM tasks WHERE id = ?", (changed,)
            ).fetchone()
            assert row == ((1, row[1]) if delete else (0, "Edited mid-read"))
            assert_mirror_equals_portal(mirror, server, "main", tables=("tasks",))


def _events_run(mirror, adapter, ahead: int) -> None:
    """Deals and events in a run started `ahead` seconds from now: 120 puts events made now,
    mid-read, inside its window; the next run (240) reads from 120 minus the overlap."""
    with clock_ahead(ahead):
        results = sync_source(mirror, adapter, streams=["deals", "events"])
    assert [r.status for r in results] == ["ok", "ok"], [r.error for r in results]


def _read_before(mirror, changes: list) -> None:
    """Every stage change the portal had when the run started is in the mirror."""
    mirrored = set(mirror.conn.execute("SELECT entity_id, changed_at FROM stage_changes"))
    missing = {(sc["deal_id"], iso(sc["changed_at"])) for sc in changes} - mirrored
    assert not missing, sorted(missing)[:5]


def test_no_event_is_lost_when_new_ones_arrive_mid_read(ds, tmp_path):
    """Events come newest first; new ones (inside the run's window) arrive while page 2 is
    asked for: they go to the front and push rows down, so rows repeat and none is skipped;
    the next run reads the new ones."""
    before = list(ds.stage_changes)
    with AmoSandbox(ds, limits=False) as server:
        open_deals = [d for d in ds.deals if d["status"] == "open" and not d["is_deleted"]][:5]
        won = next(s["id"] for s in ds.pipelines[0]["stages"] if s["semantics"] == "won")

        def move_deals():
            for d in open_deals:
                ds.update("deals", d["id"], stage_id=won)

        on_request(server, lambda req: req.path == "/api/v4/events", move_deals, nth=2)
        adapter = adapter_for(server, tmp_path, max_workers=4)
        with Mirror(str(tmp_path / "mirror.db")) as mirror:
            try:
                _events_run(mirror, adapter, 120)
                _read_before(mirror, before)
                assert len(ds.stage_changes) == len(before) + 5
                _events_run(mirror, adapter, 240)
                _stage_changes_equal_portal(mirror, ds)
            finally:
                adapter.close()


def test_no_event_is_lost_when_one_is_hidden_mid_read(ds, tmp_path):
    """Three tasks completed just now (the three newest events) are reopened once page 1 of
    the events was served: their `task_completed` events leave the list and every later
    event moves up three places. No stage change may be skipped."""
    with AmoSandbox(ds, limits=False) as server:
        tasks = [t for t in ds.tasks if not t["is_completed"] and not t["is_deleted"]][:3]
        for t in tasks:
            ds.update("tasks", t["id"], is_completed=True)

        def reopen():
            for t in tasks:
                ds.update("tasks", t["id"], is_completed=False)

        on_request(server, lambda req: req.path == "/api/v4/events", reopen, nth=2)
        adapter = adapter_for(server, tmp_path, max_workers=4)
        with Mirror(str(tmp_path / "mirror.db")) as mirror:
            try:
                _events_run(mirror, adapter, 120)
            finally:
                adapter.close()
            done = mirror.conn.execute(
                "SELECT count(*) FROM tasks WHERE is_completed = 1 AND id IN (?, ?, ?)",
                [t["id"] for t in tasks],
            ).fetchone()[0]
            assert done == 3  # read on page 1, before they were reopened
            _stage_changes_equal_portal(mirror, ds)


def test_no_deal_is_lost_newest_first_when_one_is_deleted_mid_read(ds, tmp_path):
    """Without the list-filter add-on deals are paged newest first; the newest deal is
    deleted once three pages were served, moving every later deal up one."""
    with AmoSandbox(ds, limits=False, api_filter=False) as server:
        server.edit_during_listing("/api/v4/leads", after_page=3, delete=True)
        adapter = adapter_for(server, tmp_path, max_workers=4)
        with Mirror(str(tmp_path / "mirror.db")) as mirror:
            try:
                _sync_twice(mirror, adapter, ["deals", "events"])
            finally:
                adapter.close()
            assert server.listing_edits_done
            live = {d["id"] for d in ds.deals if not d["is_deleted"]}
            assert len(live) > 1900 and live <= _ids(mirror, "deals")
            assert_mirror_equals_portal(mirror, server, "main", tables=("deals",))
