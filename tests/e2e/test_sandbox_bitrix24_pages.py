"""The Bitrix24 sandbox's encoded-row cache: same bytes as plain JSON, fresh after every write."""

from __future__ import annotations

import json

import requests

from sandbox.bitrix24.methods import Portal
from sandbox.bitrix24.pages import Page, dumps, encode_rows, plain
from sandbox.bitrix24.query import render

ENTITIES = [
    ("deal", "deals"),
    ("lead", "leads"),
    ("contact", "contacts"),
    ("company", "companies"),
    ("task", "tasks"),
    ("call", "calls"),
    ("activity", "activities"),
    ("user", "users"),
]
SELECTS = [
    None,
    ["*"],
    ["*", "UF_*"],
    ["*", "UF_*", "PHONE", "EMAIL"],
    ["ID"],
    ["id"],
    ["id", "contactIds"],
    ["TITLE", "DATE_MODIFY", "MOVED_TIME", "OPPORTUNITY"],
]


def plain_json(obj) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def post(srv, method, params):
    r = requests.post(srv.webhook_url + method, json=params, timeout=10)
    assert r.status_code == 200, r.text
    return r


def test_encoded_rows_are_the_bytes_json_dumps_writes(b24_dataset):
    ds = b24_dataset
    f = ds.add_field("contact", 'KPI "score"', "numeric", code="KPI_SCORE")
    c = ds.contacts[0]["id"]
    ds.set_custom("contact", c, f["id"], 12.5)
    ds.update("contacts", c, first_name='Ann "Q"\\\n\u2028ё', phone=None)
    ds.update("deals", ds.deals[0]["id"], name="Сделка\t<b>")
    portal = Portal(ds)
    checked = 0
    for entity, table in ENTITIES:
        spec = portal.spec(entity)
        for names, typed in (("old", False), ("new", True)):
            for select in SELECTS:
                fields = portal.select(spec, select, names, True)
                # crm.activity.list serves calls and the other activities (Portal.activities)
                rows = portal.activities()[0] if entity == "activity" else ds.rows(table)
                expected = [plain_json(d) for d in render(rows, fields, typed)]
                assert encode_rows(rows, fields, typed) == expected, (entity, names, select)
                checked += 1
    assert checked == len(ENTITIES) * 2 * len(SELECTS)


def test_dumps_splices_pages_exactly_where_json_dumps_would_write_them(b24_dataset):
    portal = Portal(b24_dataset)
    spec = portal.spec("deal")
    fields = portal.select(spec, ["*", "UF_*"], "old", True)
    with b24_dataset.lock:
        page = portal.pages.page("deal", b24_dataset.deals[:7], fields, False)
    assert isinstance(page, Page) and len(page) == 7
    assert page[-1] == render([b24_dataset.deals[6]], fields)[0]
    assert page.dicts() == render(b24_dataset.deals[:7], fields)
    obj = {
        "result": {"a": page, "b": [], "c": {"tasks": page}},
        "list": [page, 1, "x"],
        "note": 'a "\u0000" b',
        "time": {"start": 1.5},
    }
    assert dumps(obj) == plain_json(plain(obj))
    assert dumps({"result": []}) == b'{"result":[]}'


def test_repeated_reads_are_served_from_the_cache_with_identical_bodies(b24_sandbox):
    params = {"select": ["*", "UF_*"], "order": {"ID": "ASC"}, "start": -1}
    first = post(b24_sandbox, "crm.deal.list", params)
    misses = b24_sandbox.portal.pages.misses
    assert misses == 50
    again = post(b24_sandbox, "crm.deal.list", params)
    assert b24_sandbox.portal.pages.misses == misses
    assert again.json()["result"] == first.json()["result"]


def test_every_kind_of_write_shows_in_the_next_read(b24_sandbox, b24_dataset):
    ds, srv = b24_dataset, b24_sandbox
    deal = next(d for d in ds.deals if not d["is_deleted"] and d["status"] == "open")
    q = {"filter": {"ID": deal["id"]}, "select": ["*", "UF_*"]}
    before = post(srv, "crm.deal.list", q).json()["result"][0]
    ds.update("deals", deal["id"], name="Renamed deal")
    assert post(srv, "crm.deal.list", q).json()["result"][0]["TITLE"] == "Renamed deal"
    won = next(s for p in ds.pipelines for s in p["stages"] if s["semantics"] == "won")
    ds.update("deals", deal["id"], stage_id=won["id"])
    after = post(srv, "crm.deal.list", q).json()["result"][0]
    assert after["STAGE_SEMANTIC_ID"] == "S" and after["CLOSED"] == "Y"
    assert after["MOVED_TIME"] != before["MOVED_TIME"]

    contact = next(c for c in ds.contacts if not c["is_deleted"])
    cq = {"filter": {"ID": contact["id"]}, "select": ["*", "UF_*"]}
    post(srv, "crm.contact.list", cq)
    post(srv, "crm.contact.userfield.add", {"fields": {"FIELD_NAME": "KPI_CACHE", "USER_TYPE_ID": "double"}})
    assert post(srv, "crm.contact.list", cq).json()["result"][0]["UF_CRM_KPI_CACHE"] is None
    post(srv, "crm.contact.update", {"id": contact["id"], "fields": {"UF_CRM_KPI_CACHE": 7}})
    assert post(srv, "crm.contact.list", cq).json()["result"][0]["UF_CRM_KPI_CACHE"] == "7"
    ds.delete("contacts", contact["id"])
    assert post(srv, "crm.contact.list", cq).json()["result"] == []


def test_batch_references_read_rows_of_cached_pages(b24_sandbox, b24_dataset):
    ids = sorted(d["id"] for d in b24_dataset.deals if not d["is_deleted"])
    cmd = {
        "p0": "crm.deal.list?order[ID]=ASC&filter[%3EID]=0&select[0]=%2A&start=-1",
        "p1": "crm.deal.list?order[ID]=ASC&filter[%3EID]=$result[p0][49][ID]&select[]=ID&start=-1",
        "one": "crm.deal.list?filter[ID]=$result[p1][-1][ID]&select[]=TITLE&start=-1",
    }
    body = post(b24_sandbox, "batch", {"halt": 0, "cmd": cmd}).json()["result"]
    assert [r["ID"] for r in body["result"]["p1"]] == [str(i) for i in ids[50:100]]
    assert body["result"]["one"][0]["ID"] == str(ids[99])
    assert body["result_error"] == []
