"""Bitrix24 event deliveries, read-back by id, handler binding and the offline queue, on
recorded-shape payloads (`responses` mocks, no server)."""

from __future__ import annotations

import json
import math
from urllib.parse import parse_qsl, urlsplit

import pytest
import responses

from adapters.bitrix24 import events
from adapters.bitrix24 import parsers as p
from adapters.bitrix24 import streams as st
from adapters.bitrix24.adapter import Bitrix24Adapter
from adapters.errors import SourceError, StreamError
from adapters.hooks import Change, HookRefused
from adapters.streams import Ctx, records
from connector.mirror.tokens import TokenStore
from tests.unit import b24_adapters
from tests.unit.b24_adapters import HOOK

PORTAL = "https://portal.example.com"
TOKEN = "51856fefc120afa4b628cc82d3935cce"


def adapter(**kw) -> Bitrix24Adapter:
    return b24_adapters.adapter(**{"application_token": TOKEN, **kw})


def oauth_adapter(tmp_path, **kw) -> Bitrix24Adapter:
    tokens = TokenStore(str(tmp_path / "t.json"))
    tokens.save("b24", {"access_token": "access-1", "refresh_token": "refresh-1"})
    return b24_adapters.adapter(
        tokens,
        portal_url=PORTAL,
        client_id="app",
        client_secret="shh-secret",
        **{"application_token": TOKEN, **kw},
    )


def delivery(event: str, data: list[tuple[str, str]], token: str = TOKEN) -> list[tuple[str, str]]:
    return [
        ("event", event),
        ("event_handler_id", "12"),
        *data,
        ("ts", "1736405807"),
        ("auth[domain]", "portal.example.com"),
        ("auth[client_endpoint]", PORTAL + "/rest/"),
        ("auth[server_endpoint]", "https://oauth.bitrix.info/rest/"),
        ("auth[member_id]", "a223c6b3710f85df22e9377d6c4f7553"),
        ("auth[application_token]", token),
    ]


def fields(oid) -> list[tuple[str, str]]:
    return [("data[FIELDS][ID]", str(oid))]


# ---- parse_hook ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "event,data,change",
    [
        ("ONCRMDEALUPDATE", fields(759), Change("deals", 759)),
        ("ONCRMDEALADD", fields(760), Change("deals", 760)),
        ("ONCRMDEALDELETE", fields(1765), Change("deals", 1765, True)),
        ("ONCRMDEALMOVETOCATEGORY", fields(761), Change("deals", 761)),
        ("ONCRMLEADADD", fields(5), Change("leads", 5)),
        ("ONCRMCONTACTUPDATE", fields(82), Change("contacts", 82)),
        ("ONCRMCOMPANYDELETE", fields(4), Change("companies", 4, True)),
        ("onCrmActivityUpdate", fields(999), Change("activities", 999)),
        ("ONCRMACTIVITYADD", fields(998), Change("activities", 998)),
        (
            "ONTASKADD",
            [
                ("data[FIELDS_BEFORE]", "undefined"),
                ("data[FIELDS_AFTER][ID]", "123"),
                ("data[IS_ACCESSIBLE_BEFORE]", "N"),
                ("data[IS_ACCESSIBLE_AFTER]", "undefined"),
            ],
            Change("tasks", 123),
        ),
        (
            "ONTASKUPDATE",
            [("data[FIELDS_BEFORE][ID]", "123"), ("data[FIELDS_AFTER][ID]", "123")],
            Change("tasks", 123),
        ),
        (
            "ONTASKDELETE",
            [
                ("data[FIELDS_BEFORE][ID]", "124"),
                ("data[FIELDS_AFTER]", "undefined"),
                ("data[IS_ACCESSIBLE_BEFORE]", "undefined"),
                ("data[IS_ACCESSIBLE_AFTER]", "N"),
            ],
            Change("tasks", 124, True),
        ),
    ],
)
def test_deliveries_become_changes(event, data, change):
    assert adapter().parse_hook(delivery(event, data)) == [change]


def test_an_outgoing_webhooks_short_auth_is_enough():
    pairs = [
        ("event", "ONCRMDEALUPDATE"),
        ("data[FIELDS][ID]", "662"),
        ("ts", "1724140800"),
        ("auth[domain]", "example.bitrix24.com"),
        ("auth[member_id]", "x" * 32),
        ("auth[application_token]", TOKEN),
    ]
    assert adapter().parse_hook(pairs) == [Change("deals", 662)]


@pytest.mark.parametrize(
    "event", ["ONAPPINSTALL", "ONCRMQUOTEUPDATE", "ONCRMDEALUSERFIELDADD", "ONTASKCOMMENTADD"]
)
def test_events_the_mirror_does_not_follow_name_nothing(event):
    assert adapter().parse_hook(delivery(event, fields(7))) == []


def refusal(a: Bitrix24Adapter, pairs) -> str:
    with pytest.raises(HookRefused) as err:
        a.parse_hook(pairs)
    msg = str(err.value)
    assert "\n" not in msg and TOKEN not in msg and "s3cretcode" not in msg
    return msg


def test_a_wrong_or_missing_token_is_refused():
    a = adapter()
    assert "not the source's" in refusal(a, delivery("ONCRMDEALUPDATE", fields(1), token="forged" * 5))
    assert "not the source's" in refusal(a, delivery("ONCRMDEALUPDATE", fields(1), token=TOKEN[:-1]))
    no_token = [kv for kv in delivery("ONCRMDEALUPDATE", fields(1)) if kv[0] != "auth[application_token]"]
    assert "no auth[application_token]" in refusal(a, no_token)
    twice = delivery("ONCRMDEALUPDATE", fields(1)) + [("auth[application_token]", "other")]
    assert "more than one" in refusal(a, twice)


def test_without_a_configured_token_every_delivery_is_refused():
    msg = refusal(adapter(application_token=None), delivery("ONCRMDEALUPDATE", fields(1)))
    assert "set it" in msg and "application_token" in msg


def test_genuine_but_malformed_deliveries_are_refused():
    a = adapter()
    assert "without an object id" in refusal(a, delivery("ONCRMDEALUPDATE", []))
    assert "without an object id" in refusal(a, delivery("ONCRMDEALUPDATE", fields("abc")))
    assert "names no event" in refusal(a, delivery("", fields(1)))
    assert "repeats a key" in refusal(a, delivery("ONCRMDEALUPDATE", fields(1) + fields(2)))


def test_the_token_is_registered_as_a_secret():
    from adapters.redact import redact

    adapter()
    assert TOKEN not in redact(f"token {TOKEN}")


# ---- read_changes -------------------------------------------------------------------------


def deal_item(i, contact=None):
    return {
        "ID": str(i),
        "TITLE": f"Deal {i}",
        "CATEGORY_ID": "0",
        "STAGE_ID": "NEW",
        "STAGE_SEMANTIC_ID": "P",
        "OPPORTUNITY": "100.00",
        "CURRENCY_ID": "RUB",
        "ASSIGNED_BY_ID": "1",
        "CONTACT_ID": str(contact or 0),
        "COMPANY_ID": "0",
        "DATE_CREATE": "2026-11-20T10:00:00+03:00",
        "DATE_MODIFY": "2026-11-23T10:00:00+03:00",
        "CLOSED": "N",
        "CLOSEDATE": None,
    }


def contact_item(i):
    return {
        "ID": str(i),
        "NAME": "Ann",
        "LAST_NAME": "Lee",
        "COMPANY_ID": "0",
        "ASSIGNED_BY_ID": "1",
        "DATE_CREATE": "2026-11-20T10:00:00+03:00",
        "DATE_MODIFY": "2026-11-23T10:00:00+03:00",
    }


def batch_reply(results: dict, errors: dict | None = None) -> dict:
    return {
        "result": {
            "result": results,
            "result_error": errors or [],
            "result_total": [],
            "result_next": [],
            "result_time": {k: {"operating": 0.1, "duration": 0.01} for k in results},
        },
        "time": {"start": 1, "finish": 1.1, "duration": 0.1},
    }


def commands(request) -> dict[str, tuple[str, dict]]:
    """A batch request's sub-calls: key -> (method, PHP-style pairs as a dict of lists)."""
    out = {}
    for key, text in json.loads(request.body)["cmd"].items():
        method, _, query = text.partition("?")
        params: dict = {}
        for k, v in parse_qsl(query):
            params.setdefault(k, []).append(v)
        out[key] = (method, params)
    return out


def rows_of(parse, items, side=None) -> dict:
    return records(items, parse, Ctx("RUB", {}, side or {})).rows


@responses.activate
def test_read_changes_reads_every_table_in_one_batch_as_a_sync_would():
    a = adapter()
    seen = {}

    def batch(request):
        cmds = seen["cmds"] = commands(request)
        res = {}
        for key, (method, params) in cmds.items():
            ids = [int(v) for k, vs in params.items() if "ID" in k or "[@id]" in k for v in vs]
            if method == "crm.deal.list":
                res[key] = [deal_item(i, contact=300001) for i in ids if i != 1000002]
            elif method == "crm.item.list":
                res[key] = {"items": [{"id": i, "contactIds": [300001, 300002]} for i in ids]}
            elif method == "crm.contact.list":
                res[key] = [contact_item(i) for i in ids]
        return 200, {}, json.dumps(batch_reply(res))

    responses.add_callback("POST", HOOK + "batch", callback=batch)
    page = a.read_changes(
        [
            Change("deals", 1000001),
            Change("deals", 1000002, deleted=True),
            Change("contacts", 300001),
            Change("deals", 1000001),
        ]
    )
    assert len(responses.calls) == 1
    cmds = seen["cmds"]
    assert sorted(m for m, _ in cmds.values()) == ["crm.contact.list", "crm.deal.list", "crm.item.list"]
    deal_cmd = next(p for m, p in cmds.values() if m == "crm.deal.list")
    assert deal_cmd["filter[@ID][0]"] == ["1000001"] and deal_cmd["filter[@ID][1]"] == ["1000002"]
    assert deal_cmd["start"] == ["-1"] and "UF_*" in deal_cmd["select[1]"]
    item_cmd = next(p for m, p in cmds.values() if m == "crm.item.list")
    assert item_cmd["entityTypeId"] == ["2"] and item_cmd["filter[@id][0]"] == ["1000001"]

    want = rows_of(p.deal, [deal_item(1000001, contact=300001)], {1000001: [300001, 300002]})
    assert page.rows["deals"] == want["deals"]
    assert (
        page.rows["deal_contacts"]
        == want["deal_contacts"]
        == [
            {"deal_id": 1000001, "contact_id": 300001, "is_main": 1},
            {"deal_id": 1000001, "contact_id": 300002, "is_main": 0},
        ]
    )
    assert page.rows["contacts"] == rows_of(p.contact, [contact_item(300001)])["contacts"]
    assert page.deleted == {"deals": [1000002]}


def activity_item(i, owner_type=2, owner=1000001, type_id=2):
    return {
        "ID": str(i),
        "TYPE_ID": str(type_id),
        "PROVIDER_ID": "VOXIMPLANT_CALL",
        "PROVIDER_TYPE_ID": "CALL",
        "DIRECTION": "2",
        "OWNER_TYPE_ID": str(owner_type),
        "OWNER_ID": str(owner),
        "RESPONSIBLE_ID": "1",
        "START_TIME": "2026-11-23T10:00:00+03:00",
        "CREATED": "2026-11-23T10:00:00+03:00",
        "LAST_UPDATED": "2026-11-23T10:05:00+03:00",
        "SUBJECT": "Outgoing call",
        "COMPLETED": "Y",
    }


def call_item(i, activity):
    return {
        "ID": str(i),
        "CALL_ID": f"c{i}",
        "CALL_TYPE": "1",
        "CALL_DURATION": "65",
        "CALL_START_DATE": "2026-11-23T10:00:00+03:00",
        "CALL_FAILED_CODE": "200",
        "PORTAL_USER_ID": "1",
        "PHONE_NUMBER": "+70000000000",
        "CRM_ENTITY_TYPE": "CONTACT",
        "CRM_ENTITY_ID": "300001",
        "CRM_ACTIVITY_ID": str(activity),
        "CALL_VOTE": "0",
    }


@responses.activate
def test_an_activity_brings_its_call_in_the_same_batch_and_tasks_take_an_id_list():
    a = adapter()
    seen = {}

    def batch(request):
        cmds = commands(request)
        seen.setdefault("cmds", cmds)
        res = {}
        for key, (method, _params) in cmds.items():
            if method == "crm.activity.list":
                res[key] = [activity_item(30000001)]
            elif method == "voximplant.statistic.get":
                res[key] = [call_item(7000001, 30000001)]
            elif method == "tasks.task.list":
                res[key] = {"tasks": []}
            elif method == "crm.activity.binding.list" and _params["activityId"] == ["30000001"]:
                res[key] = [{"entityTypeId": 2, "entityId": 1000001}, {"entityTypeId": 3, "entityId": 300001}]
            elif method == "crm.activity.binding.list":
                errors[key] = {"error": "NOT_FOUND", "error_description": "Element not found"}
        return 200, {}, json.dumps(batch_reply(res, errors))

    errors: dict = {}
    responses.add_callback("POST", HOOK + "batch", callback=batch)
    page = a.read_changes(
        [
            Change("activities", 30000001),
            Change("activities", 30000002),
            Change("tasks", 6000001, deleted=True),
        ]
    )
    # The activities, their calls and the tasks in one batch; the second activity's bindings
    # follow in a second one (the operating budget lets one call of a method not seen yet go first).
    assert len(responses.calls) == 2
    first = [m for m, _ in commands(responses.calls[0].request).values()]
    assert {"crm.activity.list", "voximplant.statistic.get", "tasks.task.list"} <= set(first)
    assert page.rows["activity_bindings"] == [
        {"activity_id": "30000001", "entity_type": "deal", "entity_id": 1000001},
        {"activity_id": "30000001", "entity_type": "contact", "entity_id": 300001},
    ]
    by_method = {m: prm for m, prm in seen["cmds"].values()}
    assert by_method["voximplant.statistic.get"]["FILTER[CRM_ACTIVITY_ID][0]"] == ["30000001"]
    assert by_method["tasks.task.list"]["filter[ID][0]"] == ["6000001"]
    assert page.rows["activities"] == rows_of(p.activity, [activity_item(30000001)])["activities"]
    call = page.rows["calls"][0]
    assert (
        call
        == rows_of(p.call, [call_item(7000001, 30000001)], {7000001: activity_item(30000001)})["calls"][0]
    )
    assert (call["entity_type"], call["entity_id"]) == ("deal", 1000001)  # from its activity
    assert page.deleted == {"activities": ["30000002"], "tasks": [6000001]}


@responses.activate
def test_a_change_naming_a_call_reads_it_and_looks_its_activity_up():
    a = adapter()
    responses.post(
        HOOK + "voximplant.statistic.get", json={"result": [call_item(7000001, 30000001)], "total": 0}
    )
    responses.post(HOOK + "crm.activity.list", json={"result": [activity_item(30000001)], "total": 0})
    page = a.read_changes([Change("calls", 7000001), Change("calls", 7000009)])
    assert [urlsplit(c.request.url).path.rsplit("/", 1)[1] for c in responses.calls] == [
        "voximplant.statistic.get",
        "crm.activity.list",
    ]
    assert json.loads(responses.calls[0].request.body)["FILTER"] == {"ID": [7000001, 7000009]}
    assert (
        page.rows["calls"]
        == rows_of(p.call, [call_item(7000001, 30000001)], {7000001: activity_item(30000001)})["calls"]
    )
    assert page.deleted == {"calls": [7000009]}


@responses.activate
def test_many_ids_go_50_a_sub_call_and_50_sub_calls_a_request():
    """2,600 ids: 52 sub-calls. The operating budget knows nothing of crm.contact.list yet, so
    its first sub-call probes alone (a plain call); then 50 in one batch, and the last alone."""
    a = adapter()
    sizes = []

    def batch(request):
        cmds = commands(request)
        sizes.append(len(cmds))
        res = {
            k: [contact_item(int(v)) for key, vs in prm.items() if key.startswith("filter[@ID]") for v in vs]
            for k, (m, prm) in cmds.items()
        }
        return 200, {}, json.dumps(batch_reply(res))

    def plain(request):
        sizes.append(1)
        ids = json.loads(request.body)["filter"]["@ID"]
        return (
            200,
            {},
            json.dumps(
                {
                    "result": [contact_item(i) for i in ids],
                    "total": 0,
                    "time": {"operating": 0.1, "duration": 0.01},
                }
            ),
        )

    responses.add_callback("POST", HOOK + "batch", callback=batch)
    responses.add_callback("POST", HOOK + "crm.contact.list", callback=plain)
    page = a.read_changes([Change("contacts", 300001 + i) for i in range(2600)])
    assert sizes == [1, 50, 1] and len(page.rows["contacts"]) == 2600 and not page.deleted
    sizes.clear()
    a.read_changes([Change("contacts", 300001 + i) for i in range(2500)])
    assert sizes == [50]  # once the budget knows the method: 2,500 ids, one request


@responses.activate
def test_a_lone_sub_call_is_a_plain_call_and_a_failing_one_raises():
    a = adapter()
    responses.post(HOOK + "crm.company.list", json={"result": [], "total": 0})
    page = a.read_changes([Change("companies", 20001)])
    assert len(responses.calls) == 1 and page.deleted == {"companies": [20001]}
    body = json.loads(responses.calls[0].request.body)
    assert body["filter"] == {"@ID": [20001]} and body["start"] == -1
    responses.post(
        HOOK + "batch",
        json=batch_reply({"contacts0": []}, {"deals0": {"error": "", "error_description": "Access denied."}}),
    )
    with pytest.raises(StreamError, match="Access denied"):
        a.read_changes([Change("deals", 1), Change("contacts", 2)])


def test_no_changes_no_requests_and_streams_outside_the_source_are_not_read():
    a = adapter(streams=["contacts"])
    with responses.RequestsMock():  # any request would fail the test
        assert a.read_changes([]).rows == {}
        assert a.read_changes([Change("deals", 1), Change("tasks", 2)]).count() == 0


# ---- handlers and the offline queue -------------------------------------------------------


def test_a_webhook_source_cannot_bind_handlers_and_has_no_offline_queue():
    a = adapter()
    with pytest.raises(SourceError) as err:
        a.install_hooks("https://receiver.example.com/b24")
    msg = str(err.value)
    assert "outgoing webhook" in msg.lower() and "application_token" in msg and "s3cretcode" not in msg
    with pytest.raises(SourceError, match="outgoing webhook"):
        a.remove_hooks("https://receiver.example.com/b24")
    assert a.missed_changes() is None
    a.clear_missed("whatever")  # nothing to clear, no request


def test_the_outgoing_webhook_advice_names_the_secret_part_of_the_address_without_showing_it():
    secret = "k" * 40
    a = adapter(webhook_secret=secret)
    with pytest.raises(SourceError) as err:
        a.install_hooks(f"https://receiver.example.com/hooks/b24/{secret}")
    msg = str(err.value)
    assert "https://receiver.example.com/hooks/b24/<webhook_secret> (the source's webhook_secret" in msg
    assert secret not in msg


def rest(method: str) -> str:
    return f"{PORTAL}/rest/{method}"


@responses.activate
def test_install_hooks_binds_what_is_missing_online_and_offline(tmp_path):
    a = oauth_adapter(tmp_path)
    url = "https://receiver.example.com/b24"
    responses.post(
        rest("event.get"),
        json={
            "result": [
                {"event": "ONCRMDEALUPDATE", "handler": url, "auth_type": "0", "offline": 0},
                {"event": "ONCRMDEALUPDATE", "handler": "", "auth_type": "0", "offline": 1},
            ]
        },
    )
    seen = {}

    def batch(request):
        body = json.loads(request.body)
        assert body["auth"] == "access-1"
        cmds = seen["cmds"] = commands(request)
        errors = {
            k: {"error": "ERROR_CORE", "error_description": "Handler already binded"}
            for k, (m, prm) in cmds.items()
            if prm.get("event") == ["ONTASKADD"]
        }
        return 200, {}, json.dumps(batch_reply({k: True for k in cmds if k not in errors}, errors))

    responses.add_callback("POST", rest("batch"), callback=batch)
    msg = a.install_hooks(url)
    cmds = seen["cmds"]
    assert len(responses.calls) == 2 and len(cmds) == 2 * 17 - 2
    online = {prm["event"][0] for m, prm in cmds.values() if prm["event_type"] == ["online"]}
    offline = {prm["event"][0] for m, prm in cmds.values() if prm["event_type"] == ["offline"]}
    assert "ONCRMDEALUPDATE" not in online | offline and len(online) == len(offline) == 16
    assert {"ONCRMACTIVITYADD", "ONTASKDELETE", "ONCRMLEADADD"} <= online
    assert all(prm["handler"] == [url] for m, prm in cmds.values() if prm["event_type"] == ["online"])
    assert all("handler" not in prm for m, prm in cmds.values() if prm["event_type"] == ["offline"])
    # offline bindings carry our auth_connector (our own writes are not queued for us); online ones not
    assert all(
        prm.get("auth_connector") == [events.AUTH_CONNECTOR]
        for m, prm in cmds.values()
        if prm["event_type"] == ["offline"]
    )
    assert not any("auth_connector" in prm for m, prm in cmds.values() if prm["event_type"] == ["online"])
    assert "32 bindings added" in msg and "access-1" not in msg


@responses.activate
def test_install_hooks_raises_on_a_real_refusal_and_remove_hooks_unbinds(tmp_path):
    a = oauth_adapter(tmp_path)
    responses.post(rest("event.get"), json={"result": []})
    responses.post(
        rest("batch"),
        json=batch_reply(
            {}, {"on0": {"error": "ERROR_EVENT_NOT_FOUND", "error_description": "Event not found"}}
        ),
    )
    with pytest.raises(StreamError, match="Event not found"):
        a.install_hooks("https://receiver.example.com/b24")
    responses.replace(
        responses.POST,
        rest("batch"),
        json=batch_reply(
            {f"on{n}": {"count": 1} for n in range(17)} | {f"off{n}": {"count": 1} for n in range(17)}
        ),
    )
    assert "34 event bindings removed" in a.remove_hooks("https://receiver.example.com/b24")
    cmds = commands(responses.calls[-1].request)
    assert {m for m, _ in cmds.values()} == {"event.unbind"}


@responses.activate
def test_missed_changes_reads_the_offline_queue_without_clearing_it(tmp_path):
    a = oauth_adapter(tmp_path)
    entries = [
        {
            "ID": "1",
            "TIMESTAMP_X": "2026-11-23T10:00:00+03:00",
            "EVENT_NAME": "ONCRMDEALUPDATE",
            "EVENT_DATA": {"FIELDS": {"ID": "759"}},
            "EVENT_ADDITIONAL": False,
            "MESSAGE_ID": "a1",
        },
        {
            "ID": "2",
            "TIMESTAMP_X": "2026-11-23T10:01:00+03:00",
            "EVENT_NAME": "ONTASKDELETE",
            "EVENT_DATA": {"FIELDS_BEFORE": {"ID": "5"}, "FIELDS_AFTER": "undefined"},
            "EVENT_ADDITIONAL": False,
            "MESSAGE_ID": "a2",
        },
        {
            "ID": "3",
            "TIMESTAMP_X": "2026-11-23T10:02:00+03:00",
            "EVENT_NAME": "ONCRMLEADADD",
            "EVENT_DATA": False,
            "EVENT_ADDITIONAL": False,
            "MESSAGE_ID": "a3",
        },
        {
            "ID": "4",
            "TIMESTAMP_X": "2026-11-23T10:03:00+03:00",
            "EVENT_NAME": "ONCRMDEALDELETE",
            "EVENT_DATA": {"FIELDS": {"ID": "759"}},
            "EVENT_ADDITIONAL": False,
            "MESSAGE_ID": "a4",
        },
    ]
    responses.post(rest("event.offline.get"), json={"result": {"process_id": "p-1", "events": entries}})
    responses.post(rest("event.offline.clear"), json={"result": True})
    changes, pid = a.missed_changes()
    assert pid == "p-1"
    assert changes == [Change("tasks", 5, True), Change("deals", 759, True)]
    body = json.loads(responses.calls[0].request.body)
    assert body["clear"] == 0 and body["limit"] == 50
    a.clear_missed(pid)
    assert json.loads(responses.calls[1].request.body)["process_id"] == "p-1"
    a.clear_missed("")
    assert len(responses.calls) == 2
    assert urlsplit(responses.calls[1].request.url).path == "/rest/event.offline.clear"


@responses.activate
def test_bindings_are_asked_50_a_batch_for_interactions_only_and_a_vanished_activity_is_no_error():
    """`Lister.per_item` for the activities stream: one sub-call per activity that gives a row
    (not a task, TYPE_ID 3), 50 a batch; NOT_FOUND (deleted since the listing) leaves that
    activity without bindings; any other error fails the stream."""
    a = adapter()
    asked: list[list[int]] = []

    def batch(request):
        cmds = commands(request)
        asked.append([int(prm["activityId"][0]) for _, prm in cmds.values()])
        res, errs = {}, {}
        for key, (_, prm) in cmds.items():
            i = int(prm["activityId"][0])
            if i == 30000007:
                errs[key] = {"error": "NOT_FOUND", "error_description": "Element not found"}
            else:
                res[key] = [{"entityTypeId": 2, "entityId": i}]
        return 200, {}, json.dumps(batch_reply(res, errs))

    responses.add_callback("POST", HOOK + "batch", callback=batch)
    task = {"TYPE_ID": "3", "PROVIDER_ID": "TASKS_TASK", "PROVIDER_TYPE_ID": "TASK"}
    rows = [dict(activity_item(30000001 + k), **(task if k % 10 == 9 else {})) for k in range(120)]
    req = st.ACTIVITIES.request
    side = a.reader.lister.per_item(req.per_item, req.spec, rows)
    wanted = [int(r["ID"]) for r in rows if r["TYPE_ID"] != "3"]
    assert sorted(i for part in asked for i in part) == wanted  # tasks are not asked for
    assert asked[0] == wanted[:1]  # the operating budget's probe of a method not seen yet
    assert all(len(part) <= 50 for part in asked) and len(asked) == 1 + math.ceil((len(wanted) - 1) / 50)
    assert 30000007 not in side and side[30000001] == [{"entityTypeId": 2, "entityId": 30000001}]
    page = a.reader.parse(st.ACTIVITIES, rows[:8], side)
    assert [b["entity_id"] for b in page.rows["activity_bindings"] if b["activity_id"] == "30000007"] == [
        1000001
    ]  # its owner only

    responses.replace(
        "POST",
        HOOK + "batch",
        json=batch_reply({}, {"i30000001": {"error": "ERROR_CORE", "error_description": "General error"}}),
    )
    with pytest.raises(StreamError, match="crm.activity.binding.list"):
        a.reader.lister.per_item(req.per_item, req.spec, rows[:1])
