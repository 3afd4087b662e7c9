"""The amoCRM sandbox server: shapes, paging, filters, auth, limits, custom fields, faults."""

import json

import pytest
import requests

from sandbox.amocrm import LOST, WON, AmoSandbox
from sandbox.data import generate


def get(server, path, headers, **params):
    return requests.get(server.url + path, headers=headers, params=params, timeout=5)


def all_pages(server, path, headers, **params):
    """Follow _links.next until it is absent or a page is 204; returns (items, pages)."""
    url, items, pages = server.url + path, [], 0
    key = None
    while url:
        r = requests.get(url, headers=headers, params=params if pages == 0 else None, timeout=5)
        if r.status_code == 204:
            break
        assert r.status_code == 200, r.text
        body = r.json()
        key = key or next(iter(body["_embedded"]))
        items += body["_embedded"][key]
        pages += 1
        url = body["_links"].get("next", {}).get("href")
    return items, pages


# ---- auth and shapes -------------------------------------------------------------------------
def test_missing_or_wrong_token_is_401_problem_json(amo_sandbox):
    for headers in ({}, {"Authorization": "Bearer nope"}):
        r = get(amo_sandbox, "/api/v4/leads", headers)
        assert r.status_code == 401
        assert r.headers["Content-Type"] == "application/problem+json"
        assert r.json()["status"] == 401 and "nope" not in r.text


def test_account_reports_api_filter(amo_dataset, amo_headers, amo_sandbox):
    r = get(amo_sandbox, "/api/v4/account", amo_headers, **{"with": "is_api_filter_enabled"})
    assert r.headers["Content-Type"] == "application/hal+json"
    assert r.json()["is_api_filter_enabled"] is True
    assert r.json()["current_user_id"] == amo_dataset.users[0]["id"]
    with AmoSandbox(amo_dataset, limits=False, api_filter=False) as other:
        r = get(other, "/api/v4/account", amo_headers, **{"with": "is_api_filter_enabled"})
        assert r.json()["is_api_filter_enabled"] is False


def test_pipelines_use_142_and_143_everywhere(amo_dataset, amo_sandbox, amo_headers):
    body = get(amo_sandbox, "/api/v4/leads/pipelines", amo_headers).json()
    pipes = body["_embedded"]["pipelines"]
    assert [p["id"] for p in pipes] == [p["id"] for p in amo_dataset.pipelines]
    assert pipes[0]["is_main"] is True
    for p in pipes:
        ids = [s["id"] for s in p["_embedded"]["statuses"]]
        assert WON in ids and LOST in ids
        assert all(s["pipeline_id"] == p["id"] for s in p["_embedded"]["statuses"])
        assert sum(s["type"] == 1 for s in p["_embedded"]["statuses"]) == 1


def test_lead_shape_with_contacts(amo_dataset, amo_sandbox, amo_headers):
    deal = next(d for d in amo_dataset.deals if len(d["contact_ids"]) >= 2
                and d["company_id"] and not d["is_deleted"])
    r = get(amo_sandbox, "/api/v4/leads", amo_headers, **{"with": "contacts", "filter[id][]": deal["id"]})
    (lead,) = r.json()["_embedded"]["leads"]
    assert lead["price"] == int(round(deal["amount"])) and isinstance(lead["price"], int)
    assert lead["created_at"] == deal["created_at"] and lead["is_deleted"] is False
    assert [c["id"] for c in lead["_embedded"]["contacts"]] == deal["contact_ids"]
    assert [c["is_main"] for c in lead["_embedded"]["contacts"]][:2] == [True, False]
    assert lead["_embedded"]["companies"] == [{"id": deal["company_id"], "_links": lead[
        "_embedded"]["companies"][0]["_links"]}]
    expected = {"won": WON, "lost": LOST}.get(deal["status"], deal["stage_id"])
    assert lead["status_id"] == expected
    r = get(amo_sandbox, "/api/v4/leads", amo_headers, **{"filter[id][]": deal["id"]})
    assert "contacts" not in r.json()["_embedded"]["leads"][0]["_embedded"]


def test_contact_custom_fields_read_shape(amo_dataset, amo_sandbox, amo_headers):
    c = next(c for c in amo_dataset.contacts if c["custom"] and not c["is_deleted"])
    item = get(amo_sandbox, "/api/v4/contacts", amo_headers,
               **{"filter[id][]": c["id"]}).json()["_embedded"]["contacts"][0]
    by_code = {v["field_code"]: v for v in item["custom_fields_values"]}
    assert by_code["PHONE"]["values"][0]["value"] == c["phone"]
    by_id = {v["field_id"]: v for v in item["custom_fields_values"]}
    for fid, value in c["custom"].items():
        assert set(by_id[fid]) == {"field_id", "field_name", "field_code", "field_type", "values"}
        assert by_id[fid]["values"][0]["value"] == str(value).removesuffix(".0")
    plain = next(x for x in amo_dataset.companies if not x["custom"] and not x["is_deleted"])
    item = get(amo_sandbox, "/api/v4/companies", amo_headers,
               **{"filter[id][]": plain["id"]}).json()["_embedded"]["companies"][0]
    assert item["custom_fields_values"] is None


def test_task_and_note_shapes(amo_dataset, amo_sandbox, amo_headers):
    tasks, _ = all_pages(amo_sandbox, "/api/v4/tasks", amo_headers, limit=250)
    assert len(tasks) == sum(not t["is_deleted"] for t in amo_dataset.tasks)
    assert {t["entity_type"] for t in tasks} == {"leads", "contacts", "companies"}
    assert all("completed_at" not in t for t in tasks)
    assert all(t["result"] == [] for t in tasks if not t["is_completed"])
    src = amo_dataset.by_id("tasks")[tasks[0]["id"]]
    assert tasks[0]["complete_till"] == src["due_at"]
    notes, _ = all_pages(amo_sandbox, "/api/v4/contacts/notes", amo_headers, limit=250,
                         **{"filter[note_type][]": ["call_in", "call_out"]})
    calls = [c for c in amo_dataset.calls if c["entity_type"] == "contact"]
    assert sorted(n["id"] for n in notes) == [c["id"] for c in calls]
    status = {4: "answered", 6: "missed", 5: "failed"}
    by_id = amo_dataset.by_id("calls")
    for n in notes:
        c = by_id[n["id"]]
        assert n["note_type"] == "call_" + c["direction"] and n["entity_id"] == c["entity_id"]
        assert status[n["params"]["call_status"]] == c["status"]
        assert n["params"]["duration"] == c["duration_s"]


def test_note_type_filter(amo_dataset, amo_sandbox, amo_headers):
    notes, _ = all_pages(amo_sandbox, "/api/v4/leads/notes", amo_headers, limit=250,
                         **{"filter[note_type][]": "call_in"})
    expected = [c["id"] for c in amo_dataset.calls if c["entity_type"] == "deal"
                and c["direction"] == "in"]
    assert sorted(n["id"] for n in notes) == expected and expected
    r = get(amo_sandbox, "/api/v4/leads/notes", amo_headers, **{"filter[note_type]": "common"})
    assert r.status_code == 204 and r.content == b""


# ---- paging ----------------------------------------------------------------------------------
def test_paging_next_link_last_page_and_204(amo_dataset, amo_sandbox, amo_headers):
    visible = [d["id"] for d in amo_dataset.deals if not d["is_deleted"]]
    assert len(visible) > 200
    items, pages = all_pages(amo_sandbox, "/api/v4/leads", amo_headers, limit=100)
    assert [i["id"] for i in items] == visible
    assert pages == -(-len(visible) // 100)
    last = get(amo_sandbox, "/api/v4/leads", amo_headers, limit=100, page=pages).json()
    assert "next" not in last["_links"] and last["_page"] == pages
    r = get(amo_sandbox, "/api/v4/leads", amo_headers, limit=100, page=pages + 1)
    assert r.status_code == 204 and r.content == b""


def test_limit_is_clamped_to_250(amo_sandbox, amo_headers):
    body = get(amo_sandbox, "/api/v4/leads", amo_headers, limit=400).json()
    assert len(body["_embedded"]["leads"]) == 250 and "next" in body["_links"]
    assert get(amo_sandbox, "/api/v4/leads", amo_headers, limit="x").status_code == 400


def test_deleted_leads_only_in_trash(amo_dataset, amo_sandbox, amo_headers):
    deal = next(d for d in amo_dataset.deals if not d["is_deleted"])
    amo_dataset.delete("deals", deal["id"])
    items, _ = all_pages(amo_sandbox, "/api/v4/leads", amo_headers, limit=250)
    assert deal["id"] not in {i["id"] for i in items}
    trash, _ = all_pages(amo_sandbox, "/api/v4/leads", amo_headers, **{"with": "only_deleted"})
    assert deal["id"] in {i["id"] for i in trash} and all(i["is_deleted"] for i in trash)
    assert get(amo_sandbox, f"/api/v4/leads/{deal['id']}", amo_headers).status_code == 204


# ---- filters and order -----------------------------------------------------------------------
def test_updated_at_range_and_order(amo_dataset, amo_sandbox, amo_headers):
    stamps = sorted(c["updated_at"] for c in amo_dataset.contacts)
    lo, hi = stamps[10], stamps[50]
    params = {"filter[updated_at][from]": lo, "filter[updated_at][to]": hi,
              "order[updated_at]": "asc", "limit": 7}
    items, pages = all_pages(amo_sandbox, "/api/v4/contacts", amo_headers, **params)
    expected = sorted((c["updated_at"], c["id"]) for c in amo_dataset.contacts
                      if lo <= c["updated_at"] <= hi and not c["is_deleted"])
    assert [(i["updated_at"], i["id"]) for i in items] == expected and pages > 1
    desc, _ = all_pages(amo_sandbox, "/api/v4/contacts", amo_headers,
                        **{**params, "order[updated_at]": "desc"})
    assert [i["id"] for i in desc] == [i["id"] for i in reversed(items)]
    by_id, _ = all_pages(amo_sandbox, "/api/v4/contacts", amo_headers,
                         **{"filter[updated_at][from]": lo, "order[id]": "desc", "limit": 250})
    assert [i["id"] for i in by_id] == sorted((c["id"] for c in amo_dataset.contacts
                                               if c["updated_at"] >= lo and not c["is_deleted"]),
                                              reverse=True)


def test_single_timestamp_means_equal_on_leads_but_after_on_tasks(amo_dataset, amo_sandbox,
                                                                  amo_headers):
    t = sorted(d["updated_at"] for d in amo_dataset.deals if not d["is_deleted"])[-40]
    leads, _ = all_pages(amo_sandbox, "/api/v4/leads", amo_headers, **{"filter[updated_at]": t})
    assert {i["updated_at"] for i in leads} == {t}
    tt = sorted(x["updated_at"] for x in amo_dataset.tasks)[-30]
    tasks, _ = all_pages(amo_sandbox, "/api/v4/tasks", amo_headers, **{"filter[updated_at]": tt})
    assert len(tasks) == sum(x["updated_at"] >= tt and not x["is_deleted"]
                             for x in amo_dataset.tasks) >= 25


def test_filters_ignored_without_api_filter_addon(amo_dataset, amo_headers):
    with AmoSandbox(amo_dataset, limits=False, api_filter=False) as server:
        body = get(server, "/api/v4/leads", amo_headers, limit=250,
                   **{"filter[id][]": amo_dataset.deals[0]["id"]}).json()
        assert len(body["_embedded"]["leads"]) == 250


def test_new_write_shows_up_in_incremental_query(amo_dataset, amo_sandbox, amo_headers):
    cutoff = amo_dataset.now
    assert get(amo_sandbox, "/api/v4/leads", amo_headers,
               **{"filter[updated_at][from]": cutoff}).status_code == 204
    deal = amo_dataset.deals[5]
    amo_dataset.update("deals", deal["id"], name="Renamed")
    body = get(amo_sandbox, "/api/v4/leads", amo_headers,
               **{"filter[updated_at][from]": cutoff}).json()
    assert [(i["id"], i["name"]) for i in body["_embedded"]["leads"]] == [(deal["id"], "Renamed")]


# ---- events ----------------------------------------------------------------------------------
def test_events_status_changes_and_deletions(amo_dataset, amo_sandbox, amo_headers):
    sc = amo_dataset.stage_changes
    lo, hi = sc[len(sc) // 2]["changed_at"], sc[-1]["changed_at"]
    params = {"filter[type][]": "lead_status_changed", "filter[created_at][from]": lo,
              "filter[created_at][to]": hi, "limit": 100}
    events, _ = all_pages(amo_sandbox, "/api/v4/events", amo_headers, **params)
    expected = [s for s in sc if lo <= s["changed_at"] <= hi and s["previous_stage_id"]]
    assert len(events) == len(expected) > 100
    assert all(isinstance(e["id"], str) and e["entity_type"] == "lead" for e in events)
    assert [e["created_at"] for e in events] == sorted((e["created_at"] for e in events),
                                                       reverse=True)
    by_deal = {(s["deal_id"], s["changed_at"]): s for s in expected}
    for e in events:
        s = by_deal[(e["entity_id"], e["created_at"])]
        after = e["value_after"][0]["lead_status"]
        assert after["pipeline_id"] == s["pipeline_id"]
        assert after["id"] in (s["stage_id"], WON, LOST)
        assert e["value_before"][0]["lead_status"]["id"] in (s["previous_stage_id"], WON, LOST)
    deal = amo_dataset.deals[0]
    amo_dataset.delete("deals", deal["id"])
    amo_dataset.restore("deals", deal["id"])
    recent, _ = all_pages(amo_sandbox, "/api/v4/events", amo_headers,
                          **{"filter[type][]": ["lead_deleted", "lead_restored"],
                             "filter[created_at]": amo_dataset.now})
    assert [(e["type"], e["entity_id"]) for e in recent] == [("lead_restored", deal["id"]),
                                                             ("lead_deleted", deal["id"])]


def test_events_entity_filter_and_limit_quirk(amo_dataset, amo_sandbox, amo_headers):
    items, _ = all_pages(amo_sandbox, "/api/v4/events", amo_headers,
                         **{"filter[entity][]": "task", "limit": 100})
    assert items and all(e["type"].startswith("task_") for e in items)
    done = {t["id"]: t["completed_at"] for t in amo_dataset.tasks
            if t["is_completed"] and not t["is_deleted"]}
    assert len(items) == len(done) + sum(e["entity"] == "task" for e in amo_dataset.events)
    completed = [e for e in items if e["type"] == "task_completed"]
    assert {e["entity_id"]: e["created_at"] for e in completed} == done
    big = get(amo_sandbox, "/api/v4/events", amo_headers, limit=250).json()
    assert len(big["_embedded"]["events"]) == 50      # the documented paging bug


# ---- custom fields and write-back ------------------------------------------------------------
def test_custom_fields_paged_by_50_and_created_by_post(amo_dataset, amo_sandbox, amo_headers):
    url = amo_sandbox.url + "/api/v4/companies/custom_fields"
    payload = [{"type": "numeric", "name": f"KPI {i}", "code": f"KPI_{i}", "is_api_only": True}
               for i in range(60)]
    r = requests.post(url, json=payload, headers=amo_headers, timeout=5)
    assert r.status_code == 201
    created = r.json()["_embedded"]["custom_fields"]
    assert len(created) == 60 and created[0]["type"] == "numeric" and created[0]["is_api_only"]
    first = requests.get(url, params={"limit": 250}, headers=amo_headers, timeout=5).json()
    assert len(first["_embedded"]["custom_fields"]) == 50 and "next" in first["_links"]
    fields, pages = all_pages(amo_sandbox, "/api/v4/companies/custom_fields", amo_headers,
                              limit=250)
    assert pages == 2 and len(fields) == 63
    r = requests.post(url, json=[{"type": "numeric", "name": "Dup", "code": "KPI_1"}],
                      headers=amo_headers, timeout=5)
    assert r.status_code == 400 and r.json()["validation-errors"][0]["request_id"] == "0"


def test_patch_changes_later_reads_and_bumps_updated_at(amo_dataset, amo_sandbox, amo_headers):
    f = amo_dataset.add_field("contact", "KPI: Win rate, %", "numeric", code="KPI_WIN_RATE")
    a, b = [c for c in amo_dataset.contacts if not c["is_deleted"]][:2]
    old = a["updated_at"]
    body = [{"id": a["id"], "custom_fields_values": [{"field_id": f["id"], "values": [{"value": "42.5"}]}]},
            {"id": b["id"], "custom_fields_values": [{"field_code": "KPI_WIN_RATE", "values": [{"value": "7"}]}]}]
    r = requests.patch(amo_sandbox.url + "/api/v4/contacts", json=body, headers=amo_headers,
                       timeout=5)
    assert r.status_code == 200
    out = r.json()["_embedded"]["contacts"]
    assert [o["id"] for o in out] == [a["id"], b["id"]] and out[0]["updated_at"] > old
    item = get(amo_sandbox, "/api/v4/contacts", amo_headers, **{
        "filter[updated_at][from]": out[0]["updated_at"]}).json()["_embedded"]["contacts"]
    values = {i["id"]: {v["field_id"]: v["values"][0]["value"]
                        for v in i["custom_fields_values"]} for i in item}
    assert values[a["id"]][f["id"]] == "42.5" and values[b["id"]][f["id"]] == "7"
    clear = [{"id": a["id"], "custom_fields_values": [{"field_id": f["id"], "values": None}]}]
    r = requests.patch(amo_sandbox.url + "/api/v4/contacts", json=clear, headers=amo_headers,
                       timeout=5)
    assert r.status_code == 200 and f["id"] not in a["custom"]


@pytest.mark.parametrize("bad, path", [
    ({"field": "numeric", "value": "forty"}, "custom_fields_values.0.values.0.value"),
    ({"field": 123, "value": "1"}, "custom_fields_values.0.field_id"),
    ({"card": 999, "value": "1"}, "id"),
])
def test_bad_patch_rejects_whole_batch(amo_dataset, amo_sandbox, amo_headers, bad, path):
    f = amo_dataset.add_field("company", "KPI", "numeric")
    good, target = [c for c in amo_dataset.companies if not c["is_deleted"]][:2]
    field_id = f["id"] if bad.get("field") == "numeric" or "card" in bad else bad["field"]
    body = [{"id": good["id"], "custom_fields_values": [{"field_id": f["id"], "values": [{"value": "1"}]}]},
            {"id": bad.get("card", target["id"]),
             "custom_fields_values": [{"field_id": field_id, "values": [{"value": bad["value"]}]}]}]
    r = requests.patch(amo_sandbox.url + "/api/v4/companies", json=body, headers=amo_headers,
                       timeout=5)
    assert r.status_code == 400 and r.headers["Content-Type"] == "application/problem+json"
    (err,) = r.json()["validation-errors"]
    assert err["request_id"] == "1" and err["errors"][0]["path"] == path
    assert f["id"] not in good["custom"]        # nothing applied


def test_patch_batch_over_50_is_400(amo_dataset, amo_sandbox, amo_headers):
    body = [{"id": c["id"]} for c in amo_dataset.contacts[:51]]
    r = requests.patch(amo_sandbox.url + "/api/v4/contacts", json=body, headers=amo_headers,
                       timeout=5)
    assert r.status_code == 400


# ---- OAuth -----------------------------------------------------------------------------------
def _token(server, **body):
    base = {"client_id": server.client_id, "client_secret": server.client_secret,
            "redirect_uri": server.redirect_uri}
    return requests.post(server.url + "/oauth2/access_token", json={**base, **body}, timeout=5)


def test_oauth_code_then_refresh_rotation(amo_sandbox):
    code = amo_sandbox.issue_code()
    r = _token(amo_sandbox, grant_type="authorization_code", code=code)
    assert r.status_code == 200 and r.json()["token_type"] == "Bearer"
    first = r.json()
    assert _token(amo_sandbox, grant_type="authorization_code", code=code).status_code == 400
    auth = {"Authorization": "Bearer " + first["access_token"]}
    assert get(amo_sandbox, "/api/v4/account", auth).status_code == 200
    r = _token(amo_sandbox, grant_type="refresh_token", refresh_token=first["refresh_token"])
    second = r.json()
    assert r.status_code == 200 and second["refresh_token"] != first["refresh_token"]
    reused = _token(amo_sandbox, grant_type="refresh_token", refresh_token=first["refresh_token"])
    assert reused.status_code == 401 and reused.json()["hint"] == "Token has been revoked"
    assert _token(amo_sandbox, grant_type="refresh_token",
                  refresh_token=second["refresh_token"]).status_code == 200
    bad = _token(amo_sandbox, grant_type="authorization_code", code=amo_sandbox.issue_code(),
                 client_secret="wrong")
    assert bad.status_code == 401 and "wrong" not in bad.text


def test_expired_access_token_gets_401(amo_sandbox):
    tokens = _token(amo_sandbox, grant_type="authorization_code",
                    code=amo_sandbox.issue_code()).json()
    auth = {"Authorization": "Bearer " + tokens["access_token"]}
    assert get(amo_sandbox, "/api/v4/users", auth).status_code == 200
    amo_sandbox.expire_access_tokens()
    assert get(amo_sandbox, "/api/v4/users", auth).status_code == 401


# ---- limits and faults -----------------------------------------------------------------------
class FakeClock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_rate_limit_429_then_block(amo_sandbox, amo_headers):
    clock = FakeClock()
    amo_sandbox.clock = clock
    amo_sandbox.set_limits(True)
    codes = [get(amo_sandbox, "/api/v4/account", amo_headers).status_code for _ in range(9)]
    assert codes == [200] * 7 + [429, 429]
    r = get(amo_sandbox, "/api/v4/account", amo_headers)
    assert r.headers["Content-Type"] == "application/problem+json" and r.json()["status"] == 429
    clock.t += 1.01
    assert get(amo_sandbox, "/api/v4/account", amo_headers).status_code == 200
    amo_sandbox.block_after = 4
    clock.t += 1.01
    codes = [get(amo_sandbox, "/api/v4/account", amo_headers).status_code for _ in range(9)]
    assert codes[:7] == [200] * 7 and codes[7] == 429 and codes[8] == 403
    clock.t += 60
    r = get(amo_sandbox, "/api/v4/account", amo_headers)
    assert r.status_code == 403 and "nginx" in r.text and r.headers["Content-Type"] == "text/html"
    amo_sandbox.unblock()
    assert get(amo_sandbox, "/api/v4/account", amo_headers).status_code == 200


def test_forced_faults_and_request_log(amo_sandbox, amo_headers):
    amo_sandbox.fail_next("500")
    r = get(amo_sandbox, "/api/v4/leads", amo_headers)
    assert r.status_code == 500 and r.json()["status"] == 500
    amo_sandbox.fail_next("truncated")
    r = get(amo_sandbox, "/api/v4/leads", amo_headers)
    with pytest.raises(json.JSONDecodeError):
        json.loads(r.text)
    amo_sandbox.fail_next("reset")
    with pytest.raises(requests.ConnectionError):
        get(amo_sandbox, "/api/v4/leads", amo_headers)
    amo_sandbox.fail_next("badjson")
    assert get(amo_sandbox, "/api/v4/leads", amo_headers).text.startswith("<html>")
    assert get(amo_sandbox, "/api/v4/leads", amo_headers, limit=3).status_code == 200
    log = amo_sandbox.request_log
    assert [e["fault"] for e in log] == ["500", "truncated", "reset", "badjson", None]
    assert log[-1]["params"] == {"limit": "3"} and log[-1]["status"] == 200
    assert log[2]["status"] is None


def test_fault_rate_is_seeded(amo_dataset, amo_headers):
    def run():
        with AmoSandbox(amo_dataset, limits=False, fault_rate=0.5, seed=3) as s:
            return [get(s, "/api/v4/account", amo_headers).status_code for _ in range(12)]
    first = run()
    assert first == run() and 500 in first and 200 in first


def test_https_with_self_signed_certificate(amo_headers):
    with AmoSandbox(generate(1, 30), limits=False, https=True) as s:
        assert s.url.startswith("https://")
        r = requests.get(s.url + "/api/v4/account", headers=amo_headers, verify=s.cert_path,
                         timeout=5)
        assert r.status_code == 200


def test_status_filter_and_created_at_order(amo_dataset, amo_sandbox, amo_headers):
    pipe = amo_dataset.pipelines[0]
    items, _ = all_pages(amo_sandbox, "/api/v4/leads", amo_headers, limit=250, **{
        "filter[statuses][0][pipeline_id]": pipe["id"], "filter[statuses][0][status_id]": WON,
        "order[created_at]": "desc"})
    expected = [d for d in amo_dataset.deals if d["pipeline_id"] == pipe["id"]
                and d["status"] == "won" and not d["is_deleted"]]
    assert sorted(i["id"] for i in items) == sorted(d["id"] for d in expected) and expected
    created = [i["created_at"] for i in items]
    assert created == sorted(created, reverse=True)
    assert get(amo_sandbox, "/api/v4/leads", amo_headers,
               **{"filter[id]": "abc"}).status_code == 400


def test_full_last_page_can_link_to_a_204(amo_dataset, amo_sandbox, amo_headers):
    visible = sum(not c["is_deleted"] for c in amo_dataset.companies)
    assert get(amo_sandbox, "/api/v4/companies", amo_headers,
               limit=visible).json()["_links"].get("next") is None
    amo_sandbox.next_on_full_page = True
    last = get(amo_sandbox, "/api/v4/companies", amo_headers, limit=visible).json()
    nxt = requests.get(last["_links"]["next"]["href"], headers=amo_headers, timeout=5)
    assert nxt.status_code == 204 and nxt.content == b""


def test_single_card_patch(amo_dataset, amo_sandbox, amo_headers):
    f = amo_dataset.fields["company"][1]          # "Discount, %", numeric
    company = next(c for c in amo_dataset.companies if not c["is_deleted"])
    r = requests.patch(f"{amo_sandbox.url}/api/v4/companies/{company['id']}", headers=amo_headers,
                       json={"custom_fields_values": [{"field_id": f["id"], "values": [{"value": 12}]}]},
                       timeout=5)
    assert r.status_code == 200 and company["custom"][f["id"]] == 12
    assert r.json()["_embedded"]["companies"][0]["updated_at"] == company["updated_at"]


def test_timeout_fault_holds_then_drops(amo_dataset, amo_headers):
    with AmoSandbox(amo_dataset, limits=False, timeout_hold_s=2.0) as s:
        s.fail_next("timeout")
        with pytest.raises(requests.Timeout):
            requests.get(s.url + "/api/v4/account", headers=amo_headers, timeout=0.2)
        assert requests.get(s.url + "/api/v4/account", headers=amo_headers,
                            timeout=5).status_code == 200
