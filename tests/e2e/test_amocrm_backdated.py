"""amoCRM records dated back by their writer (the API takes `created_at` / `updated_at` on
writes): written after a run, dated before its bookmark, they fall outside every later
incremental window; a wider window read on a schedule (`reread_hours` every
`reread_every_hours`, in full every `reconcile_hours`) brings them, at a cost in requests the
adapter logs and this test prints."""

import logging
from datetime import datetime, timedelta, timezone

import pytest
import requests

from connector.mirror.store import Mirror
from sandbox.amocrm import AmoSandbox
from sandbox.data import generate
from tests.e2e.test_amocrm_e2e import adapter_for, count
from tests.fixtures_amocrm import get

HOUR = 3600


def sync_at(mirror, adapter, run: datetime) -> int:
    """One sync run starting at `run`; the requests it made."""
    before = adapter.requests
    for stream in adapter.stream_names():
        for page in adapter.fetch(stream, mirror.get_bookmark("main", stream), run):
            mirror.save_page("main", stream, page)
    return adapter.requests - before


@pytest.fixture
def played(tmp_path):
    ds = generate(seed=5, size=300)
    with AmoSandbox(ds, limits=False) as server:
        adapter = adapter_for(server, tmp_path)
        mirror = Mirror(str(tmp_path / "mirror.db"))
        start = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(minutes=2)
        sync_at(mirror, adapter, start)
        yield server, adapter, mirror, start
        adapter.close()
        mirror.close()


def backdated_call(ds, at: int) -> dict:
    """A call a telephony files now, dated `at` (its note's created_at / updated_at)."""
    contact = next(c for c in ds.contacts if not c["is_deleted"])
    return ds.add(
        "calls",
        direction="in",
        status="answered",
        duration_s=61,
        entity_type="contact",
        entity_id=contact["id"],
        phone="+79990000099",
        started_at=at,
    )


def test_sandbox_takes_backdated_moments_on_writes(played):
    server, _, _, start = played
    contact = next(c for c in server.dataset.contacts if not c["is_deleted"])
    headers = {"Authorization": f"Bearer {server.access_token}"}
    old = int(start.timestamp()) - 6 * HOUR
    r = requests.patch(
        f"{server.url}/api/v4/contacts",
        json=[{"id": contact["id"], "updated_at": old, "created_at": old - HOUR}],
        headers=headers,
        timeout=5,
    )
    assert r.status_code == 200 and r.json()["_embedded"]["contacts"][0]["updated_at"] == old
    got = get(server, f"/api/v4/contacts/{contact['id']}", headers).json()
    assert (got["created_at"], got["updated_at"]) == (old - HOUR, old)
    bad = requests.patch(
        f"{server.url}/api/v4/contacts",
        json=[{"id": contact["id"], "updated_at": "yesterday"}],
        headers=headers,
        timeout=5,
    )
    assert bad.status_code == 400 and "updated_at" in bad.text


def test_a_backdated_note_and_card_come_with_the_nightly_reread(played, caplog):
    server, adapter, mirror, start = played
    ds = server.dataset
    t0 = int(start.timestamp())
    call = backdated_call(ds, t0 - 6 * HOUR)  # inside the 48 h a reread covers
    contact = next(c for c in ds.contacts if not c["is_deleted"])
    ds.update("contacts", contact["id"], name="Renamed by an import")
    ds.backdate("contacts", contact["id"], updated_at=t0 - 5 * HOUR)
    plain = sync_at(mirror, adapter, start + timedelta(hours=1))
    # an incremental window (bookmark - 5 min) cannot reach them
    assert count(mirror, "SELECT count(*) FROM calls WHERE id = ?", call["id"]) == 0
    assert count(mirror, "SELECT name FROM contacts WHERE id = ?", contact["id"]) != "Renamed by an import"
    with caplog.at_level(logging.INFO, logger="adapters.amocrm.adapter"):
        reread = sync_at(mirror, adapter, start + timedelta(hours=25))
    assert count(mirror, "SELECT count(*) FROM calls WHERE id = ?", call["id"]) == 1
    assert count(mirror, "SELECT name FROM contacts WHERE id = ?", contact["id"]) == "Renamed by an import"
    logged = [r.getMessage() for r in caplog.records if "reread from" in r.getMessage()]
    assert any("stream 'calls_contacts'" in m for m in logged), logged
    costs = [int(m.split(": ")[-1].split(" requests")[0]) for m in logged]
    assert all(c >= 1 for c in costs) and sum(costs) <= reread  # each reread's requests, logged
    print(f"\nrequests: incremental run {plain}, run with the 48 h reread {reread}: {logged}")
    # the run after that is plain again: the reread is remembered in the bookmarks
    assert sync_at(mirror, adapter, start + timedelta(hours=26)) == plain


def test_a_record_dated_back_further_comes_with_the_weekly_reconcile(played, caplog):
    server, adapter, mirror, start = played
    t0 = int(start.timestamp())
    call = backdated_call(server.dataset, t0 - 5 * 24 * HOUR)  # beyond the 48 h reread
    sync_at(mirror, adapter, start + timedelta(hours=25))  # the nightly reread: too short
    assert count(mirror, "SELECT count(*) FROM calls WHERE id = ?", call["id"]) == 0
    with caplog.at_level(logging.INFO, logger="adapters.amocrm.adapter"):
        full = sync_at(mirror, adapter, start + timedelta(days=7, hours=1))
    assert count(mirror, "SELECT count(*) FROM calls WHERE id = ?", call["id"]) == 1
    assert any("reconcile from the start" in r.getMessage() for r in caplog.records)
    print(f"\nrequests: run with the weekly reconcile {full}")
