"""Interactions, lead sources and UTM values, survey answers as the sandboxes serve them.
Each shape follows what the real CRM's API sends, not what our parsers expect."""

import time
from datetime import datetime

import requests

from tests.fixtures_amocrm import all_pages, get

# ---- amoCRM ----------------------------------------------------------------------------------


def test_amocrm_sms_notes_beside_call_notes_and_undocumented_note_types_are_a_400(
    amo_dataset, amo_sandbox, amo_headers
):
    notes, _ = all_pages(
        amo_sandbox,
        "/api/v4/contacts/notes",
        amo_headers,
        limit=250,
        **{"filter[note_type][]": ["sms_in", "sms_out"]},
    )
    sms = [
        a
        for a in amo_dataset.activities
        if a["channel"] == "sms" and a["entity_type"] == "contact" and not a["is_deleted"]
    ]
    assert sorted(n["id"] for n in notes) == [a["id"] for a in sms] and sms
    by_id = amo_dataset.by_id("activities")
    assert all(n["note_type"] == "sms_" + by_id[n["id"]]["direction"] for n in notes)
    assert all(n["params"]["text"] and n["created_at"] == by_id[n["id"]]["at"] for n in notes)
    r = get(amo_sandbox, "/api/v4/contacts/notes", amo_headers, **{"filter[note_type][]": "email"})
    assert r.status_code == 400 and "note_type" in r.text


def test_amocrm_chat_and_nps_events(amo_dataset, amo_sandbox, amo_headers):
    chats, _ = all_pages(
        amo_sandbox,
        "/api/v4/events",
        amo_headers,
        limit=100,
        **{"filter[type][]": ["incoming_chat_message", "outgoing_chat_message"]},
    )
    live = [
        a
        for a in amo_dataset.activities
        if a["channel"] == "chat"
        and not a["is_deleted"]
        and a["entity_type"] in ("deal", "contact", "company")
    ]
    assert len(chats) == len(live) > 0
    assert {e["entity_type"] for e in chats} <= {"lead", "contact", "company"}
    assert all((e["created_by"] != 0) == (e["type"] == "outgoing_chat_message") for e in chats)
    nps, _ = all_pages(
        amo_sandbox, "/api/v4/events", amo_headers, limit=100, **{"filter[type][]": "nps_rate_added"}
    )
    # the documented shape: value_after = [{"nps": {"rate": N}}], N an integer 0-10
    assert all(e["value_after"] == [{"nps": {"rate": e["value_after"][0]["nps"]["rate"]}}] for e in nps)
    rates = [e["value_after"][0]["nps"]["rate"] for e in nps]
    assert all(type(r) is int and 0 <= r <= 10 for r in rates)
    assert sorted(rates) == sorted(s["score"] for s in amo_dataset.surveys)


def test_amocrm_lead_source_needs_with_source_and_utm_is_a_tracking_field(
    amo_dataset, amo_sandbox, amo_headers
):
    bare = get(amo_sandbox, "/api/v4/leads", amo_headers, limit=250).json()["_embedded"]["leads"]
    assert not any("source" in d["_embedded"] for d in bare)
    leads, _ = all_pages(amo_sandbox, "/api/v4/leads", amo_headers, limit=250, **{"with": "source"})
    by_id = amo_dataset.by_id("deals")
    for d in leads:
        src = by_id[d["id"]]
        assert (d["_embedded"].get("source") or {}).get("name") == src["source"]
        utm = [
            f["values"][0]["value"]
            for f in d["custom_fields_values"] or ()
            if f["field_code"] == "UTM_SOURCE"
        ]
        assert utm == ([src["utm_source"]] if src["utm_source"] else [])
    assert any(d["custom_fields_values"] for d in leads)


# ---- Bitrix24 --------------------------------------------------------------------------------


def b24(server, method: str, **params) -> dict:
    r = requests.post(server.webhook_url + method + ".json", json=params, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def test_bitrix24_activity_list_serves_every_kind_and_deleted_ones_vanish(b24_dataset, b24_sandbox):
    ds = b24_dataset
    seen = []
    last = 0
    while True:
        page = b24(
            b24_sandbox,
            "crm.activity.list",
            filter={">ID": last},
            order={"ID": "ASC"},
            start=-1,
            select=["ID", "TYPE_ID", "PROVIDER_ID", "DIRECTION", "OWNER_TYPE_ID"],
        )
        seen += page["result"]
        if len(page["result"]) < 50:
            break
        last = int(page["result"][-1]["ID"])
    kinds = {(a["TYPE_ID"], a["PROVIDER_ID"]) for a in seen}
    assert kinds == {
        ("2", "VOXIMPLANT_CALL"),
        ("1", "CRM_MEETING"),
        ("4", "CRM_EMAIL"),
        ("6", "IMOPENLINES_SESSION"),
        ("6", "CRM_SMS"),
    }
    alive = [a for a in ds.activities if not a["is_deleted"]]
    assert len(seen) == len(ds.calls) + len(alive)
    gone = alive[0]
    ds.delete("activities", gone["id"])
    one = b24(b24_sandbox, "crm.activity.list", filter={"ID": gone["id"]}, start=-1)
    assert one["result"] == []


def test_bitrix24_activities_filter_on_last_updated(b24_dataset, b24_sandbox):
    ds = b24_dataset
    added = ds.add(
        "activities", channel="chat", direction="in", entity_type="deal", entity_id=ds.deals[0]["id"]
    )
    since = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(added["updated_at"] - 1))
    page = b24(
        b24_sandbox,
        "crm.activity.list",
        filter={">=LAST_UPDATED": since, ">ID": 0},
        order={"ID": "ASC"},
        start=-1,
    )
    assert [int(a["ID"]) for a in page["result"]] == [added["id"]]
    assert page["result"][0]["PROVIDER_ID"] == "IMOPENLINES_SESSION"


def test_bitrix24_deal_source_utm_and_call_vote(b24_dataset, b24_sandbox):
    ds = b24_dataset
    deals = b24(b24_sandbox, "crm.deal.list", select=["*"], start=-1)["result"]
    src = ds.by_id("deals")
    codes = {
        "website": "WEB",
        "referral": "RECOMMENDATION",
        "cold call": "CALL",
        "exhibition": "TRADE_SHOW",
        "advert": "ADVERTISING",
    }
    for d in deals:
        row = src[int(d["ID"])]
        assert d["SOURCE_ID"] == codes.get(row["source"]) and d["UTM_SOURCE"] == row["utm_source"]
    calls = b24(b24_sandbox, "voximplant.statistic.get", FILTER={">ID": 0})["result"]
    votes = {int(c["ID"]): c["CALL_VOTE"] for c in calls}
    by_id = ds.by_id("calls")
    assert all(v == str(by_id[i]["vote"] or 0) for i, v in votes.items())
    assert all(by_id[i]["status"] == "answered" for i, v in votes.items() if v != "0")


def test_bitrix24_activity_bindings_planned_activities_and_informational_calls(b24_dataset, b24_sandbox):
    """crm.activity.binding.list answers for one activity (its owner and every other record);
    voximplant names a contact, company or lead only (a deal's call is bound to the deal
    through its activity); planned activities are COMPLETED N; informational calls CALL_TYPE 5."""
    ds = b24_dataset
    types = {"lead": 1, "deal": 2, "contact": 3, "company": 4}
    bound = next(a for a in ds.activities if a.get("also") and not a["is_deleted"])
    got = b24(b24_sandbox, "crm.activity.binding.list", activityId=bound["id"])["result"]
    want = [(bound["entity_type"], bound["entity_id"]), *bound["also"]]
    assert got == [{"entityTypeId": types[t], "entityId": i} for t, i in dict.fromkeys(want)]
    deal_call = next(c for c in ds.calls if c["entity_type"] == "deal" and c["caller"])
    got = b24(b24_sandbox, "crm.activity.binding.list", activityId=deal_call["activity_id"])["result"]
    assert got == [
        {"entityTypeId": 2, "entityId": deal_call["entity_id"]},
        {"entityTypeId": types[deal_call["caller"][0]], "entityId": deal_call["caller"][1]},
    ]
    calls = []
    last = 0
    while True:
        page = b24(b24_sandbox, "voximplant.statistic.get", FILTER={">ID": last}, SORT="ID", ORDER="ASC")
        calls += page["result"]
        if len(page["result"]) < 50:
            break
        last = int(page["result"][-1]["ID"])
    assert {c["CRM_ENTITY_TYPE"] for c in calls} <= {"CONTACT", "COMPANY", "LEAD", None}
    by_id = ds.by_id("calls")
    assert (
        {int(c["ID"]) for c in calls if c["CALL_TYPE"] == "5"}
        == {c["id"] for c in ds.calls if c.get("informational")}
        != set()
    )
    for c in calls:
        row = by_id[int(c["ID"])]
        if c["CALL_TYPE"] != "5":
            assert c["CALL_TYPE"] == ("1" if row["direction"] == "out" else "2")
    planned = [a for a in ds.activities if a.get("planned")]
    rows = b24(
        b24_sandbox, "crm.activity.list", filter={"COMPLETED": "N"}, select=["ID", "START_TIME", "COMPLETED"]
    )["result"]
    assert sorted(int(r["ID"]) for r in rows) == sorted(a["id"] for a in planned) != []
    assert all(datetime.fromisoformat(r["START_TIME"]).timestamp() > ds.now for r in rows)


def test_bitrix24_activity_binding_list_errors(b24_sandbox):
    for params, code in (({}, "100"), ({"activityId": 1}, "NOT_FOUND")):
        r = requests.post(b24_sandbox.webhook_url + "crm.activity.binding.list.json", json=params, timeout=10)
        assert r.status_code == 400 and r.json()["error"] == code, r.text
