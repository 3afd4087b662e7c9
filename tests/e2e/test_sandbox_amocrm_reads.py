"""The amoCRM sandbox server, reads: auth errors and shapes, paging, filters and order, events."""

import requests

from sandbox.amocrm import LOST, WON, AmoSandbox
from tests.fixtures_amocrm import all_pages, get


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
    deal = next(
        d for d in amo_dataset.deals if len(d["contact_ids"]) >= 2 and d["company_id"] and not d["is_deleted"]
    )
    r = get(amo_sandbox, "/api/v4/leads", amo_headers, **{"with": "contacts", "filter[id][]": deal["id"]})
    (lead,) = r.json()["_embedded"]["leads"]
    assert lead["price"] == int(round(deal["amount"])) and isinstance(lead["price"], int)
    assert lead["created_at"] == deal["created_at"] and lead["is_deleted"] is False
    assert [c["id"] for c in lead["_embedded"]["contacts"]] == deal["contact_ids"]
    assert [c["is_main"] for c in lead["_embedded"]["contacts"]][:2] == [True, False]
    assert lead["_embedded"]["companies"] == [
        {"id": deal["company_id"], "_links": lead["_embedded"]["companies"][0]["_links"]}
    ]
    expected = {"won": WON, "lost": LOST}.get(deal["status"], deal["stage_id"])
    assert lead["status_id"] == expected
    r = get(amo_sandbox, "/api/v4/leads", amo_headers, **{"filter[id][]": deal["id"]})
    assert "contacts" not in r.json()["_embedded"]["leads"][0]["_embedded"]


def test_contact_custom_fields_read_shape(amo_dataset, amo_sandbox, amo_headers):
    c = next(c for c in amo_dataset.contacts if c["custom"] and not c["is_deleted"])
    item = get(amo_sandbox, "/api/v4/contacts", amo_headers, **{"filter[id][]": c["id"]}).json()["_embedded"][
        "contacts"
    ][0]
    by_code = {v["field_code"]: v for v in item["custom_fields_values"]}
    assert by_code["PHONE"]["values"][0]["value"] == c["phone"]
    by_id = {v["field_id"]: v for v in item["custom_fields_values"]}
    for fid, value in c["custom"].items():
        assert set(by_id[fid]) == {"field_id", "field_name", "field_code", "field_type", "values"}
        assert by_id[fid]["values"][0]["value"] == str(value).removesuffix(".0")
    plain = next(x for x in amo_dataset.companies if not x["custom"] and not x["is_deleted"])
    item = get(amo_sandbox, "/api/v4/companies", amo_headers, **{"filter[id][]": plain["id"]}).json()[
        "_embedded"
    ]["companies"][0]
    assert item["custom_fields_values"] is None


def test_task_and_note_shapes(amo_dataset, amo_sandbox, amo_headers):
    tasks, _ = all_pages(amo_sandbox, "/api/v4/tasks", amo_headers, limit=250)
    assert len(tasks) == sum(not t["is_deleted"] for t in amo_dataset.tasks)
    assert {t["entity_type"] for t in tasks} == {"leads", "contacts", "companies"}
    assert all("completed_at" not in t for t in tasks)
    assert all(t["result"] == [] for t in tasks if not t["is_completed"])
    src = amo_dataset.by_id("tasks")[tasks[0]["id"]]
    assert tasks[0]["complete_till"] == src["due_at"]
    notes, _ = all_pages(
        amo_sandbox,
        "/api/v4/contacts/notes",
        amo_headers,
        limit=250,
        **{"filter[note_type][]": ["call_in", "call_out"]},
    )
    calls = [c for c in amo_dataset.calls if c["entity_type"] == "contact"]
    assert sorted(n["id"] for n in notes) == [c["id"] for c in calls]
    call_status = {"talked": 4, "no_answer": 6, "busy": 7, "declined": 3, "wrong_number": 5}
    by_id = amo_dataset.by_id("calls")
    for n in notes:
        c = by_id[n["id"]]
        assert n["note_type"] == "call_" + c["direction"] and n["entity_id"] == c["entity_id"]
        assert n["params"]["call_status"] == call_status[c["outcome"]]
        assert n["params"]["duration"] == c["duration_s"]


def test_note_type_filter(amo_dataset, amo_sandbox, amo_headers):
    notes, _ = all_pages(
        amo_sandbox, "/api/v4/leads/notes", amo_headers, limit=250, **{"filter[note_type][]": "call_in"}
    )
    expected = [c["id"] for c in amo_dataset.calls if c["entity_type"] == "deal" and c["direction"] == "in"]
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


def test_full_last_page_can_link_to_a_204(amo_dataset, amo_sandbox, amo_headers):
    visible = sum(not c["is_deleted"] for c in amo_dataset.companies)
    assert (
        get(amo_sandbox, "/api/v4/companies", amo_headers, limit=visible).json()["_links"].get("next") is None
    )
    amo_sandbox.next_on_full_page = True
    last = get(amo_sandbox, "/api/v4/companies", amo_headers, limit=visible).json()
    nxt = requests.get(last["_links"]["next"]["href"], headers=amo_headers, timeout=5)
    assert nxt.status_code == 204 and nxt.content == b""


# ---- filters and order -----------------------------------------------------------------------
def test_updated_at_range_and_order(amo_dataset, amo_sandbox, amo_headers):
    stamps = sorted(c["updated_at"] for c in amo_dataset.contacts)
    lo, hi = stamps[10], stamps[50]
    params = {
        "filter[updated_at][from]": lo,
        "filter[updated_at][to]": hi,
        "order[updated_at]": "asc",
        "limit": 7,
    }
    items, pages = all_pages(amo_sandbox, "/api/v4/contacts", amo_headers, **params)
    expected = sorted(
        (c["updated_at"], c["id"])
        for c in amo_dataset.contacts
        if lo <= c["updated_at"] <= hi and not c["is_deleted"]
    )
    assert [(i["updated_at"], i["id"]) for i in items] == expected and pages > 1
    desc, _ = all_pages(
        amo_sandbox, "/api/v4/contacts", amo_headers, **{**params, "order[updated_at]": "desc"}
    )
    assert [i["id"] for i in desc] == [i["id"] for i in reversed(items)]
    by_id, _ = all_pages(
        amo_sandbox,
        "/api/v4/contacts",
        amo_headers,
        **{"filter[updated_at][from]": lo, "order[id]": "desc", "limit": 250},
    )
    assert [i["id"] for i in by_id] == sorted(
        (c["id"] for c in amo_dataset.contacts if c["updated_at"] >= lo and not c["is_deleted"]), reverse=True
    )


def test_single_timestamp_means_equal_on_leads_but_after_on_tasks(amo_dataset, amo_sandbox, amo_headers):
    t = sorted(d["updated_at"] for d in amo_dataset.deals if not d["is_deleted"])[-40]
    leads, _ = all_pages(amo_sandbox, "/api/v4/leads", amo_headers, **{"filter[updated_at]": t})
    assert {i["updated_at"] for i in leads} == {t}
    tt = sorted(x["updated_at"] for x in amo_dataset.tasks)[-30]
    tasks, _ = all_pages(amo_sandbox, "/api/v4/tasks", amo_headers, **{"filter[updated_at]": tt})
    assert len(tasks) == sum(x["updated_at"] >= tt and not x["is_deleted"] for x in amo_dataset.tasks) >= 25


def test_filters_ignored_without_api_filter_addon(amo_dataset, amo_headers):
    with AmoSandbox(amo_dataset, limits=False, api_filter=False) as server:
        body = get(
            server, "/api/v4/leads", amo_headers, limit=250, **{"filter[id][]": amo_dataset.deals[0]["id"]}
        ).json()
        assert len(body["_embedded"]["leads"]) == 250


def test_new_write_shows_up_in_incremental_query(amo_dataset, amo_sandbox, amo_headers):
    cutoff = amo_dataset.now
    assert (
        get(amo_sandbox, "/api/v4/leads", amo_headers, **{"filter[updated_at][from]": cutoff}).status_code
        == 204
    )
    deal = amo_dataset.deals[5]
    amo_dataset.update("deals", deal["id"], name="Renamed")
    body = get(amo_sandbox, "/api/v4/leads", amo_headers, **{"filter[updated_at][from]": cutoff}).json()
    assert [(i["id"], i["name"]) for i in body["_embedded"]["leads"]] == [(deal["id"], "Renamed")]


def test_status_filter_and_created_at_order(amo_dataset, amo_sandbox, amo_headers):
    pipe = amo_dataset.pipelines[0]
    items, _ = all_pages(
        amo_sandbox,
        "/api/v4/leads",
        amo_headers,
        limit=250,
        **{
            "filter[statuses][0][pipeline_id]": pipe["id"],
            "filter[statuses][0][status_id]": WON,
            "order[created_at]": "desc",
        },
    )
    expected = [
        d
        for d in amo_dataset.deals
        if d["pipeline_id"] == pipe["id"] and d["status"] == "won" and not d["is_deleted"]
    ]
    assert sorted(i["id"] for i in items) == sorted(d["id"] for d in expected) and expected
    created = [i["created_at"] for i in items]
    assert created == sorted(created, reverse=True)
    assert get(amo_sandbox, "/api/v4/leads", amo_headers, **{"filter[id]": "abc"}).status_code == 400


# ---- events ----------------------------------------------------------------------------------
def test_events_status_changes_and_deletions(amo_dataset, amo_sandbox, amo_headers):
    sc = amo_dataset.stage_changes
    lo, hi = sc[len(sc) // 2]["changed_at"], sc[-1]["changed_at"]
    params = {
        "filter[type][]": "lead_status_changed",
        "filter[created_at][from]": lo,
        "filter[created_at][to]": hi,
        "limit": 100,
    }
    events, _ = all_pages(amo_sandbox, "/api/v4/events", amo_headers, **params)
    expected = [s for s in sc if lo <= s["changed_at"] <= hi and s["previous_stage_id"]]
    assert len(events) == len(expected) > 100
    assert all(isinstance(e["id"], str) and e["entity_type"] == "lead" for e in events)
    assert [e["created_at"] for e in events] == sorted((e["created_at"] for e in events), reverse=True)
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
    recent, _ = all_pages(
        amo_sandbox,
        "/api/v4/events",
        amo_headers,
        **{"filter[type][]": ["lead_deleted", "lead_restored"], "filter[created_at]": amo_dataset.now},
    )
    assert [(e["type"], e["entity_id"]) for e in recent] == [
        ("lead_restored", deal["id"]),
        ("lead_deleted", deal["id"]),
    ]


def test_events_entity_filter_and_limit_quirk(amo_dataset, amo_sandbox, amo_headers):
    items, _ = all_pages(
        amo_sandbox, "/api/v4/events", amo_headers, **{"filter[entity][]": "task", "limit": 100}
    )
    assert items and all(e["type"].startswith("task_") for e in items)
    done = {
        t["id"]: t["completed_at"] for t in amo_dataset.tasks if t["is_completed"] and not t["is_deleted"]
    }
    assert len(items) == len(done) + sum(e["entity"] == "task" for e in amo_dataset.events)
    completed = [e for e in items if e["type"] == "task_completed"]
    assert {e["entity_id"]: e["created_at"] for e in completed} == done
    big = get(amo_sandbox, "/api/v4/events", amo_headers, limit=250).json()
    assert len(big["_embedded"]["events"]) == 50  # the documented paging bug
