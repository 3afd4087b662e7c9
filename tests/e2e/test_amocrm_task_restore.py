"""amoCRM tasks restored from the trash. amoCRM has no `task_restored`
event: the task list, which never serves a trashed task, is what says a task is back. Its
`task_deleted` event, read again later (the events overlap, a full sync), must not delete it
again, while a deletion after the restore must."""

import pytest

from connector.mirror.store import Mirror
from connector.run.sync import sync_source
from sandbox.amocrm import AmoSandbox
from sandbox.data import generate
from tests.e2e.portal_check import assert_mirror_equals_portal
from tests.e2e.portal_scenarios import clock_ahead
from tests.e2e.test_amocrm_e2e import adapter_for


@pytest.fixture
def amo(tmp_path):
    """(dataset, run): `run(full=False)` syncs every stream, starting ahead of the sandbox's
    mutation stamps (see portal_scenarios.AHEAD_S)."""
    ds = generate(seed=1, size=300)
    with AmoSandbox(ds, limits=False) as server:
        adapter = adapter_for(server, tmp_path)
        with Mirror(str(tmp_path / "mirror.db")) as mirror:

            def run(full: bool = False):
                with clock_ahead():
                    results = sync_source(mirror, adapter, full=full)
                assert [r.status for r in results] == ["ok"] * len(results), [
                    (r.stream, r.error) for r in results if r.status != "ok"
                ]
                return mirror.conn.execute(
                    "SELECT is_deleted FROM tasks WHERE id = ?", (task["id"],)
                ).fetchone()[0]

            task = next(t for t in ds.tasks if not t["is_deleted"])
            try:
                yield (
                    ds,
                    task,
                    run,
                    lambda: assert_mirror_equals_portal(mirror, server, "main", tables=("tasks",)),
                )
            finally:
                adapter.close()


def test_a_task_restored_after_its_deletion_was_synced_is_alive(amo):
    ds, task, run, portal_check = amo
    assert run() == 0
    ds.delete("tasks", task["id"])
    assert run() == 1  # the sync saw the deletion (task_deleted event)
    ds.restore("tasks", task["id"])
    # The deletion is within the events overlap, so this run reads it again after listing
    # the task: it is older than the restore and must not delete the task again.
    assert run() == 0
    portal_check()
    assert run(full=True) == 0  # every event again, the task listed again
    portal_check()


@pytest.mark.parametrize(
    "synced_between", [True, False], ids=["restore-synced-then-deleted", "restored-and-deleted-between-runs"]
)
def test_a_task_deleted_again_after_its_restore_ends_deleted(amo, synced_between):
    ds, task, run, portal_check = amo
    assert run() == 0
    ds.delete("tasks", task["id"])
    assert run() == 1
    ds.restore("tasks", task["id"])
    if synced_between:
        assert run() == 0
    ds.delete("tasks", task["id"])
    assert run() == 1
    portal_check()
    assert run(full=True) == 1
    portal_check()


def test_a_task_deleted_and_restored_before_the_first_sync_is_alive(amo):
    ds, task, run, portal_check = amo
    ds.delete("tasks", task["id"])
    ds.restore("tasks", task["id"])
    assert run() == 0
    portal_check()
