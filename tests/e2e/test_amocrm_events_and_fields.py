"""amoCRM against the sandbox: the events filter asks only for documented types, a 400 names
the API's validation errors, every deal gets its entry-stage row, a merged-away card is
deleted (and a surviving card the merge event names is not), and custom-field lists are read
50 a page."""

import pytest

from adapters.amocrm.streams import BY_NAME
from adapters.errors import StreamError
from connector.mirror.store import Mirror
from connector.run.sync import sync_source
from sandbox.amocrm.common import EVENT_TYPES
from tests.e2e.test_amocrm_e2e import adapter_for, count, sync_later
from tests.fixtures_amocrm import get


def test_sandbox_rejects_an_undocumented_event_type(amo_sandbox, amo_headers):
    r = get(amo_sandbox, "/api/v4/events", amo_headers, **{"filter[type][]": "task_restored"})
    assert r.status_code == 400
    error = r.json()["validation-errors"][0]["errors"][0]
    assert error["path"] == "filter.type" and "not a valid choice" in error["detail"]


def test_events_filter_asks_only_for_documented_types():
    asked = [v for k, v in BY_NAME["events"].request.params if k == "filter[type][]"]
    assert set(asked) <= EVENT_TYPES and "task_restored" not in asked
    assert {"lead_added", "entity_merged", "lead_status_changed"} <= set(asked)


def test_a_400_carries_the_apis_detail(amo_sandbox, tmp_path):
    adapter = adapter_for(amo_sandbox, tmp_path)
    try:
        with pytest.raises(StreamError) as err:
            adapter.client.send("GET", "/api/v4/events", params=[("filter[type][]", "task_restored")])
    finally:
        adapter.close()
    assert "HTTP 400" in str(err.value)
    assert "filter.type: The value you selected is not a valid choice." in str(err.value)


@pytest.fixture
def synced(amo_sandbox, tmp_path):
    adapter = adapter_for(amo_sandbox, tmp_path)
    mirror = Mirror(str(tmp_path / "mirror.db"))
    results = sync_source(mirror, adapter)
    assert all(r.status == "ok" for r in results), [(r.stream, r.error) for r in results]
    yield amo_sandbox, adapter, mirror
    adapter.close()
    mirror.close()


def test_every_deal_has_its_entry_stage_row(synced):
    server, adapter, mirror = synced
    ds = server.dataset
    deal = ds.add("deals", name="Fresh", stage_id=ds.pipelines[0]["stages"][1]["id"])
    moved = ds.add("deals", name="Moved on")
    entered = moved["stage_id"]
    ds.update("deals", moved["id"], stage_id=ds.pipelines[1]["stages"][0]["id"])
    sync_later(mirror, adapter)
    rows = mirror.conn.execute(
        "SELECT entity_id, pipeline_id, stage_id, previous_stage_id FROM stage_changes "
        "WHERE entity_id IN (?, ?) ORDER BY entity_id, changed_at",
        (deal["id"], moved["id"]),
    ).fetchall()
    assert rows == [
        (deal["id"], ds.pipelines[0]["id"], deal["stage_id"], None),
        (moved["id"], ds.pipelines[0]["id"], entered, None),
        (moved["id"], ds.pipelines[1]["id"], moved["stage_id"], entered),
    ]
    live = [d for d in ds.deals if not d["is_deleted"]]
    entries = count(
        mirror, "SELECT count(*) FROM stage_changes WHERE previous_stage_id IS NULL AND stage_id IS NOT NULL"
    )
    assert entries == len(ds.deals) >= len(live)


def test_a_merged_away_contact_is_deleted(synced):
    server, adapter, mirror = synced
    ds = server.dataset
    away, into = [c for c in ds.contacts if not c["is_deleted"]][:2]
    assert count(mirror, "SELECT is_deleted FROM contacts WHERE id = ?", away["id"]) == 0
    ds.merge("contacts", away["id"], into["id"])
    listed = get(
        server,
        "/api/v4/contacts",
        {"Authorization": f"Bearer {server.access_token}"},
        **{"filter[id][]": away["id"]},
    )
    assert listed.status_code == 204  # the merged-away card left the lists
    sync_later(mirror, adapter)
    assert count(mirror, "SELECT is_deleted FROM contacts WHERE id = ?", away["id"]) == 1
    assert count(mirror, "SELECT is_deleted FROM contacts WHERE id = ?", into["id"]) == 0


def test_a_merge_event_on_the_surviving_card_deletes_no_live_card(synced):
    """The docs do not say which card `entity_merged` names: named on the survivor, the card
    is checked (`GET /api/v4/contacts/{id}` serves it) and stays alive in the mirror."""
    server, adapter, mirror = synced
    ds = server.dataset
    away, into = [c for c in ds.contacts if not c["is_deleted"]][2:4]
    ds.merge("contacts", away["id"], into["id"], named="survivor")
    headers = {"Authorization": f"Bearer {server.access_token}"}
    events = get(server, "/api/v4/events", headers, **{"filter[type][]": "entity_merged"}).json()
    assert into["id"] in [e["entity_id"] for e in events["_embedded"]["events"]]
    assert get(server, f"/api/v4/contacts/{into['id']}", headers).status_code == 200
    sync_later(mirror, adapter)
    assert count(mirror, "SELECT is_deleted FROM contacts WHERE id = ?", into["id"]) == 0
    assert server.requests_to(f"/api/v4/contacts/{into['id']}"), "the merged card was not checked"


def test_custom_fields_beyond_fifty_are_listed(amo_sandbox, tmp_path):
    for i in range(70):
        amo_sandbox.dataset.add_field("company", f"Field {i}", "numeric", code=f"F_{i}")
    kpi = amo_sandbox.dataset.add_field("company", "KPI: calls", "numeric", code="KPI_CALLS_30D")
    adapter = adapter_for(amo_sandbox, tmp_path)
    try:
        fields = adapter.list_fields("company")
    finally:
        adapter.close()
    assert len(fields) == len(amo_sandbox.dataset.fields["company"]) > 70
    assert str(kpi["id"]) in {f.key for f in fields}
