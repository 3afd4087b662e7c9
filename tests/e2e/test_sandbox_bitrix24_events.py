"""The Bitrix24 sandbox's events over HTTP: event.bind and friends (app context only), online
deliveries from the queue server, offline events, outgoing webhooks, and the test knobs."""

from __future__ import annotations

import time

import pytest
import requests

from sandbox.bitrix24 import Bitrix24Sandbox
from tests.hook_receiver import Receiver


@pytest.fixture
def srv(b24_dataset):
    with Bitrix24Sandbox(b24_dataset, limits=False) as s:
        yield s


@pytest.fixture
def rx():
    with Receiver() as r:
        yield r


def app_token(s) -> str:
    return requests.get(
        s.oauth_url,
        params={
            "grant_type": "authorization_code",
            "client_id": "sandbox.app",
            "client_secret": "sandbox-secret",
            "code": s.issue_code(),
        },
    ).json()["access_token"]


class App:
    """Calls as the OAuth application."""

    def __init__(self, s):
        self.s, self.token = s, app_token(s)

    def call(self, method: str, **params) -> dict:
        return requests.post(f"{self.s.url}/rest/{method}", json={**params, "auth": self.token}).json()

    def result(self, method: str, **params):
        body = self.call(method, **params)
        assert "error" not in body, body
        return body["result"]


def dead_url() -> str:
    r = Receiver()
    r.close()
    return r.url


# ---- app context only --------------------------------------------------------------------


@pytest.mark.parametrize(
    "method", ["event.bind", "event.unbind", "event.get", "event.offline.get", "event.offline.clear"]
)
def test_event_methods_refuse_an_incoming_webhook(srv, method):
    r = requests.post(
        srv.webhook_url + method, json={"event": "ONCRMDEALUPDATE", "handler": "http://127.0.0.1:9/x"}
    )
    assert r.status_code == 403
    assert r.json()["error"] == "WRONG_AUTH_TYPE"


def test_event_bind_in_a_webhook_batch_fails_that_sub_call(srv):
    body = requests.post(
        srv.webhook_url + "batch",
        json={
            "cmd": {
                "b": "event.bind?event=ONCRMDEALUPDATE&handler=http%3A%2F%2F127.0.0.1%3A9%2Fx",
                "p": "profile",
            }
        },
    ).json()["result"]
    assert body["result_error"]["b"]["error"] == "WRONG_AUTH_TYPE"
    assert "p" in body["result"]
    assert srv.events.bindings == {}


def test_bind_get_unbind(srv, rx):
    app = App(srv)
    assert app.result("event.bind", event="ONCRMDEALUPDATE", handler=rx.url) is True
    assert app.result("event.bind", event="onCrmDealAdd", handler=rx.url) is True
    assert app.result("event.bind", event="ONCRMDEALUPDATE", event_type="offline") is True
    again = app.call("event.bind", event="ONCRMDEALUPDATE", handler=rx.url)
    assert again["error"] == "ERROR_CORE" and "already" in again["error_description"]
    assert app.call("event.bind", event="ONNOSUCHTHING", handler=rx.url)["error"] == "ERROR_EVENT_NOT_FOUND"
    assert app.result("event.get") == [
        {"event": "ONCRMDEALUPDATE", "handler": rx.url, "auth_type": "0", "offline": 0},
        {"event": "ONCRMDEALADD", "handler": rx.url, "auth_type": "0", "offline": 0},
        {"event": "ONCRMDEALUPDATE", "handler": "", "auth_type": "0", "offline": 1},
    ]
    assert app.result("event.unbind", event="ONCRMDEALUPDATE", handler=rx.url) == {"count": 1}
    assert app.result("event.unbind", event="ONCRMDEALUPDATE", event_type="offline") == {"count": 1}
    assert [b["event"] for b in app.result("event.get")] == ["ONCRMDEALADD"]


# ---- online deliveries --------------------------------------------------------------------


def test_a_deal_update_is_delivered_in_the_documented_shape(srv, b24_dataset, rx):
    app = App(srv)
    app.result("event.bind", event="ONCRMDEALUPDATE", handler=rx.url)
    deal = b24_dataset.deals[0]["id"]
    b24_dataset.update("deals", deal, name="Renamed")
    pairs = rx.wait(1)[0]
    assert [k for k, _ in pairs] == [
        "event",
        "event_handler_id",
        "data[FIELDS][ID]",
        "ts",
        "auth[domain]",
        "auth[client_endpoint]",
        "auth[server_endpoint]",
        "auth[member_id]",
        "auth[scope]",
        "auth[status]",
        "auth[application_token]",
    ]
    d = dict(pairs)
    assert d["event"] == "ONCRMDEALUPDATE" and d["data[FIELDS][ID]"] == str(deal)
    assert d["auth[application_token]"] == srv.application_token
    assert d["auth[client_endpoint]"] == srv.client_endpoint and d["auth[scope]"] == "crm"
    assert abs(int(d["ts"]) - time.time()) < 60
    assert "auth[access_token]" not in d and "auth[refresh_token]" not in d


def test_tasks_carry_fields_before_and_after(srv, b24_dataset, rx):
    app = App(srv)
    for e in ("ONTASKADD", "ONTASKUPDATE", "ONTASKDELETE"):
        app.result("event.bind", event=e, handler=rx.url)
    t = b24_dataset.add("tasks", text="Call back")["id"]
    b24_dataset.update("tasks", t, is_completed=True)
    b24_dataset.delete("tasks", t)
    add, upd, dele = (dict(p) for p in rx.wait(3))
    assert add["event"] == "ONTASKADD" and add["data[FIELDS_AFTER][ID]"] == str(t)
    assert add["data[FIELDS_BEFORE]"] == "undefined" and add["auth[scope]"] == "task"
    assert upd["data[FIELDS_BEFORE][ID]"] == upd["data[FIELDS_AFTER][ID]"] == str(t)
    assert dele["event"] == "ONTASKDELETE" and dele["data[FIELDS_BEFORE][ID]"] == str(t)
    assert dele["data[FIELDS_AFTER]"] == "undefined" and "data[FIELDS][ID]" not in dele


def test_activities_and_calls_come_as_activity_events(srv, b24_dataset, rx):
    app = App(srv)
    app.result("event.bind", event="ONCRMACTIVITYUPDATE", handler=rx.url)
    call = next(c for c in b24_dataset.calls if c.get("activity_id"))
    b24_dataset.update("calls", call["id"], duration_s=99)
    act = b24_dataset.activities[0]["id"]
    b24_dataset.update("activities", act, subject="Re: re:")
    first, second = (dict(p) for p in rx.wait(2))
    assert first["event"] == "onCrmActivityUpdate"  # spelled as the event's page spells it
    assert first["data[FIELDS][ID]"] == str(call["activity_id"])
    assert second["data[FIELDS][ID]"] == str(act)


def test_one_write_back_call_is_one_update_event_the_echo(srv, b24_dataset, rx):
    """Our own crm.contact.update of KPI fields comes back as ONCRMCONTACTUPDATE, once."""
    app = App(srv)
    app.result("event.bind", event="ONCRMCONTACTUPDATE", handler=rx.url)
    for code in ("KPI_A", "KPI_B"):
        app.result("crm.contact.userfield.add", fields={"FIELD_NAME": code, "USER_TYPE_ID": "double"})
    contact = b24_dataset.contacts[0]["id"]
    app.result("crm.contact.update", id=contact, fields={"UF_CRM_KPI_A": 1.5, "UF_CRM_KPI_B": 2})
    assert dict(rx.wait(1)[0])["data[FIELDS][ID]"] == str(contact)
    srv.deliveries.wait_idle()
    assert len(rx.got) == 1


def test_a_slow_handler_never_holds_the_request_that_caused_the_event(srv, b24_dataset):
    with Receiver(hold_s=1.5) as slow:
        app = App(srv)
        app.result("event.bind", event="ONCRMCONTACTUPDATE", handler=slow.url)
        app.result("crm.contact.userfield.add", fields={"FIELD_NAME": "KPI_A", "USER_TYPE_ID": "double"})
        contact = b24_dataset.contacts[0]["id"]
        t0 = time.monotonic()
        app.result("crm.contact.update", id=contact, fields={"UF_CRM_KPI_A": 3})
        assert time.monotonic() - t0 < 1.0
        assert not slow.got
        slow.wait(1)


def test_failed_deliveries_are_lost(srv, b24_dataset):
    app = App(srv)
    down = dead_url()
    with Receiver(status=500) as failing:
        app.result("event.bind", event="ONCRMDEALUPDATE", handler=down)
        app.result("event.bind", event="ONCRMDEALUPDATE", handler=failing.url)
        b24_dataset.update("deals", b24_dataset.deals[0]["id"], name="X")
        assert srv.deliveries.wait_idle()
        assert failing.wait(1)
        log = {e["url"]: e for e in srv.deliveries.sent}
        assert log[down]["status"] is None and log[down]["error"]
        assert log[failing.url]["status"] == 500
        time.sleep(0.3)
        assert len(srv.deliveries.sent) == 2 and len(failing.got) == 1  # never resent


def test_unbound_handlers_get_nothing(srv, b24_dataset, rx):
    app = App(srv)
    app.result("event.bind", event="ONCRMDEALUPDATE", handler=rx.url)
    app.result("event.unbind", event="ONCRMDEALUPDATE", handler=rx.url)
    b24_dataset.update("deals", b24_dataset.deals[0]["id"], name="X")
    b24_dataset.update("contacts", b24_dataset.contacts[0]["id"], name="Y")
    assert srv.deliveries.wait_idle() and rx.got == [] and srv.deliveries.sent == []


# ---- knobs --------------------------------------------------------------------------------


def test_knobs_drop_repeat_forge_pause(srv, b24_dataset, rx):
    app = App(srv)
    app.result("event.bind", event="ONCRMDEALUPDATE", handler=rx.url)
    deals = [d["id"] for d in b24_dataset.deals[:4]]
    q = srv.deliveries
    q.drop_next(1)
    b24_dataset.update("deals", deals[0], name="lost")
    q.repeat_next(1)
    b24_dataset.update("deals", deals[1], name="twice")
    assert q.wait_idle()
    assert [dict(p)["data[FIELDS][ID]"] for p in rx.got] == [str(deals[1])] * 2
    assert q.sent[0]["dropped"] and q.sent[2]["repeat"]

    q.forge(
        rx.url,
        [
            ("event", "ONCRMDEALUPDATE"),
            ("data[FIELDS][ID]", str(deals[2])),
            ("auth[application_token]", "not-the-apps"),
        ],
    )
    assert dict(rx.wait(3)[2])["auth[application_token]"] == "not-the-apps"
    assert q.wait_idle() and q.sent[-1]["forged"]

    q.pause()
    b24_dataset.update("deals", deals[3], name="held")
    time.sleep(0.3)
    assert len(rx.got) == 3  # held, not lost
    q.delay_s = 0.2
    q.resume()
    assert dict(rx.wait(4)[3])["data[FIELDS][ID]"] == str(deals[3])


# ---- offline events -----------------------------------------------------------------------


def test_offline_queue_keeps_one_entry_per_object_with_the_latest_change(srv, b24_dataset):
    app = App(srv)
    for e in ("ONCRMDEALUPDATE", "ONCRMDEALDELETE", "ONCRMCONTACTUPDATE"):
        app.result("event.bind", event=e, event_type="offline")
    a, b = (d["id"] for d in b24_dataset.deals[:2])
    for i in range(3):
        b24_dataset.update("deals", a, name=f"a{i}")
    b24_dataset.update("deals", b, name="b")
    b24_dataset.delete("deals", b)
    b24_dataset.add("deals", name="not bound offline")  # ONCRMDEALADD: no binding
    got = app.result("event.offline.get", clear=0)
    assert got["process_id"]
    events = {e["EVENT_DATA"]["FIELDS"]["ID"]: e for e in got["events"]}
    assert set(events) == {str(a), str(b)}
    assert events[str(a)]["EVENT_NAME"] == "ONCRMDEALUPDATE"
    assert events[str(b)]["EVENT_NAME"] == "ONCRMDEALDELETE"
    assert set(events[str(a)]) == {
        "ID",
        "TIMESTAMP_X",
        "EVENT_NAME",
        "EVENT_DATA",
        "EVENT_ADDITIONAL",
        "MESSAGE_ID",
    }


def test_offline_get_clear_and_processes(srv, b24_dataset):
    app = App(srv)
    app.result("event.bind", event="ONCRMCONTACTUPDATE", event_type="offline")
    ids = [c["id"] for c in b24_dataset.contacts[:3]]
    for cid in ids:
        b24_dataset.update("contacts", cid, name="n")
    first = app.result("event.offline.get", clear=0, limit=2)
    assert len(first["events"]) == 2
    hidden = app.result("event.offline.get", clear=0, process_id=first["process_id"])
    assert hidden["process_id"] == first["process_id"] and len(hidden["events"]) == 1
    assert app.result("event.offline.get", clear=0)["events"] == []  # all handed out
    # a change after the read makes a new entry: the process's stale one can go
    b24_dataset.update("contacts", ids[0], name="again")
    one = first["events"][0]
    assert app.result("event.offline.clear", process_id=first["process_id"], id=[one["ID"]]) is True
    assert len(srv.events.queue) == 3
    assert app.result("event.offline.clear", process_id=first["process_id"]) is True
    assert len(srv.events.queue) == 1
    assert app.call("event.offline.clear")["error"] == "ERROR_ARGUMENT"
    # clear=1 (the default) deletes what it returns
    got = app.result("event.offline.get")
    assert got["process_id"] is None and [e["EVENT_DATA"]["FIELDS"]["ID"] for e in got["events"]] == [
        str(ids[0])
    ]
    assert srv.events.queue == []


def test_offline_filter_and_order(srv, b24_dataset):
    app = App(srv)
    app.result("event.bind", event="ONCRMDEALUPDATE", event_type="offline")
    app.result("event.bind", event="ONCRMLEADUPDATE", event_type="offline")
    deals = [d["id"] for d in b24_dataset.deals[:3]]
    for d in deals:
        b24_dataset.update("deals", d, name="x")
    b24_dataset.update("leads", b24_dataset.leads[0]["id"], title="y")
    got = app.result("event.offline.get", clear=0, filter={"=EVENT_NAME": "ONCRMLEADUPDATE"})
    assert [e["EVENT_NAME"] for e in got["events"]] == ["ONCRMLEADUPDATE"]
    desc = app.result("event.offline.get", clear=0, order={"ID": "DESC"})
    assert [e["EVENT_DATA"]["FIELDS"]["ID"] for e in desc["events"]] == [str(d) for d in reversed(deals)]
    assert app.call("event.offline.get", filter={"NOPE": 1})["error"] == "ERROR_ARGUMENT"


def test_a_write_with_the_bindings_auth_connector_is_not_recorded(srv, b24_dataset):
    app = App(srv)
    app.result("event.bind", event="ONCRMCONTACTUPDATE", event_type="offline", auth_connector="ours")
    app.result("crm.contact.userfield.add", fields={"FIELD_NAME": "KPI_A", "USER_TYPE_ID": "double"})
    a, b = (c["id"] for c in b24_dataset.contacts[:2])
    app.result("crm.contact.update", id=a, fields={"UF_CRM_KPI_A": 1}, auth_connector="ours")
    app.result("crm.contact.update", id=b, fields={"UF_CRM_KPI_A": 1})
    got = app.result("event.offline.get")
    assert [e["EVENT_DATA"]["FIELDS"]["ID"] for e in got["events"]] == [str(b)]


# ---- outgoing webhooks --------------------------------------------------------------------


def test_an_outgoing_webhook_delivers_with_its_own_token(srv, b24_dataset, rx):
    token = srv.add_outgoing_webhook(rx.url, ["ONCRMDEALUPDATE", "ONCRMDEALDELETE"])
    assert token != srv.application_token
    deal = b24_dataset.deals[0]["id"]
    b24_dataset.update("deals", deal, name="X")
    b24_dataset.update("contacts", b24_dataset.contacts[0]["id"], name="not chosen")
    b24_dataset.delete("deals", deal)
    upd, dele = rx.wait(2)
    assert [k for k, _ in upd] == [
        "event",
        "data[FIELDS][ID]",
        "ts",
        "auth[domain]",
        "auth[member_id]",
        "auth[application_token]",
    ]
    assert dict(upd)["auth[application_token]"] == token
    assert dict(dele)["event"] == "ONCRMDEALDELETE"
    srv.deliveries.wait_idle()
    assert len(rx.got) == 2
