"""Date custom fields in both sandboxes, as the real APIs take and show them: amoCRM takes Unix
seconds or RFC 3339 text with an offset and reads dates back as Unix seconds; Bitrix24 takes
ISO 8601 or the portal's `dd.mm.yyyy` and reads a date field back as the portal's midnight."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import requests

MSK = timezone(timedelta(hours=3))


def amo_field_and_card(server, headers):
    r = requests.post(
        f"{server.url}/api/v4/contacts/custom_fields",
        json=[{"type": "date", "name": "Last interaction on", "code": "KPI_LAST_INTERACTION_ON"}],
        headers=headers,
        timeout=10,
    )
    assert r.status_code in (200, 201), r.text
    field = r.json()["_embedded"]["custom_fields"][0]
    assert field["type"] == "date"
    card = requests.get(f"{server.url}/api/v4/contacts", headers=headers, timeout=10).json()
    return field["id"], card["_embedded"]["contacts"][0]["id"]


def amo_patch(server, headers, fid, cid, value):
    return requests.patch(
        f"{server.url}/api/v4/contacts",
        json=[{"id": cid, "custom_fields_values": [{"field_id": fid, "values": [{"value": value}]}]}],
        headers=headers,
        timeout=10,
    )


def amo_read(server, headers, fid, cid):
    card = requests.get(f"{server.url}/api/v4/contacts/{cid}", headers=headers, timeout=10).json()
    return next(f["values"][0]["value"] for f in card["custom_fields_values"] if f["field_id"] == fid)


def test_amocrm_date_field_takes_rfc3339_or_unix_seconds(amo_sandbox, amo_headers):
    fid, cid = amo_field_and_card(amo_sandbox, amo_headers)
    day = datetime(2026, 11, 23, tzinfo=MSK)
    assert amo_patch(amo_sandbox, amo_headers, fid, cid, day.isoformat()).status_code == 200
    assert amo_read(amo_sandbox, amo_headers, fid, cid) == int(day.timestamp())  # Unix seconds
    assert amo_patch(amo_sandbox, amo_headers, fid, cid, int(day.timestamp()) + 86400).status_code == 200
    assert amo_read(amo_sandbox, amo_headers, fid, cid) == int(day.timestamp()) + 86400
    for bad in ("2026-11-23", "23.11.2026", "soon", True):  # no offset, not a date: refused
        r = amo_patch(amo_sandbox, amo_headers, fid, cid, bad)
        assert r.status_code == 400 and "date" in r.text, bad
    assert amo_read(amo_sandbox, amo_headers, fid, cid) == int(day.timestamp()) + 86400


def b24(srv, method, params):
    return requests.post(srv.webhook_url + method, json=params, timeout=10)


def test_bitrix24_date_field_takes_iso_or_the_portal_format(b24_sandbox, b24_dataset):
    add = b24(
        b24_sandbox,
        "crm.company.userfield.add",
        {
            "fields": {
                "FIELD_NAME": "KPI_LAST_PURCHASE_ON",
                "USER_TYPE_ID": "date",
                "EDIT_FORM_LABEL": "Bought on",
            }
        },
    )
    assert add.status_code == 200, add.text
    listed = b24(
        b24_sandbox, "crm.company.userfield.list", {"filter": {"FIELD_NAME": "UF_CRM_KPI_LAST_PURCHASE_ON"}}
    )
    assert listed.json()["result"][0]["USER_TYPE_ID"] == "date"
    cid = next(r["id"] for r in b24_dataset.rows("companies") if not r["is_deleted"])
    key = "UF_CRM_KPI_LAST_PURCHASE_ON"
    for value in ("2026-11-23", "23.11.2026", "2026-11-23T00:00:00+03:00", "2026-11-23T12:30:00+03:00"):
        r = b24(b24_sandbox, "crm.company.update", {"id": cid, "fields": {key: value}})
        assert r.status_code == 200 and r.json()["result"] is True, (value, r.text)
        got = b24(b24_sandbox, "crm.company.get", {"id": cid}).json()["result"][key]
        assert got == "2026-11-23T00:00:00+03:00", value  # a date keeps no time
    r = b24(b24_sandbox, "crm.company.update", {"id": cid, "fields": {key: "soon"}})
    assert r.status_code == 400 and key in r.json()["error_description"]
    r = b24(b24_sandbox, "crm.company.update", {"id": cid, "fields": {key: ""}})  # clears it
    assert (
        r.status_code == 200
        and b24(b24_sandbox, "crm.company.get", {"id": cid}).json()["result"][key] is None
    )
