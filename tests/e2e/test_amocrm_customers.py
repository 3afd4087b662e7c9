"""amoCRM Customers mode against the sandbox: a call to a contact with no open lead is filed
under its customer (calls API), so the customers' call notes are read too and filed under
the customer's main contact, else its company; accounts without customers are not asked."""

import pytest

from connector.mirror.store import Mirror
from connector.run.sync import sync_source
from sandbox.amocrm import AmoSandbox
from sandbox.data import generate
from tests.e2e.portal_scenarios import clock_ahead
from tests.e2e.test_amocrm_e2e import adapter_for, sync_later
from tests.fixtures_amocrm import get


def add_customers(ds) -> dict:
    """Three customers: two contacts and a company; a company only; nothing linked. Each gets
    one call (its note sits in /api/v4/customers/notes)."""
    c1, c2 = ds.contacts[0]["id"], ds.contacts[1]["id"]
    firm = ds.companies[0]["id"]
    out = {
        "both": ds.add("customers", name="Regular", contact_ids=[c1, c2], company_id=firm),
        "company": ds.add("customers", name="Firm only", company_id=firm),
        "bare": ds.add("customers", name="Nobody linked"),
    }
    for key, customer in out.items():
        out[key] = (
            customer,
            ds.add(
                "calls",
                direction="in",
                status="answered",
                duration_s=42,
                entity_type="customer",
                entity_id=customer["id"],
                phone="+79990000042",
                started_at=ds.tick(),
            ),
        )
    return out


@pytest.fixture
def customers_sandbox():
    ds = generate(seed=3, size=40)
    with AmoSandbox(ds, limits=False, customers_mode="segments") as server:
        yield server


def call_owner(mirror, call_id):
    return mirror.conn.execute("SELECT entity_type, entity_id FROM calls WHERE id = ?", (call_id,)).fetchone()


def test_sandbox_serves_customers_and_their_call_notes_only_in_customers_mode(customers_sandbox):
    server = customers_sandbox
    made = add_customers(server.dataset)
    headers = {"Authorization": f"Bearer {server.access_token}"}
    assert get(server, "/api/v4/account", headers).json()["customers_mode"] == "segments"
    notes = get(server, "/api/v4/customers/notes", headers, limit=250).json()["_embedded"]["notes"]
    customer, call = made["both"]
    note = next(n for n in notes if n["id"] == call["id"])
    assert (note["entity_id"], note["note_type"]) == (customer["id"], "call_in")
    one = get(server, f"/api/v4/customers/{customer['id']}", headers, **{"with": "contacts,companies"})
    emb = one.json()["_embedded"]
    assert [(c["id"], c["is_main"]) for c in emb["contacts"]] == [
        (customer["contact_ids"][0], True),
        (customer["contact_ids"][1], False),
    ]
    assert [c["id"] for c in emb["companies"]] == [customer["company_id"]]
    server.customers_mode = "disabled"
    assert get(server, "/api/v4/customers/notes", headers).status_code == 402


def test_customer_calls_are_filed_under_its_main_contact_else_its_company(customers_sandbox, tmp_path):
    server = customers_sandbox
    made = add_customers(server.dataset)
    adapter = adapter_for(server, tmp_path)
    mirror = Mirror(str(tmp_path / "mirror.db"))
    try:
        with clock_ahead():  # the calls were just stamped, a little ahead of the wall clock
            results = sync_source(mirror, adapter)
        assert {r.stream: r.status for r in results}["calls_customers"] == "ok"
        customer, call = made["both"]
        assert call_owner(mirror, call["id"]) == ("contact", customer["contact_ids"][0])
        customer, call = made["company"]
        assert call_owner(mirror, call["id"]) == ("company", customer["company_id"])
        customer, call = made["bare"]
        assert call_owner(mirror, call["id"]) == ("customer", customer["id"])
        activity = mirror.conn.execute(
            "SELECT channel, entity_type, entity_id FROM activities WHERE id = ?",
            (f"note:{made['both'][1]['id']}",),
        ).fetchone()
        assert activity == ("call", "contact", made["both"][0]["contact_ids"][0])
        # a call to a customer between runs comes with the next incremental sync
        later = server.dataset.add(
            "calls",
            direction="out",
            status="answered",
            duration_s=7,
            entity_type="customer",
            entity_id=made["company"][0]["id"],
            phone="+79990000043",
            started_at=server.dataset.tick(),
        )
        sync_later(mirror, adapter)
        assert call_owner(mirror, later["id"]) == ("company", made["company"][0]["company_id"])
    finally:
        adapter.close()
        mirror.close()


def test_accounts_without_customers_are_not_asked_for_customer_notes(amo_sandbox, tmp_path):
    assert amo_sandbox.customers_mode == "disabled"
    adapter = adapter_for(amo_sandbox, tmp_path)
    mirror = Mirror(str(tmp_path / "mirror.db"))
    try:
        results = sync_source(mirror, adapter)
        assert {r.stream: r.status for r in results}["calls_customers"] == "ok"
        assert not amo_sandbox.requests_to("/api/v4/customers")
    finally:
        adapter.close()
        mirror.close()


def test_a_customer_is_read_back_once_per_read_however_many_pages_name_it(customers_sandbox, tmp_path):
    server = customers_sandbox
    ds = server.dataset
    customer = ds.add("customers", name="Busy line", contact_ids=[ds.contacts[0]["id"]])
    for n in range(300):  # two pages of notes at 250 a page
        ds.add(
            "calls",
            direction="in",
            status="answered",
            duration_s=5,
            entity_type="customer",
            entity_id=customer["id"],
            phone="+79990000044",
            started_at=ds.now - 3600 + n,
        )
    adapter = adapter_for(server, tmp_path, streams=["calls_customers"])
    mirror = Mirror(str(tmp_path / "mirror.db"))
    try:
        sync_source(mirror, adapter)
        notes = [r for r in server.request_log if r["path"] == "/api/v4/customers/notes"]
        lists = [r for r in server.request_log if r["path"] == "/api/v4/customers"]
        assert len(notes) >= 2 and len(lists) == 1
        owners = mirror.conn.execute("SELECT DISTINCT entity_type, entity_id FROM calls").fetchall()
        assert owners == [("contact", ds.contacts[0]["id"])]
    finally:
        adapter.close()
        mirror.close()
