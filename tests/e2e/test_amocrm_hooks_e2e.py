"""amoCRM webhooks end to end against the sandbox: the adapter installs its webhook, a change
in the CRM reaches a real local receiver, `parse_hook` names the record and `read_changes`
reads it back; applied to a mirror, the pages leave it as a fresh sync would."""

import pytest
import requests

from adapters.amocrm.hooks import HOOK_EVENTS
from adapters.base import FieldWrite
from adapters.hooks import Change, HookRefused
from connector.mirror.store import Mirror
from connector.run.sync import sync_source
from sandbox.amocrm import AmoSandbox
from sandbox.data import generate
from tests.e2e.hook_receiver import Receiver
from tests.e2e.portal_scenarios import clock_ahead
from tests.e2e.test_amocrm_e2e import adapter_for

CARDS = ("deals", "deal_contacts", "contacts", "companies", "tasks")


@pytest.fixture
def rx():
    with Receiver() as receiver:
        yield receiver


@pytest.fixture
def hooked(amo_sandbox, rx, tmp_path):
    adapter = adapter_for(amo_sandbox, tmp_path)
    text = adapter.install_hooks(rx.url)
    assert text.startswith("amoCRM webhook ") and "secret-token" not in text
    yield amo_sandbox, adapter
    adapter.close()


def live(ds, table, **where):
    return next(r for r in ds.rows(table) if not r["is_deleted"] and all(r[k] == v for k, v in where.items()))


def moved(ds, deal):
    pipeline = next(p for p in ds.pipelines if p["id"] == deal["pipeline_id"])
    return next(s["id"] for s in pipeline["stages"] if s["id"] != deal["stage_id"])


def test_install_edit_deliver_parse_and_read_back(hooked, rx):
    server, adapter = hooked
    listed = requests.get(
        server.url + "/api/v4/webhooks", timeout=5, headers={"Authorization": f"Bearer {server.access_token}"}
    ).json()
    assert [(h["destination"], h["settings"]) for h in listed["_embedded"]["webhooks"]] == [
        (rx.url, list(HOOK_EVENTS))
    ]
    ds = server.dataset
    deal = next(d for d in ds.deals if not d["is_deleted"] and len(d["contact_ids"]) > 1)
    ds.update("deals", deal["id"], name="Edited in amoCRM", amount=4321.0, stage_id=moved(ds, deal))
    update, status = rx.wait_for(2)  # an edit that moved the stage: two events
    assert adapter.parse_hook(update.pairs) == [Change("deals", deal["id"])]
    assert adapter.parse_hook(status.pairs) == [Change("deals", deal["id"])]
    before = adapter.requests
    page = adapter.read_changes(adapter.parse_hook(update.pairs))
    assert adapter.requests - before == 1
    (row,) = page.rows["deals"]
    assert (row["id"], row["name"], row["amount"]) == (deal["id"], "Edited in amoCRM", 4321.0)
    assert row["stage_id"] == server._status_id(deal["stage_id"])
    assert [(c["contact_id"], c["is_main"]) for c in page.rows["deal_contacts"]] == [
        (c, int(n == 0)) for n, c in enumerate(deal["contact_ids"])
    ]
    assert not page.deleted

    ds.delete("deals", deal["id"])
    deleted = rx.wait_for(3)[-1]
    assert adapter.parse_hook(deleted.pairs) == [Change("deals", deal["id"], deleted=True)]
    page = adapter.read_changes(adapter.parse_hook(deleted.pairs))
    assert page.deleted == {"deals": [deal["id"]]} and not page.rows

    assert adapter.remove_hooks(rx.url).endswith("removed")
    ds.update("deals", live(ds, "deals")["id"], name="nobody hears")
    assert server.deliverer.wait(5) and len(rx.got) == 3


def test_a_delivery_for_another_account_is_refused(hooked, rx):
    server, adapter = hooked
    deal = live(server.dataset, "deals")
    server.deliverer.forge(rx.url, server.hook_pairs("update_lead", deal["id"], account_id=31_000_002))
    server.deliverer.forge(rx.url, server.hook_pairs("update_lead", deal["id"], subdomain="rival"))
    other_id, other_sub = rx.wait_for(2)
    with pytest.raises(HookRefused, match="another account: account\\[id\\] 31000002"):
        adapter.parse_hook(other_id.pairs)
    with pytest.raises(HookRefused, match="account\\[subdomain\\] rival"):
        adapter.parse_hook(other_sub.pairs)


def test_our_field_write_comes_back_and_reads_back_with_its_value(hooked, rx):
    """The echo: a KPI written to a company is an `update_company` delivery like any edit."""
    server, adapter = hooked
    field = adapter.create_field("company", "KPI_WIN_RATE", "KPI: Win rate, %")
    company = live(server.dataset, "companies")
    [result] = adapter.write_values("company", [FieldWrite(company["id"], {field.key: 42.5})])
    assert result.ok
    (got,) = rx.wait_for(1)
    changes = adapter.parse_hook(got.pairs)
    assert changes == [Change("companies", company["id"])]
    (row,) = adapter.read_changes(changes).rows["companies"]
    values = {f["field_id"]: f["values"][0]["value"] for f in row["raw"]["custom_fields_values"]}
    assert values[int(field.key)] == "42.5"


@pytest.mark.parametrize("api_filter", [True, False], ids=["filter-add-on", "no-add-on"])
def test_changes_read_back_leave_the_mirror_as_a_fresh_sync_would(tmp_path, api_filter):
    with (
        AmoSandbox(generate(seed=3, size=600), limits=False, api_filter=api_filter) as server,
        Receiver() as rx,
    ):
        adapter = adapter_for(server, tmp_path)
        hooked_mirror = Mirror(str(tmp_path / "hooked.db"))
        try:
            assert all(r.status == "ok" for r in sync_source(hooked_mirror, adapter))
            adapter.install_hooks(rx.url)
            ds = server.dataset
            edited, gone = [d for d in ds.deals if not d["is_deleted"]][-2:]
            ds.update("deals", edited["id"], name="Moved on", stage_id=moved(ds, edited))
            ds.delete("deals", gone["id"])
            contact = live(ds, "contacts")
            ds.update("contacts", contact["id"], name="Renamed contact")
            company = live(ds, "companies")
            ds.delete("companies", company["id"])
            task = ds.add("tasks", text="Call back", entity_type="deal", entity_id=edited["id"])
            ds.update("tasks", live(ds, "tasks")["id"], text="New text")
            assert server.deliverer.wait(10)
            changes = [c for d in rx.got for c in adapter.parse_hook(d.pairs)]
            assert Change("tasks", task["id"]) in changes
            before = adapter.requests
            page = adapter.read_changes(changes)
            # one list request per table (deals, contacts, companies, tasks); without the
            # add-on, the two deleted cards are read alone too (unless on the whole list)
            assert adapter.requests - before <= (4 if api_filter else 6)
            assert page.deleted == {"deals": [gone["id"]], "companies": [company["id"]]}
            hooked_mirror.save_page("main", "webhooks", page)

            fresh = Mirror(str(tmp_path / "fresh.db"))
            try:
                with clock_ahead():  # the sandbox dates the burst of edits a few s ahead
                    results = sync_source(fresh, adapter, full=True)
                assert all(r.status == "ok" for r in results)
                for table in CARDS:
                    assert rows(hooked_mirror, table) == rows(fresh, table), table
            finally:
                fresh.close()
            deleted = dict(
                hooked_mirror.conn.execute(
                    "SELECT id, is_deleted FROM deals WHERE id IN (?, ?)", (gone["id"], edited["id"])
                )
            )
            assert deleted == {gone["id"]: 1, edited["id"]: 0}
        finally:
            hooked_mirror.close()
            adapter.close()


def rows(mirror, table):
    """A table's live rows (a full sync never sees the trash), every column."""
    cols = [c[1] for c in mirror.conn.execute(f"PRAGMA table_info([{table}])")]
    where = (
        " WHERE is_deleted = 0"
        if "is_deleted" in cols
        else " WHERE deal_id IN (SELECT id FROM deals WHERE is_deleted = 0)"
    )
    return mirror.conn.execute(f"SELECT * FROM [{table}]{where} ORDER BY 1, 2, 3").fetchall()
