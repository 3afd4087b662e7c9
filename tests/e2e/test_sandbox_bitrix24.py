"""The Bitrix24 sandbox answers like a real portal: the REST API's shapes, errors and limits."""

from __future__ import annotations

import re
from datetime import datetime

import pytest
import requests

from sandbox.bitrix24 import Bitrix24Sandbox
from sandbox.bitrix24.render import fmt_dt

ISO_MSK = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+03:00$")


def call(srv, method, params=None, **kw):
    return requests.post(srv.webhook_url + method, json=params or {}, timeout=10, **kw)


def ok(srv, method, params=None):
    r = call(srv, method, params)
    assert r.status_code == 200, r.text
    return r.json()


def alive(ds, table):
    return [r for r in ds.rows(table) if not r["is_deleted"]]


# ---- paging ---------------------------------------------------------------------------------


def test_counted_paging_has_total_and_next_until_the_last_page(b24_sandbox, b24_dataset):
    n = len(alive(b24_dataset, "deals"))
    first = ok(b24_sandbox, "crm.deal.list", {"start": 0, "order": {"ID": "ASC"}})
    assert first["total"] == n and first["next"] == 50 and len(first["result"]) == 50
    last_start = (n - 1) // 50 * 50
    last = ok(b24_sandbox, "crm.deal.list", {"start": last_start, "order": {"ID": "ASC"}})
    assert "next" not in last and len(last["result"]) == n - last_start
    assert last["total"] == n


def test_start_minus_one_skips_counting(b24_sandbox):
    body = ok(b24_sandbox, "crm.deal.list", {"start": -1, "select": ["ID"]})
    assert body["total"] == 0 and "next" not in body and len(body["result"]) == 50
    assert list(body["result"][0]) == ["ID"]


def test_id_window_with_start_minus_one_reads_every_live_deal_once(b24_sandbox, b24_dataset):
    b24_dataset.delete("deals", b24_dataset.deals[10]["id"])
    seen, last = [], 0
    while True:
        page = ok(
            b24_sandbox,
            "crm.deal.list",
            {"order": {"ID": "ASC"}, "filter": {">ID": last}, "select": ["ID"], "start": -1},
        )["result"]
        seen += [int(r["ID"]) for r in page]
        if len(page) < 50:
            break
        last = int(page[-1]["ID"])
    assert seen == [d["id"] for d in alive(b24_dataset, "deals")]
    assert b24_dataset.deals[10]["id"] not in seen


# ---- filters, order, value types ----------------------------------------------------------


def test_date_filter_order_and_in_filter(b24_sandbox, b24_dataset):
    deals = alive(b24_dataset, "deals")
    cut = sorted(d["updated_at"] for d in deals)[len(deals) // 2]
    want = sorted(d["id"] for d in deals if d["updated_at"] >= cut)
    got, start = [], 0
    while start is not None:
        body = ok(
            b24_sandbox,
            "crm.deal.list",
            {
                "filter": {">=DATE_MODIFY": fmt_dt(cut)},
                "order": {"DATE_MODIFY": "DESC"},
                "select": ["ID", "DATE_MODIFY"],
                "start": start,
            },
        )
        got += body["result"]
        start = body.get("next")
    assert sorted(int(r["ID"]) for r in got) == want
    stamps = [datetime.fromisoformat(r["DATE_MODIFY"]) for r in got]
    assert stamps == sorted(stamps, reverse=True)
    ids = [deals[3]["id"], deals[7]["id"], 999]
    body = ok(b24_sandbox, "crm.deal.list", {"filter": {"@ID": ids}, "select": ["ID"]})
    assert [r["ID"] for r in body["result"]] == [str(deals[3]["id"]), str(deals[7]["id"])]


def test_stage_and_category_filters_use_bitrix_ids(b24_sandbox, b24_dataset):
    won = [
        d["id"]
        for d in alive(b24_dataset, "deals")
        if d["status"] == "won" and d["pipeline_id"] == b24_dataset.pipelines[0]["id"]
    ]
    body = ok(
        b24_sandbox,
        "crm.deal.list",
        {"filter": {"STAGE_ID": "WON", "CATEGORY_ID": 0}, "select": ["ID", "STAGE_SEMANTIC_ID", "CLOSED"]},
    )
    assert body["total"] == len(won)
    assert all(r["STAGE_SEMANTIC_ID"] == "S" and r["CLOSED"] == "Y" for r in body["result"])
    other = ok(b24_sandbox, "crm.deal.list", {"filter": {"!CATEGORY_ID": 0}, "select": ["STAGE_ID"]})
    assert other["total"] > 0
    assert all(re.fullmatch(r"C\d+:[A-Z_]+", r["STAGE_ID"]) for r in other["result"])


def test_old_list_methods_return_numbers_as_strings(b24_sandbox):
    deal = ok(b24_sandbox, "crm.deal.list", {"select": ["*"]})["result"][0]
    assert re.fullmatch(r"\d+", deal["ID"]) and re.fullmatch(r"\d+\.\d\d", deal["OPPORTUNITY"])
    assert isinstance(deal["ASSIGNED_BY_ID"], str) and ISO_MSK.match(deal["DATE_MODIFY"])
    call_ = ok(b24_sandbox, "voximplant.statistic.get", {})["result"][0]
    assert call_["CALL_TYPE"] in ("1", "2") and call_["CALL_FAILED_CODE"] in ("200", "304", "603")
    hist = ok(b24_sandbox, "crm.stagehistory.list", {"entityTypeId": 2})["result"]["items"][0]
    assert hist["ID"].isdigit() and hist["TYPE_ID"] == "1"


def test_item_list_is_typed_and_camel_case(b24_sandbox, b24_dataset):
    d = alive(b24_dataset, "deals")[5]
    body = ok(
        b24_sandbox,
        "crm.item.list",
        {"entityTypeId": 2, "filter": {">id": d["id"] - 1}, "order": {"id": "ASC"}, "start": -1},
    )
    item = body["result"]["items"][0]
    assert item["id"] == d["id"] and item["contactIds"] == d["contact_ids"]
    assert item["opportunity"] == d["amount"] and ISO_MSK.match(item["updatedTime"])
    bad = call(b24_sandbox, "crm.item.list", {"entityTypeId": 2, "filter": {">NOPE": 1}})
    assert bad.status_code == 400 and bad.json()["error"] == "INVALID_ARG_VALUE"


def test_unencoded_plus_in_a_date_filter_is_an_error(b24_sandbox):
    url = b24_sandbox.webhook_url + "crm.deal.list?filter[>DATE_MODIFY]=2024-01-01T00:00:00+03:00"
    r = requests.get(url, timeout=10)
    assert r.status_code == 400 and r.json()["error"] == ""
    r = requests.get(url.replace("+", "%2B"), timeout=10)
    assert r.status_code == 200


def test_form_encoded_post_and_json_suffix(b24_sandbox, b24_dataset):
    third = alive(b24_dataset, "contacts")[2]["id"]
    r = requests.post(
        b24_sandbox.webhook_url + "crm.contact.list.json",
        data={"filter[<ID]": third, "select[]": ["ID", "NAME"], "start": "-1"},
        timeout=10,
    )
    assert r.status_code == 200
    assert [int(x["ID"]) for x in r.json()["result"]] == [c["id"] for c in alive(b24_dataset, "contacts")[:2]]


def test_tasks_nest_under_result_tasks_with_camel_keys(b24_sandbox, b24_dataset):
    done = next(t for t in alive(b24_dataset, "tasks") if t["is_completed"] and t["entity_type"] == "deal")
    body = ok(
        b24_sandbox,
        "tasks.task.list",
        {
            "filter": {"ID": done["id"]},
            "select": ["ID", "TITLE", "STATUS", "UF_CRM_TASK", "CHANGED_DATE", "CLOSED_DATE"],
        },
    )
    assert list(body["result"]) == ["tasks"]
    task = body["result"]["tasks"][0]
    assert task["id"] == str(done["id"]) and task["status"] == "5"
    assert task["ufCrmTask"] == [f"D_{done['entity_id']}"] and ISO_MSK.match(task["changedDate"])
    default = ok(b24_sandbox, "tasks.task.list", {"start": -1})["result"]["tasks"]
    assert int(default[0]["id"]) > int(default[1]["id"])  # default order is ID DESC


def test_pipelines_and_stages(b24_sandbox, b24_dataset):
    cats = ok(b24_sandbox, "crm.category.list", {"entityTypeId": 2})["result"]["categories"]
    assert cats[0]["id"] == 0 and cats[0]["isDefault"] == "Y"
    assert len(cats) == len(b24_dataset.pipelines)
    for cat in cats:
        eid = "DEAL_STAGE" if cat["id"] == 0 else f"DEAL_STAGE_{cat['id']}"
        rows = ok(b24_sandbox, "crm.status.list", {"filter": {"ENTITY_ID": eid}})["result"]
        assert [r["SEMANTICS"] for r in rows].count("S") == 1
        assert [r["SEMANTICS"] for r in rows].count("F") == 1
        assert all(r["ENTITY_ID"] == eid for r in rows)
    leads = ok(b24_sandbox, "crm.status.list", {"filter": {"ENTITY_ID": "STATUS"}})["result"]
    assert {r["STATUS_ID"] for r in leads} == {"NEW", "IN_PROCESS", "CONVERTED", "JUNK"}


# ---- batch ----------------------------------------------------------------------------------


def test_batch_sections_are_lists_for_list_cmd_and_empty_sections(b24_sandbox):
    body = ok(
        b24_sandbox, "batch", {"halt": 0, "cmd": ["crm.deal.list?start=-1&select[]=ID", "user.get?start=0"]}
    )
    res = body["result"]
    assert isinstance(res["result"], list) and len(res["result"]) == 2
    assert res["result_error"] == [] and res["result_next"] == []
    assert res["result_total"][0] == 0 and res["result_total"][1] > 0
    assert isinstance(res["result_time"][0]["operating"], float)


def test_batch_resolves_result_references_in_order(b24_sandbox, b24_dataset):
    deal = next(d for d in alive(b24_dataset, "deals") if d["contact_ids"])
    cmd = {
        "d": f"crm.deal.list?filter[ID]={deal['id']}&select[]=ID&select[]=CONTACT_ID",
        "c": "crm.contact.get?id=$result[d][0][CONTACT_ID]",
        "links": "crm.deal.contact.items.get?id=$result[d][0][ID]",
    }
    res = ok(b24_sandbox, "batch", {"cmd": cmd})["result"]
    assert res["result_error"] == []
    assert res["result"]["c"]["ID"] == str(deal["contact_ids"][0])
    assert [x["CONTACT_ID"] for x in res["result"]["links"]] == deal["contact_ids"]
    assert res["result"]["links"][0]["IS_PRIMARY"] == "Y"


def test_batch_sub_call_errors_have_empty_codes_and_halt_stops(b24_sandbox, b24_dataset):
    cid = alive(b24_dataset, "contacts")[0]["id"]
    cmd = {"a": "crm.contact.get?id=1", "b": f"crm.contact.get?id={cid}", "c": "no.such.method"}
    res = ok(b24_sandbox, "batch", {"halt": 0, "cmd": cmd})["result"]
    assert res["result_error"]["a"] == {"error": "", "error_description": "Not found"}
    assert res["result_error"]["c"]["error"] == "ERROR_METHOD_NOT_FOUND"
    assert res["result"]["b"]["ID"] == str(cid)
    halted = ok(b24_sandbox, "batch", {"halt": 1, "cmd": cmd})["result"]
    assert halted["result"] == [] and list(halted["result_error"]) == ["a"]


def test_batch_over_50_commands_is_rejected(b24_sandbox):
    r = call(b24_sandbox, "batch", {"cmd": {f"k{i}": "user.get" for i in range(51)}})
    assert r.status_code == 400 and r.json()["error"] == "ERROR_BATCH_LENGTH_EXCEEDED"


# ---- limits ---------------------------------------------------------------------------------


def test_leaky_bucket_answers_503_past_the_burst(b24_dataset):
    with Bitrix24Sandbox(b24_dataset, limits=True, bucket_size=5, drain_rate=0.001) as srv:
        batch = {"cmd": {f"k{i}": "user.get" for i in range(20)}}
        codes = [call(srv, "batch", batch).status_code] + [
            call(srv, "user.get").status_code for _ in range(5)
        ]
        assert codes == [200, 200, 200, 200, 200, 503]  # a batch is one bucket unit
        r = call(srv, "user.get")
        assert r.json() == {"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"}
        assert srv.limit_errors == 2
        other_ip = call(srv, "user.get", headers={"X-Forwarded-For": "10.0.0.2"})
        assert other_ip.status_code == 200


def test_operating_budget_blocks_a_method_with_429(b24_dataset):
    # A page costs 0.05 s, the budget is 0.12 s: two pages fit, a third spends it, whatever
    # milliseconds a loaded machine adds to each call.
    with Bitrix24Sandbox(
        b24_dataset, limits=False, cost_model=True, page_cost_s=0.05, operating_budget_s=0.12
    ) as srv:
        first = ok(srv, "crm.deal.list", {"start": -1, "select": ["ID"]})
        assert first["time"]["operating"] >= 0.05
        statuses = [call(srv, "crm.deal.list", {"start": -1}).status_code for _ in range(4)]
        assert statuses[-1] == 429 and 200 in statuses
        r = call(srv, "crm.deal.list", {"start": -1})
        body = r.json()
        assert r.status_code == 429 and body["error"] == "OPERATION_TIME_LIMIT"
        assert body["error_description"] == "Method is blocked due to operation time limit."
        assert body["time"]["operating_reset_at"] > first["time"]["start"]
        assert call(srv, "crm.contact.list", {"start": -1}).status_code == 200  # other methods work
        res = ok(srv, "batch", {"cmd": {"d": "crm.deal.list?start=-1", "l": "crm.lead.list?start=-1"}})
        assert res["result"]["result_error"]["d"]["error"] == "OPERATION_TIME_LIMIT"
        assert res["result"]["result_time"]["l"]["operating"] >= 0.002
        assert srv.limit_errors >= 3


def test_operating_time_drops_out_in_whole_baskets_at_the_reported_reset():
    from sandbox.bitrix24.auth import OperatingBudget

    now = [6_000.0]
    ob = OperatingBudget(480.0, 600.0, clock=lambda: now[0])
    ob.charge("crm.deal.list", 5.0)  # basket [6000, 6060)
    now[0] = 6065.0
    ob.charge("crm.deal.list", 3.0)  # basket [6060, 6120)
    assert ob.used("crm.deal.list") == (8.0, 6600)  # the oldest basket leaves at 6000 + 600
    now[0] = 6599.0
    assert ob.used("crm.deal.list")[0] == 8.0
    now[0] = 6600.0
    assert ob.used("crm.deal.list") == (3.0, 6660)
    now[0] = 6660.0
    assert ob.used("crm.deal.list")[0] == 0.0 and ob.used("crm.lead.list")[0] == 0.0


def test_counted_pages_cost_more_than_start_minus_one(b24_dataset):
    with Bitrix24Sandbox(b24_dataset, limits=False, cost_model=True, page_cost_s=0.001) as srv:
        fast = ok(srv, "crm.deal.list", {"start": -1})["time"]["processing"]
        # a counted page adds 2e-5 s per matching row on top of the page cost
        body = ok(srv, "crm.deal.list", {"start": 0})
        assert body["total"] > 200
        assert fast >= 0.001 and body["time"]["processing"] >= 0.001 + 2e-5 * body["total"]


# ---- auth -----------------------------------------------------------------------------------


def test_webhook_auth_errors(b24_dataset):
    with Bitrix24Sandbox(b24_dataset, limits=False, scopes=("crm",)) as srv:
        bad = requests.post(f"{srv.url}/rest/1/wrongsecret/crm.deal.list", json={}, timeout=10)
        assert bad.status_code == 401 and bad.json()["error"] == "NO_AUTH_FOUND"
        assert "wrongsecret" not in bad.text
        scope = call(srv, "tasks.task.list")
        assert scope.status_code in (401, 403) and scope.json()["error"] == "insufficient_scope"
        missing = call(srv, "crm.nothing.list")
        assert missing.status_code == 404 and missing.json()["error"] == "ERROR_METHOD_NOT_FOUND"
        assert all("sandboxsecret123" not in r["path"] for r in srv.request_log)


def test_oauth_refresh_tokens_rotate_and_are_single_use(b24_sandbox):
    srv = b24_sandbox
    creds = {"client_id": "sandbox.app", "client_secret": "sandbox-secret"}
    code = srv.issue_code()
    tok = requests.get(
        srv.oauth_url, params={**creds, "grant_type": "authorization_code", "code": code}, timeout=10
    ).json()
    assert tok["expires_in"] == 3600 and tok["client_endpoint"] == f"{srv.url}/rest/"
    assert {"access_token", "refresh_token", "expires", "member_id", "scope", "user_id"} <= set(tok)
    again = requests.get(
        srv.oauth_url, params={**creds, "grant_type": "authorization_code", "code": code}, timeout=10
    )
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    rest = tok["client_endpoint"] + "crm.deal.list"
    assert requests.post(rest, json={"auth": tok["access_token"], "start": -1}, timeout=10).status_code == 200
    srv.expire_access_tokens()
    expired = requests.post(rest, json={"auth": tok["access_token"]}, timeout=10)
    assert expired.status_code == 401 and expired.json()["error"] == "expired_token"
    refresh = {**creds, "grant_type": "refresh_token", "refresh_token": tok["refresh_token"]}
    new = requests.get(srv.oauth_url, params=refresh, timeout=10).json()
    assert new["refresh_token"] != tok["refresh_token"]
    assert requests.get(rest, params={"auth": new["access_token"]}, timeout=10).status_code == 200
    reused = requests.get(srv.oauth_url, params=refresh, timeout=10)
    assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"
    wrong = requests.get(srv.oauth_url, params={**refresh, "client_secret": "nope"}, timeout=10)
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
    assert srv.oauth.refreshes == 1


# ---- custom fields and write-back -------------------------------------------------------------


def test_userfield_add_then_update_changes_later_reads(b24_sandbox, b24_dataset):
    add = ok(
        b24_sandbox,
        "crm.contact.userfield.add",
        {
            "fields": {
                "FIELD_NAME": "KPI_WIN_RATE",
                "USER_TYPE_ID": "double",
                "EDIT_FORM_LABEL": {"en": "KPI: Win rate, %"},
            }
        },
    )
    assert isinstance(add["result"], int)
    dup = call(
        b24_sandbox,
        "crm.contact.userfield.add",
        {"fields": {"FIELD_NAME": "UF_CRM_KPI_WIN_RATE", "USER_TYPE_ID": "double"}},
    )
    assert dup.status_code == 400 and dup.json()["error_description"]
    listed = ok(b24_sandbox, "crm.contact.userfield.list", {"filter": {"FIELD_NAME": "UF_CRM_KPI_WIN_RATE"}})[
        "result"
    ]
    assert len(listed) == 1 and listed[0]["USER_TYPE_ID"] == "double"
    assert listed[0]["ENTITY_ID"] == "CRM_CONTACT" and listed[0]["EDIT_FORM_LABEL"] == "KPI: Win rate, %"

    cid = alive(b24_dataset, "contacts")[4]["id"]
    before = ok(b24_sandbox, "crm.contact.get", {"id": cid})["result"]
    assert before["UF_CRM_KPI_WIN_RATE"] is None
    upd = ok(
        b24_sandbox,
        "crm.contact.update",
        {"id": cid, "fields": {"UF_CRM_KPI_WIN_RATE": 42.5}, "params": {"REGISTER_HISTORY_EVENT": "N"}},
    )
    assert upd["result"] is True
    after = ok(b24_sandbox, "crm.contact.get", {"id": cid})["result"]
    assert after["UF_CRM_KPI_WIN_RATE"] == "42.5"
    assert datetime.fromisoformat(after["DATE_MODIFY"]) > datetime.fromisoformat(before["DATE_MODIFY"])
    row = ok(b24_sandbox, "crm.contact.list", {"filter": {"ID": cid}, "select": ["ID", "UF_*"]})["result"][0]
    assert row["UF_CRM_KPI_WIN_RATE"] == "42.5"
    since = ok(
        b24_sandbox, "crm.contact.list", {"filter": {">=DATE_MODIFY": after["DATE_MODIFY"]}, "select": ["ID"]}
    )["result"]
    assert str(cid) in [r["ID"] for r in since]  # write-back shows up in incremental pulls

    bad = call(b24_sandbox, "crm.contact.update", {"id": cid, "fields": {"UF_CRM_KPI_WIN_RATE": "lots"}})
    assert bad.status_code == 400 and bad.json()["error"] == "" and bad.json()["error_description"]
    gone = call(b24_sandbox, "crm.contact.update", {"id": 1, "fields": {"UF_CRM_KPI_WIN_RATE": 1}})
    assert gone.status_code == 400 and gone.json()["error"] == ""
    assert ok(b24_sandbox, "crm.contact.get", {"id": cid})["result"]["UF_CRM_KPI_WIN_RATE"] == "42.5"


def test_company_update_through_batch_and_invalid_field_name(b24_sandbox, b24_dataset):
    ok(
        b24_sandbox,
        "crm.company.userfield.add",
        {"fields": {"FIELD_NAME": "UF_KPI_REVENUE", "USER_TYPE_ID": "double"}},
    )
    ids = [c["id"] for c in alive(b24_dataset, "companies")[:2]]
    cmd = {
        f"u{i}": f"crm.company.update?id={cid}&fields[UF_CRM_KPI_REVENUE]={1000 * (i + 1)}"
        f"&params[REGISTER_HISTORY_EVENT]=N"
        for i, cid in enumerate(ids)
    }
    res = ok(b24_sandbox, "batch", {"cmd": cmd})["result"]
    assert res["result"] == {"u0": True, "u1": True} and res["result_error"] == []
    field = next(f for f in b24_dataset.fields["company"] if f["code"] == "UF_CRM_KPI_REVENUE")
    assert [b24_dataset.by_id("companies")[c]["custom"][field["id"]] for c in ids] == [1000.0, 2000.0]
    bad = call(
        b24_sandbox,
        "crm.company.userfield.add",
        {"fields": {"FIELD_NAME": "bad name!", "USER_TYPE_ID": "double"}},
    )
    assert bad.status_code == 400 and bad.json()["error"] == "ERROR_CORE"


# ---- plumbing ---------------------------------------------------------------------------------


def test_injected_fault_returns_html_500_and_log_hides_secrets(b24_sandbox):
    b24_sandbox.fail_next("500")
    r = call(b24_sandbox, "user.get")
    assert r.status_code == 500 and r.text.startswith("<html>")
    assert call(b24_sandbox, "user.get").status_code == 200
    log = b24_sandbox.request_log
    assert [e["status"] for e in log[-2:]] == [500, 200] and log[-1]["path"] == "/rest/1/***/user.get"


def test_https_option_serves_with_a_self_signed_certificate(b24_dataset):
    with Bitrix24Sandbox(b24_dataset, limits=False, https=True) as srv:
        assert srv.url.startswith("https://")
        r = requests.post(srv.webhook_url + "user.get", json={}, verify=srv.cert_path, timeout=10)
        assert r.status_code == 200 and r.json()["total"] == len(b24_dataset.users)
        with pytest.raises(requests.exceptions.SSLError):
            requests.post(srv.webhook_url + "user.get", json={}, timeout=10)


def test_truncated_fault_cuts_the_body(b24_sandbox):
    b24_sandbox.fail_next("truncated")
    r = call(b24_sandbox, "user.get")
    with pytest.raises(ValueError):
        r.json()
    assert b24_sandbox.request_log[-1]["fault"] == "truncated"


def test_batch_cmd_in_a_get_query_is_decoded_twice(b24_sandbox, b24_dataset):
    from urllib.parse import urlencode

    first = alive(b24_dataset, "deals")[0]["id"]
    q = urlencode(
        {
            "cmd[a]": f"crm.deal.list?filter[%3EID]={first}&select[0]=ID&start=-1",
            "cmd[b]": "crm.deal.get?id=$result[a][0][ID]",
        }
    )
    res = requests.get(b24_sandbox.webhook_url + "batch?" + q, timeout=10).json()["result"]
    assert res["result"]["b"]["ID"] == res["result"]["a"][0]["ID"] != str(first)
