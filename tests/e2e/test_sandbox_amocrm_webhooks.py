"""The amoCRM sandbox's webhooks: registration through the API (and its validation), and the
deliveries a dataset change sends to a real local receiver, in amoCRM's documented form
shape; the delivery knobs (drop, repeat, delay, pause, forge) and failed deliveries."""

import time

import pytest
import requests

from sandbox.amocrm import AmoSandbox
from sandbox.amocrm.common import ACCOUNT_ID
from sandbox.deliver import FORM
from tests.e2e.hook_receiver import Receiver

LEAD_EVENTS = ["add_lead", "update_lead", "delete_lead", "restore_lead", "status_lead"]
CARD_EVENTS = [f"{a}_{e}" for e in ("contact", "company") for a in ("add", "update", "delete", "restore")]
TASK_EVENTS = ["add_task", "update_task", "delete_task"]


@pytest.fixture
def rx():
    with Receiver() as receiver:
        yield receiver


def hooks(server, method, headers, **kw):
    return requests.request(method, server.url + "/api/v4/webhooks", headers=headers, timeout=5, **kw)


def register(server, headers, url, settings):
    r = hooks(server, "POST", headers, json={"destination": url, "settings": settings})
    assert r.status_code == 201, r.text
    return r.json()


def live(ds, table):
    return next(r for r in ds.rows(table) if not r["is_deleted"])


def other_stage(ds, deal):
    pipeline = next(p for p in ds.pipelines if p["id"] == deal["pipeline_id"])
    return next(s["id"] for s in pipeline["stages"] if s["id"] != deal["stage_id"])


def keys(delivery):
    return [k for k, _ in delivery.pairs]


def test_register_list_update_and_delete_a_webhook(amo_sandbox, amo_headers, rx):
    hook = register(amo_sandbox, amo_headers, rx.url, ["update_lead"])
    assert {k: hook[k] for k in ("destination", "settings", "disabled", "account_id")} == {
        "destination": rx.url,
        "settings": ["update_lead"],
        "disabled": False,
        "account_id": ACCOUNT_ID,
    }
    assert {"id", "created_at", "updated_at", "created_by", "sort"} <= set(hook)
    # The same destination again: updated with the new settings, not a second webhook.
    again = register(amo_sandbox, amo_headers, rx.url, ["update_lead", "delete_lead"])
    assert again["id"] == hook["id"] and again["settings"] == ["update_lead", "delete_lead"]
    listed = hooks(amo_sandbox, "GET", amo_headers).json()
    assert listed["_total_items"] == 1
    assert [h["destination"] for h in listed["_embedded"]["webhooks"]] == [rx.url]
    one = hooks(amo_sandbox, "GET", amo_headers, params={"filter[destination]": rx.url})
    assert one.status_code == 200
    assert (
        hooks(amo_sandbox, "GET", amo_headers, params={"filter[destination]": rx.url + "x"}).status_code
        == 204
    )
    assert hooks(amo_sandbox, "DELETE", amo_headers, json={"destination": rx.url}).status_code == 204
    assert hooks(amo_sandbox, "GET", amo_headers).status_code == 204  # an empty list
    assert hooks(amo_sandbox, "DELETE", amo_headers, json={"destination": rx.url}).status_code == 404


@pytest.mark.parametrize(
    "body, path",
    [
        ({"settings": ["update_lead"]}, "destination"),
        ({"destination": "", "settings": ["update_lead"]}, "destination"),
        ({"destination": "not a url", "settings": ["update_lead"]}, "destination"),
        ({"destination": "ftp://example.com/x", "settings": ["update_lead"]}, "destination"),
        ({"destination": "https://пример.рф/hook", "settings": ["update_lead"]}, "destination"),
        ({"destination": "https://example.com/hook"}, "settings"),
        ({"destination": "https://example.com/hook", "settings": []}, "settings"),
        ({"destination": "https://example.com/hook", "settings": "update_lead"}, "settings"),
        ({"destination": "https://example.com/hook", "settings": ["update_lead", "edit_lead"]}, "settings.1"),
    ],
    ids=[
        "no-destination",
        "empty",
        "not-url",
        "ftp",
        "cyrillic-domain",
        "no-settings",
        "no-events",
        "settings-not-list",
        "unknown-event",
    ],
)
def test_bad_registration_is_a_400_problem(amo_sandbox, amo_headers, body, path):
    r = hooks(amo_sandbox, "POST", amo_headers, json=body)
    assert r.status_code == 400
    assert r.headers["Content-Type"].startswith("application/problem+json")
    problem = r.json()
    assert problem["status"] == 400 and problem["detail"] == "Request validation failed"
    assert path in [e["path"] for g in problem["validation-errors"] for e in g["errors"]]
    assert hooks(amo_sandbox, "GET", amo_headers).status_code == 204  # nothing registered


def test_bad_bodies_rights_and_unsubscribing(amo_sandbox, amo_headers):
    r = hooks(
        amo_sandbox,
        "POST",
        {**amo_headers, "Content-Type": FORM},
        data="destination=https://example.com&settings[]=add_lead",
    )
    assert r.status_code == 400
    assert hooks(amo_sandbox, "DELETE", amo_headers, json={}).status_code == 400
    assert (
        hooks(
            amo_sandbox, "POST", {}, json={"destination": "https://example.com", "settings": ["add_lead"]}
        ).status_code
        == 401
    )
    amo_sandbox.is_admin = False  # the webhooks API is for account admins only
    for method, body in (
        ("GET", None),
        ("POST", {"destination": "https://example.com", "settings": ["add_lead"]}),
        ("DELETE", {"destination": "https://example.com"}),
    ):
        assert hooks(amo_sandbox, method, amo_headers, json=body).status_code == 403


def test_an_edited_deal_is_delivered_in_the_documented_form_shape(amo_sandbox, amo_headers, rx):
    register(amo_sandbox, amo_headers, rx.url, ["update_lead"])
    ds = amo_sandbox.dataset
    deal = live(ds, "deals")
    started = time.monotonic()
    ds.update("deals", deal["id"], name="Renamed by a manager", amount=1234.0)
    assert time.monotonic() - started < 0.5  # the change never waits for a delivery
    (got,) = rx.wait_for(1)
    assert got.path == "/hooks/amocrm/secret-token-1234"
    assert got.content_type == "application/x-www-form-urlencoded"
    assert got.get("leads[update][0][id]") == str(deal["id"])
    assert got.get("leads[update][0][name]") == "Renamed by a manager"
    assert got.get("leads[update][0][price]") == "1234"
    assert got.get("leads[update][0][pipeline_id]") == str(deal["pipeline_id"])
    assert got.get("leads[update][0][last_modified]") == str(deal["updated_at"])
    assert got.get("account[id]") == str(ACCOUNT_ID)
    assert got.get("account[subdomain]") == "sandbox"
    assert got.get("account[_links][self]") == amo_sandbox.url
    assert keys(got)[-3:] == ["account[subdomain]", "account[id]", "account[_links][self]"]
    assert amo_sandbox.deliverer.wait(5)
    assert [(e["url"], e["status"], e["ok"]) for e in amo_sandbox.deliverer.sent] == [(rx.url, 200, True)]


def test_a_stage_move_is_an_update_and_a_status_change(amo_sandbox, amo_headers, rx):
    register(amo_sandbox, amo_headers, rx.url, LEAD_EVENTS)
    ds = amo_sandbox.dataset
    deal = live(ds, "deals")
    old = amo_sandbox._status_id(deal["stage_id"])
    ds.update("deals", deal["id"], stage_id=other_stage(ds, deal))
    update, status = rx.wait_for(2)
    assert update.get("leads[update][0][id]") == str(deal["id"])
    assert status.get("leads[status][0][id]") == str(deal["id"])
    assert status.get("leads[status][0][status_id]") == str(amo_sandbox._status_id(deal["stage_id"]))
    assert status.get("leads[status][0][old_status_id]") == str(old)
    assert status.get("leads[status][0][pipeline_id]") == str(deal["pipeline_id"])
    ds.update("deals", deal["id"], name="No move")  # an edit alone: no status_lead
    assert amo_sandbox.deliverer.wait(5) and len(rx.got) == 3
    assert keys(rx.got[2])[0] == "leads[update][0][id]"


def test_deletions_restores_and_companies_under_contacts(amo_sandbox, amo_headers, rx):
    register(amo_sandbox, amo_headers, rx.url, LEAD_EVENTS + CARD_EVENTS + TASK_EVENTS)
    ds = amo_sandbox.dataset
    deal, contact, company = live(ds, "deals"), live(ds, "contacts"), live(ds, "companies")
    ds.delete("deals", deal["id"])
    ds.restore("deals", deal["id"])
    ds.delete("contacts", contact["id"])
    ds.update("companies", company["id"], name="Renamed company")
    ds.delete("companies", company["id"])
    got = rx.wait_for(5)
    assert amo_sandbox.deliverer.wait(5) and len(rx.got) == 5
    # A deletion carries the id only (plus the type of a contact or company).
    assert got[0].pairs[:-3] == [("leads[delete][0][id]", str(deal["id"]))]
    assert got[1].get("leads[restore][0][id]") == str(deal["id"])
    assert got[2].pairs[:-3] == [
        ("contacts[delete][0][id]", str(contact["id"])),
        ("contacts[delete][0][type]", "contact"),
    ]
    # Companies come under `contacts`, told apart by their type.
    assert got[3].get("contacts[update][0][id]") == str(company["id"])
    assert got[3].get("contacts[update][0][type]") == "company"
    assert got[3].get("contacts[update][0][name]") == "Renamed company"
    assert got[4].pairs[:-3] == [
        ("contacts[delete][0][id]", str(company["id"])),
        ("contacts[delete][0][type]", "company"),
    ]
    assert not [k for d in got for k, _ in d.pairs if k.startswith("companies[")]


def test_tasks_come_under_task(amo_sandbox, amo_headers, rx):
    register(amo_sandbox, amo_headers, rx.url, TASK_EVENTS)
    ds = amo_sandbox.dataset
    task = next(t for t in ds.tasks if not t["is_deleted"] and not t["is_completed"])
    ds.update("tasks", task["id"], is_completed=True)
    new = ds.add("tasks", text="Call back", entity_type="deal", entity_id=live(ds, "deals")["id"])
    ds.delete("tasks", task["id"])
    done, added, deleted = rx.wait_for(3)
    assert done.get("task[update][0][id]") == str(task["id"])
    assert done.get("task[update][0][status]") == "1"
    assert done.get("task[update][0][action_close]") == "1"
    assert len(done.get("task[update][0][complete_till]")) == len("2017-07-22 23:59:00")
    assert added.get("task[add][0][id]") == str(new["id"])
    assert added.get("task[add][0][element_type]") == "2"  # a lead
    assert deleted.pairs[:-3] == [("task[delete][0][id]", str(task["id"]))]


def test_only_subscribed_events_to_each_destination_and_none_after_unsubscribing(amo_sandbox, amo_headers):
    with Receiver() as deals_rx, Receiver() as cards_rx:
        register(amo_sandbox, amo_headers, deals_rx.url, ["update_lead"])
        register(amo_sandbox, amo_headers, cards_rx.url, ["update_contact"])
        ds = amo_sandbox.dataset
        deal, contact = live(ds, "deals"), live(ds, "contacts")
        ds.update("deals", deal["id"], name="x")
        ds.update("contacts", contact["id"], name="y")
        ds.update("companies", live(ds, "companies")["id"], name="z")  # nobody subscribed
        ds.delete("deals", deal["id"])  # nor to deletions
        assert amo_sandbox.deliverer.wait(5)
        assert [d.get("leads[update][0][id]") for d in deals_rx.got] == [str(deal["id"])]
        assert [d.get("contacts[update][0][id]") for d in cards_rx.got] == [str(contact["id"])]
        assert cards_rx.got[0].get("contacts[update][0][type]") == "contact"
        hooks(amo_sandbox, "DELETE", amo_headers, json={"destination": cards_rx.url})
        ds.update("contacts", contact["id"], name="after")
        assert amo_sandbox.deliverer.wait(5) and len(cards_rx.got) == 1


def test_our_own_field_write_comes_back_as_an_update(amo_sandbox, amo_headers, rx):
    """The echo: a KPI written to a contact through the API is an edit like any other."""
    register(amo_sandbox, amo_headers, rx.url, ["update_contact", "update_company"])
    ds = amo_sandbox.dataset
    field = ds.add_field("contact", "KPI: calls", "numeric", code="KPI_CALLS")
    contact = live(ds, "contacts")
    r = requests.patch(
        amo_sandbox.url + "/api/v4/contacts",
        headers=amo_headers,
        timeout=5,
        json=[
            {
                "id": contact["id"],
                "custom_fields_values": [{"field_id": field["id"], "values": [{"value": "17"}]}],
            }
        ],
    )
    assert r.status_code == 200, r.text
    (got,) = rx.wait_for(1)
    assert got.get("contacts[update][0][id]") == str(contact["id"])
    assert got.get("contacts[update][0][type]") == "contact"
    n = next(
        k.split("[")[4].rstrip("]")
        for k, v in got.pairs
        if k.endswith("][id]") and "custom_fields" in k and v == str(field["id"])
    )
    assert got.get(f"contacts[update][0][custom_fields][{n}][values][0][value]") == "17"
    assert got.get(f"contacts[update][0][custom_fields][{n}][code]") == "KPI_CALLS"


def test_drop_repeat_delay_pause_and_forge(amo_sandbox, amo_headers, rx):
    register(amo_sandbox, amo_headers, rx.url, ["update_lead"])
    ds, d = amo_sandbox.dataset, amo_sandbox.deliverer
    deal = live(ds, "deals")
    d.drop_next(1)
    ds.update("deals", deal["id"], name="lost")
    ds.update("deals", deal["id"], name="kept")
    assert d.wait(5)
    assert [g.get("leads[update][0][name]") for g in rx.got] == ["kept"]
    assert [(e["dropped"], e["status"]) for e in d.sent] == [(True, None), (False, 200)]

    d.repeat = True
    ds.update("deals", deal["id"], name="twice")
    assert d.wait(5)
    d.repeat = False
    assert [g.get("leads[update][0][name]") for g in rx.got[1:]] == ["twice", "twice"]

    d.pause()
    ds.update("deals", deal["id"], name="held")
    assert not d.wait(0.3) and d.pending == 1 and len(rx.got) == 3
    d.resume()
    assert d.wait(5) and rx.got[-1].get("leads[update][0][name]") == "held"

    d.delay_s = 0.4
    started = time.monotonic()
    ds.update("deals", deal["id"], name="late")
    assert time.monotonic() - started < 0.2  # the change does not wait for the delay
    assert len(rx.got) == 4
    rx.wait_for(5)
    assert time.monotonic() - started >= 0.4
    d.delay_s = 0

    forged = amo_sandbox.hook_pairs("update_lead", deal["id"], account_id=999, subdomain="evil")
    d.forge(rx.url, forged)
    got = rx.wait_for(6)[-1]
    assert (got.get("account[id]"), got.get("account[subdomain]")) == ("999", "evil")
    assert got.get("leads[update][0][id]") == str(deal["id"])
    assert d.wait(5) and d.sent[-1]["forged"] is True


def test_failed_deliveries_are_logged_and_lost_and_too_many_disable_the_webhook(amo_sandbox, amo_headers):
    with Receiver(status=500) as failing:
        register(amo_sandbox, amo_headers, failing.url, ["update_lead"])
        deal = live(amo_sandbox.dataset, "deals")
        amo_sandbox.dataset.update("deals", deal["id"], name="x")
        failing.wait_for(1)
        assert amo_sandbox.deliverer.wait(5)
        assert [(e["status"], e["ok"]) for e in amo_sandbox.deliverer.sent] == [(500, False)]
        hooks(amo_sandbox, "DELETE", amo_headers, json={"destination": failing.url})
    closed = failing.url  # the receiver is gone: connection refused
    register(amo_sandbox, amo_headers, closed, ["update_lead"])
    amo_sandbox.deliverer.sent.clear()
    for n in range(101):
        amo_sandbox.dataset.update("deals", deal["id"], name=f"n{n}")
    assert amo_sandbox.deliverer.wait(20)
    sent = amo_sandbox.deliverer.sent
    assert len(sent) == 101 and not any(e["ok"] for e in sent)
    assert all(e["status"] is None and e["error"] for e in sent)
    listed = hooks(amo_sandbox, "GET", amo_headers).json()["_embedded"]["webhooks"]
    assert [h["disabled"] for h in listed] == [True]  # more than 100 failures in 2 h
    amo_sandbox.dataset.update("deals", deal["id"], name="no more")
    assert amo_sandbox.deliverer.wait(5) and len(sent) == 101
    amo_sandbox.enable_webhook(closed)
    amo_sandbox.dataset.update("deals", deal["id"], name="again")
    assert amo_sandbox.deliverer.wait(5) and len(sent) == 102


def test_a_stopped_sandbox_sends_nothing_until_started_again(amo_dataset, rx):
    server = AmoSandbox(amo_dataset, limits=False).start()
    headers = {"Authorization": f"Bearer {server.access_token}"}
    register(server, headers, rx.url, ["update_lead"])
    server.stop()
    deal = live(amo_dataset, "deals")
    amo_dataset.update("deals", deal["id"], name="while stopped")
    assert [(e["error"], e["status"]) for e in server.deliverer.sent] == [("closed", None)]
    server.start()
    try:
        amo_dataset.update("deals", deal["id"], name="started again")
        assert rx.wait_for(1)[0].get("leads[update][0][name]") == "started again"
    finally:
        server.stop()
