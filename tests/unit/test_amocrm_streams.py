"""amoCRM streams with `responses`: parsing of every stream (real-shape quirks), paging,
incremental parameters and bookmarks."""

import json
from datetime import datetime, timezone
from urllib.parse import parse_qsl, urlsplit

import pytest
import responses

from tests.unit.test_amocrm_support import (
    BASE,
    RUN,
    RUN_TS,
    calls_to,
    fetch_all,
    hal,
    make_adapter,
    qdict,
    query,
    rows,
    serve_pages,
)

T1 = 1763892000  # 2025-11-23T10:00:00Z
T1_ISO = "2025-11-23T10:00:00Z"
RUN_ISO = "2026-11-23T10:00:00Z"
# A bookmark's wider reads (adapters.amocrm.reread) just done: the next read is incremental.
DONE = {"reread_at": RUN_ISO, "reconciled_at": RUN_ISO}
DONE_JSON = f'"reconciled_at":"{RUN_ISO}","reread_at":"{RUN_ISO}"'


def lead(i, **kw):
    item = {
        "id": i,
        "name": f"Deal {i}",
        "price": 1500,
        "responsible_user_id": 7,
        "group_id": 0,
        "status_id": 5001,
        "pipeline_id": 77,
        "loss_reason_id": None,
        "created_by": 0,
        "updated_by": 0,
        "created_at": T1 - 86400,
        "updated_at": T1 + i,
        "closed_at": None,
        "closest_task_at": None,
        "is_deleted": False,
        "custom_fields_values": None,
        "score": None,
        "account_id": 1,
        "labor_cost": None,
        "_links": {"self": {"href": "x"}},
        "_embedded": {
            "tags": [],
            "companies": [{"id": 20001}],
            "contacts": [{"id": 300001, "is_main": False}, {"id": 300002, "is_main": True}],
        },
    }
    item.update(kw)
    return item


@pytest.fixture
def adapter(tmp_path):
    a = make_adapter(tmp_path)
    yield a
    a.close()


@responses.activate
def test_deals_parse_links_company_status_and_currency(adapter):
    responses.get(BASE + "/api/v4/account", json={"id": 1, "is_api_filter_enabled": True})
    won = lead(2, status_id=142, closed_at=T1, _embedded={"companies": [], "contacts": []})
    lost = lead(3, status_id=143, price=None, is_deleted=True)
    serve_pages("/api/v4/leads", [hal("leads", [lead(1), won, lost])])
    pages = fetch_all(adapter, "deals")
    deals = {d["id"]: d for d in rows(pages, "deals")}
    d1 = deals[1]
    assert d1 == {
        **d1,
        "name": "Deal 1",
        "pipeline_id": 77,
        "stage_id": 5001,
        "status": "open",
        "amount": 1500.0,
        "currency": "RUB",
        "responsible_user_id": 7,
        "contact_id": 300002,
        "company_id": 20001,
        "created_at": "2025-11-22T10:00:00Z",
        "updated_at": "2025-11-23T10:00:01Z",
        "closed_at": None,
        "is_deleted": 0,
    }
    assert d1["raw"] == lead(1)
    assert deals[2]["status"] == "won" and deals[2]["closed_at"] == T1_ISO
    assert deals[2]["company_id"] is None and deals[2]["contact_id"] is None
    assert deals[3]["status"] == "lost" and deals[3]["amount"] is None and deals[3]["is_deleted"] == 1
    links = rows(pages, "deal_contacts")
    assert sorted((link["deal_id"], link["contact_id"], link["is_main"]) for link in links) == [
        (1, 300001, 0),
        (1, 300002, 1),
        (3, 300001, 0),
        (3, 300002, 1),
    ]
    assert "deal_contacts" in pages[0].rows
    q = qdict(calls_to("/api/v4/leads")[0])
    assert q["with"] == "contacts,source" and q["limit"] == "250" and q["order[updated_at]"] == "asc"


@responses.activate
def test_deal_currency_from_config(tmp_path):
    a = make_adapter(tmp_path, currency="USD")
    serve_pages("/api/v4/leads", [hal("leads", [lead(1)])])
    pages = fetch_all(a, "deals", bookmark=json.dumps({"since": T1_ISO, "api_filter": True}))
    assert rows(pages, "deals")[0]["currency"] == "USD"


@responses.activate
def test_pipelines_and_stages_semantics(adapter):
    statuses = [
        {"id": 77999, "name": "Unsorted", "sort": 10, "pipeline_id": 77, "type": 1},
        {"id": 5001, "name": "New", "sort": 20, "pipeline_id": 77, "type": 0},
        {"id": 142, "name": "Won", "sort": 10000, "pipeline_id": 77, "type": 0},
        {"id": 143, "name": "Lost", "sort": 11000, "pipeline_id": 77, "type": 0},
    ]
    body = {
        "_total_items": 2,
        "_embedded": {
            "pipelines": [
                {"id": 77, "name": "Sales", "sort": 1, "is_main": True, "_embedded": {"statuses": statuses}},
                {
                    "id": 78,
                    "name": "Other",
                    "sort": 2,
                    "is_main": False,
                    "_embedded": {
                        "statuses": [{"id": 142, "name": "Won", "sort": 1, "pipeline_id": 78, "type": 0}]
                    },
                },
            ]
        },
    }
    responses.get(BASE + "/api/v4/leads/pipelines", json=body)
    pages = fetch_all(adapter, "pipelines")
    assert [(p["id"], p["entity"], p["is_default"]) for p in rows(pages, "pipelines")] == [
        (77, "deal", 1),
        (78, "deal", 0),
    ]
    stages = {(s["pipeline_id"], s["id"]): s["semantics"] for s in rows(pages, "stages")}
    assert stages == {
        (77, 77999): "open",
        (77, 5001): "open",
        (77, 142): "won",
        (77, 143): "lost",
        (78, 142): "won",
    }
    assert len(responses.calls) == 1 and "page" not in qdict(responses.calls[0])
    assert pages[-1].bookmark == '{"at":"2026-11-23T10:00:00Z"}'


@responses.activate
def test_users(adapter):
    serve_pages(
        "/api/v4/users",
        [
            {
                "_page_count": 1,
                "_embedded": {
                    "users": [
                        {"id": 7, "name": "Anna", "email": "a@x.ru", "rights": {"is_active": True}},
                        {"id": 8, "name": "Old", "email": "o@x.ru", "rights": {"is_active": False}},
                    ]
                },
            }
        ],
    )
    pages = fetch_all(adapter, "users")
    assert [(u["id"], u["name"], u["email"], u["is_active"]) for u in rows(pages, "users")] == [
        (7, "Anna", "a@x.ru", 1),
        (8, "Old", "o@x.ru", 0),
    ]


@responses.activate
def test_users_403_for_non_admin_warns_and_does_not_block(adapter, caplog):
    responses.get(BASE + "/api/v4/users", status=403, json={"title": "Forbidden"})
    serve_pages("/api/v4/tasks", [None])
    pages = fetch_all(adapter, "users")
    assert rows(pages, "users") == [] and pages[-1].bookmark
    assert "users are not mirrored" in caplog.text
    assert fetch_all(adapter, "tasks")[-1].bookmark  # the source still works


@responses.activate
def test_contacts_and_companies(adapter):
    contact = {
        "id": 300001,
        "name": "Ivan",
        "first_name": "Ivan",
        "last_name": "",
        "responsible_user_id": 7,
        "created_at": T1,
        "updated_at": T1,
        "is_deleted": False,
        "custom_fields_values": None,
        "_embedded": {"tags": [], "companies": [{"id": 20001}]},
    }
    lone = {
        **contact,
        "id": 300002,
        "_embedded": {"tags": [], "companies": []},
        "custom_fields_values": [
            {
                "field_id": 1,
                "field_code": "PHONE",
                "field_type": "multitext",
                "values": [{"value": "+7900", "enum_code": "WORK"}],
            }
        ],
    }
    company = {
        "id": 20001,
        "name": "Alfa LLC",
        "responsible_user_id": 8,
        "created_at": T1,
        "updated_at": T1 + 5,
        "is_deleted": False,
        "custom_fields_values": None,
        "_embedded": {"tags": []},
    }
    bm = json.dumps({"since": T1_ISO, "api_filter": True})
    serve_pages("/api/v4/contacts", [hal("contacts", [contact, lone])])
    serve_pages("/api/v4/companies", [hal("companies", [company])])
    cs = rows(fetch_all(adapter, "contacts", bm), "contacts")
    assert [(c["id"], c["name"], c["company_id"], c["responsible_user_id"], c["is_deleted"]) for c in cs] == [
        (300001, "Ivan", 20001, 7, 0),
        (300002, "Ivan", None, 7, 0),
    ]
    assert cs[1]["raw"]["custom_fields_values"][0]["values"][0]["value"] == "+7900"
    co = rows(fetch_all(adapter, "companies", bm), "companies")
    assert co == [
        {
            "id": 20001,
            "name": "Alfa LLC",
            "responsible_user_id": 8,
            "created_at": T1_ISO,
            "updated_at": "2025-11-23T10:00:05Z",
            "is_deleted": 0,
            "raw": company,
        }
    ]


@responses.activate
def test_tasks_plural_entity_type_empty_result_and_incremental_params(adapter):
    task = {
        "id": 6000001,
        "created_by": 0,
        "updated_by": 0,
        "created_at": T1,
        "updated_at": T1 + 60,
        "responsible_user_id": 7,
        "group_id": 0,
        "entity_id": 1000001,
        "entity_type": "leads",
        "is_completed": False,
        "task_type_id": 1,
        "text": "Call back",
        "duration": 0,
        "complete_till": T1 + 86400,
        "result": [],
        "account_id": 1,
    }
    done = {
        **task,
        "id": 6000002,
        "entity_type": "contacts",
        "is_completed": True,
        "result": {"text": "Done"},
    }
    orphan = {**task, "id": 6000003, "entity_type": None, "entity_id": None}
    serve_pages("/api/v4/tasks", [hal("tasks", [task, done, orphan])])
    pages = fetch_all(adapter, "tasks", bookmark=json.dumps({"since": T1_ISO, **DONE}))
    ts = rows(pages, "tasks")
    assert [(t["id"], t["entity_type"], t["entity_id"], t["is_completed"]) for t in ts] == [
        (6000001, "deal", 1000001, 0),
        (6000002, "contact", 1000001, 1),
        (6000003, None, None, 0),
    ]
    assert ts[0]["due_at"] == "2025-11-24T10:00:00Z" and "completed_at" not in ts[0]
    q = qdict(calls_to("/api/v4/tasks")[0])
    assert q["order[id]"] == "asc" and "order[updated_at]" not in q
    assert q["filter[updated_at][from]"] == str(T1 - 300)
    # no upper bound: a task edited mid-read keeps its place in the id order
    assert "filter[updated_at][to]" not in q
    # ordered by id, so no per-page bookmark; the final one is the run start
    assert [p.bookmark for p in pages] == [None, "{" + DONE_JSON + ',"since":"2026-11-23T10:00:00Z"}']


def note(i, kind, **params):
    return {
        "id": i,
        "entity_id": 1000001,
        "created_by": 0,
        "updated_by": 0,
        "created_at": T1,
        "updated_at": T1,
        "responsible_user_id": 7,
        "group_id": 0,
        "note_type": kind,
        "params": params,
        "account_id": 1,
    }


@responses.activate
def test_calls_three_streams_and_status_mapping(adapter):
    notes = [
        note(1, "call_in", duration=60, call_status=4, phone="+7901"),
        note(2, "call_out", duration=0, call_status=6),
        note(3, "call_out", duration=0, call_status=5),
        note(4, "call_in", duration=0, call_status=7),
        note(5, "call_in", duration=30),
        note(6, "call_out", duration=0),
        note(7, "call_out", duration="12", call_status="4"),
    ]
    for path in ("leads", "contacts", "companies"):
        serve_pages(f"/api/v4/{path}/notes", [hal("notes", notes)])
    got = {}
    for stream, entity in (
        ("calls_leads", "deal"),
        ("calls_contacts", "contact"),
        ("calls_companies", "company"),
    ):
        cs = rows(fetch_all(adapter, stream, bookmark=json.dumps({"since": T1_ISO})), "calls")
        assert {c["entity_type"] for c in cs} == {entity}
        got[stream] = cs
    cs = got["calls_leads"]
    assert [(c["id"], c["direction"], c["status"], c["duration_s"]) for c in cs] == [
        (1, "in", "answered", 60),
        (2, "out", "failed", 0),
        (3, "out", "failed", 0),
        (4, "in", "missed", 0),
        (5, "in", "answered", 30),
        (6, "out", "failed", 0),
        (7, "out", "answered", 12),
    ]
    assert cs[0]["phone"] == "+7901" and cs[0]["started_at"] == T1_ISO
    pairs = query(calls_to("/api/v4/leads/notes")[0])
    assert ("filter[note_type][]", "call_in") in pairs and ("filter[note_type][]", "call_out") in pairs
    assert ("order[updated_at]", "asc") in pairs


@responses.activate
def test_events_stage_changes_deletions_restores_and_task_completion(adapter):
    def ev(i, kind, entity_id, at, before=(), after=()):
        return {
            "id": f"01pz58t6p04ymgsgfbmfyf{i:04d}",
            "type": kind,
            "entity_id": entity_id,
            "entity_type": kind.split("_")[0],
            "created_by": 0,
            "created_at": at,
            "value_before": list(before),
            "value_after": list(after),
            "account_id": 1,
            "_embedded": {"entity": {"id": entity_id}},
        }

    status = lambda s, p: {"lead_status": {"id": s, "pipeline_id": p}}  # noqa: E731
    page1 = [
        ev(1, "lead_status_changed", 1000001, T1, [status(5001, 77)], [status(142, 77)]),
        ev(2, "lead_deleted", 1000002, T1 + 10),
        ev(3, "contact_restored", 300001, T1 + 20),
        ev(4, "contact_deleted", 300001, T1 + 5),  # older than the restore: loses
        ev(5, "task_completed", 6000001, T1 + 30),
        ev(6, "company_deleted", 20001, T1 + 40),
    ]
    page2 = [
        ev(7, "lead_restored", 1000002, T1 + 1),  # older than page 1's deletion
        ev(8, "task_deleted", 6000002, T1 + 2),
    ]
    serve_pages("/api/v4/events", [hal("events", page1, next_page=True), hal("events", page2)])
    pages = fetch_all(adapter, "events", bookmark=json.dumps({"since": T1_ISO}))
    sc = rows(pages, "stage_changes")
    assert sc == [
        {
            "id": "01pz58t6p04ymgsgfbmfyf0001",
            "entity": "deal",
            "entity_id": 1000001,
            "pipeline_id": 77,
            "stage_id": 142,
            "previous_stage_id": 5001,
            "changed_at": T1_ISO,
            "raw": page1[0],
        }
    ]
    assert pages[0].deleted == {"deals": [1000002], "companies": [20001]}
    assert pages[0].restored == {"contacts": [300001]}
    assert pages[1].deleted == {} and pages[1].restored == {}
    # no task_restored event exists: the store weighs the deletion against the task's updated_at
    assert pages[1].deleted_at == {"tasks": {6000002: "2025-11-23T10:00:02Z"}}
    assert rows(pages, "tasks") == [
        {"id": 6000001, "is_completed": 1, "completed_at": "2025-11-23T10:00:30Z"}
    ]
    calls = calls_to("/api/v4/events")
    assert len(calls) >= 2
    q = query(calls[0])
    assert ("limit", "100") in q and ("filter[created_at][from]", str(T1 - 300)) in q
    assert ("filter[created_at][to]", str(RUN_TS)) in q
    assert ("filter[type][]", "lead_status_changed") in q and ("filter[type][]", "lead_deleted") in q


@responses.activate
def test_paging_stops_at_204_and_at_last_page_without_next(adapter):
    bm = json.dumps({"since": T1_ISO, "api_filter": True})
    # next link on page 2 leads to a 204 (PHP #193)
    serve_pages("/api/v4/leads", [hal("leads", [lead(1)], True), hal("leads", [lead(2)], True), None])
    assert [d["id"] for d in rows(fetch_all(adapter, "deals", bm), "deals")] == [1, 2]
    responses.reset()
    serve_pages(
        "/api/v4/contacts",
        [
            hal("contacts", [{"id": 1, "updated_at": T1}], True),
            hal("contacts", [{"id": 2, "updated_at": T1}]),
            hal("contacts", [{"id": 99, "updated_at": T1}]),
        ],
    )
    got = rows(fetch_all(adapter, "contacts", bm), "contacts")
    assert [c["id"] for c in got] == [1, 2]  # page 3 (prefetched) is never yielded
    responses.reset()
    serve_pages("/api/v4/companies", [None])
    pages = fetch_all(adapter, "companies", bm)
    assert len(pages) == 1 and pages[0].count() == 0 and len(responses.calls) == 1


@responses.activate
def test_many_pages_prefetched_and_yielded_in_order(adapter):
    n = 12
    body = [hal("leads", [lead(i * 10 + k) for k in range(3)], next_page=i < n - 1) for i in range(n)]
    serve_pages("/api/v4/leads", body)
    pages = fetch_all(adapter, "deals", json.dumps({"since": T1_ISO, "api_filter": True, **DONE}))
    ids = [d["id"] for d in rows(pages, "deals")]
    assert ids == [i * 10 + k for i in range(n) for k in range(3)]
    # per-page bookmarks follow the newest updated_at of the page, capped at run start
    assert pages[0].bookmark == '{"api_filter":true,' + DONE_JSON + ',"since":"2025-11-23T10:00:02Z"}'
    assert pages[-1].bookmark == '{"api_filter":true,' + DONE_JSON + ',"since":"2026-11-23T10:00:00Z"}'
    # each page repeats a row of the one before (pages of 3 bring 1-2 new rows, 18 pages),
    # plus prefetched pages in flight when the last one arrived
    assert 18 <= len(calls_to("/api/v4/leads")) <= 18 + 2 * 3


@pytest.mark.parametrize("step", [10, 0])  # deals 10 s apart; one bulk instant
@responses.activate
def test_edit_between_prefetched_pages_loses_no_row_and_bookmarks_never_pass_one(adapter, step):
    """A user edits a deal already served while later pages are in flight: the list moves up
    one row; in a bulk instant the check of the next page fails and reading restarts. Every
    deal is read and no page's bookmark passes a deal not yet read."""
    listed = [lead(i, updated_at=T1 + step * i) for i in range(1, 31)]
    served = []

    def cb(request):
        q = dict(parse_qsl(urlsplit(request.url).query))
        served.append(q)
        if len(served) == 3:  # deal 2 (page 1) is edited: it moves past the window
            listed[:] = [d for d in listed if d["id"] != 2] + [lead(2, updated_at=RUN_TS + 60)]
        lo = int(q.get("filter[updated_at][from]", 0))
        hi = int(q["filter[updated_at][to]"])
        size, page = min(int(q["limit"]), 5), int(q["page"])  # this list serves 5 rows a page
        left = [d for d in listed if lo <= d["updated_at"] <= hi]
        chunk = left[(page - 1) * size : page * size]
        if not chunk:
            return 204, {}, ""
        return 200, {}, json.dumps(hal("leads", chunk, next_page=len(left) > page * size))

    responses.add_callback(responses.GET, BASE + "/api/v4/leads", callback=cb)
    pages = fetch_all(adapter, "deals", json.dumps({"since": T1_ISO, "api_filter": True}))
    got = [d["id"] for d in rows(pages, "deals")]
    assert sorted(got) == list(range(1, 31)) and len(got) == 30
    assert any(int(q["page"]) > 1 for q in served)  # pages were planned ahead
    assert step or any(q["page"] == "1" for q in served[3:])  # the check failed: a restart
    read = set()
    for page in pages[:-1]:
        read |= {d["id"] for d in page.rows.get("deals", [])}
        if page.bookmark:
            since = json.loads(page.bookmark)["since"]
            unread = [i for i in range(1, 31) if i not in read]
            assert not unread or since <= _iso(T1 + step * min(unread))


def _iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@responses.activate
def test_incremental_params_and_first_run_checks_api_filter_once(adapter, tmp_path):
    responses.get(BASE + "/api/v4/account", json={"id": 1, "is_api_filter_enabled": True})
    for path in ("/api/v4/leads", "/api/v4/contacts"):
        serve_pages(path, [None])
    first = fetch_all(adapter, "deals")
    fetch_all(adapter, "contacts")
    assert len(calls_to("/api/v4/account")) == 1
    q = qdict(calls_to("/api/v4/leads")[0])
    assert "filter[updated_at][from]" not in q and q["filter[updated_at][to]"] == str(RUN_TS)
    # a first read is full: it counts as the wider reads too
    assert json.loads(first[-1].bookmark) == {"since": RUN_ISO, "api_filter": True, **DONE}
    # the next run reads from bookmark - overlap, without re-checking the account
    responses.reset()
    serve_pages("/api/v4/leads", [None])
    fresh = make_adapter(tmp_path, overlap_minutes=10)
    fetch_all(fresh, "deals", first[-1].bookmark)
    assert len(responses.calls) == 1
    q = qdict(responses.calls[0])
    assert q["filter[updated_at][from]"] == str(RUN_TS - 600)


@responses.activate
def test_full_ignores_bookmark(adapter):
    responses.get(BASE + "/api/v4/account", json={"id": 1, "is_api_filter_enabled": True})
    serve_pages("/api/v4/leads", [None])
    fetch_all(adapter, "deals", '{"since":"2026-01-01T00:00:00Z","api_filter":true}', full=True)
    assert "filter[updated_at][from]" not in qdict(calls_to("/api/v4/leads")[0])
    assert len(calls_to("/api/v4/account")) == 1


@responses.activate
def test_without_api_filter_pages_newest_first_and_stops_at_bookmark(adapter):
    responses.get(BASE + "/api/v4/account", json={"id": 1, "is_api_filter_enabled": False})
    newest = [lead(i, updated_at=T1 + 1000 - i) for i in range(3)]
    older = [lead(10, updated_at=T1 - 10), lead(11, updated_at=T1 - 10_000)]
    serve_pages(
        "/api/v4/leads",
        [
            hal("leads", newest, True),
            hal("leads", older, True),
            hal("leads", [lead(20, updated_at=T1 - 20_000)]),
        ],
    )
    pages = fetch_all(adapter, "deals", bookmark=json.dumps({"since": T1_ISO, **DONE}))
    assert [d["id"] for d in rows(pages, "deals")] == [0, 1, 2, 10]  # 10 is inside the overlap
    q = qdict(calls_to("/api/v4/leads")[0])
    assert q["order[updated_at]"] == "desc" and not any(k.startswith("filter") for k in q)
    assert json.loads(pages[-1].bookmark) == {"since": RUN_ISO, "api_filter": False, **DONE}
    assert all(p.bookmark is None for p in pages[:-1])
    # a later run with the mode remembered: one request, no account check
    responses.reset()
    serve_pages("/api/v4/leads", [hal("leads", [lead(1, updated_at=RUN_TS - 3600)], True)])
    fetch_all(adapter, "deals", pages[-1].bookmark, run=RUN.replace(hour=11))
    assert len(responses.calls) == 1


def test_unknown_stream_and_stream_names(tmp_path):
    a = make_adapter(tmp_path, streams=["deals", "users"])
    assert a.stream_names() == ["users", "deals"]
    assert [(s.name, s.mode) for s in a.streams()] == [("users", "snapshot"), ("deals", "changes")]
    with pytest.raises(ValueError, match="unknown amoCRM stream"):
        next(a.fetch("nope", None, RUN))
    assert make_adapter(tmp_path).stream_names() == [
        "users",
        "pipelines",
        "companies",
        "contacts",
        "deals",
        "tasks",
        "calls_leads",
        "calls_contacts",
        "calls_companies",
        "calls_customers",
        "events",
    ]
