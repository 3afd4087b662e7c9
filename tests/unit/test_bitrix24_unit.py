"""Bitrix24 adapter pieces on recorded-shape payloads (`responses` mocks, no server)."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
import responses

from adapters.bitrix24 import parsers as p
from adapters.bitrix24 import streams as st
from adapters.bitrix24.client import Bitrix24Client, encode, parse_batch, ref
from adapters.bitrix24.limits import LeakyBucket, OperatingBudget
from adapters.errors import AuthError, ScopeError, StreamError
from adapters.streams import Ctx, Stream
from connector.config.loader import SourceConfig
from tests.unit.b24_adapters import HOOK, adapter

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)


def batch_body(result, errors=None, times=None) -> dict:
    return {
        "result": {
            "result": result,
            "result_error": errors if errors is not None else [],
            "result_total": [],
            "result_next": [],
            "result_time": times or [],
        },
        "time": {"start": 1, "finish": 1.1, "duration": 0.1},
    }


# ---- batch encoding and parsing ---------------------------------------------------------


def test_encode_nests_php_style_escapes_values_and_keeps_references_raw():
    q = encode(
        {
            "filter": {">=DATE_MODIFY": "2026-11-23T10:00:00+00:00", ">ID": ref("p0", 49, "ID")},
            "select": ["*", "UF_*"],
            "start": -1,
        }
    )
    assert "filter[%3E%3DDATE_MODIFY]=2026-11-23T10%3A00%3A00%2B00%3A00" in q
    assert "filter[%3EID]=$result[p0][49][ID]" in q
    assert "select[0]=%2A&select[1]=UF_%2A" in q and q.endswith("start=-1")


def test_parse_batch_accepts_list_shaped_sections_and_empty_error_codes():
    body = batch_body([[{"ID": "1"}]], errors=[{"error": "", "error_description": "Not found"}])
    res = parse_batch(body, ["a", "b"])
    assert res.results == {"a": [{"ID": "1"}]}
    assert res.errors["b"].code == "" and res.errors["b"].description == "Not found"


def test_parse_batch_dict_sections_ignore_blank_errors():
    body = batch_body(
        {"x": {"tasks": []}},
        errors={"x": {"error": "", "error_description": ""}},
        times={"x": {"operating": 3.5}},
    )
    res = parse_batch(body, ["x"])
    assert res.errors == {} and res.times["x"]["operating"] == 3.5


# ---- parsers on real-shape rows (recorded bodies: test_bitrix24_parsers.py) ------------

DEAL = {
    "ID": "37",
    "TITLE": "Big deal",
    "CATEGORY_ID": "1",
    "STAGE_ID": "C1:WON",
    "STAGE_SEMANTIC_ID": "S",
    "OPPORTUNITY": "19999.99",
    "CURRENCY_ID": "RUB",
    "ASSIGNED_BY_ID": "5",
    "CONTACT_ID": "12",
    "COMPANY_ID": "0",
    "CLOSED": "Y",
    "DATE_CREATE": "2026-11-01T13:00:00+03:00",
    "DATE_MODIFY": "2026-11-20T09:30:00+03:00",
    "CLOSEDATE": "2026-11-20T00:00:00+03:00",
}


def one(page, table: str) -> dict:
    (record,) = page.rows[table]
    return record


def test_deal_parser_coerces_strings_and_dates():
    d = one(p.deal(DEAL, Ctx()), "deals")
    assert d["id"] == 37 and d["pipeline_id"] == 1 and d["stage_id"] == "C1:WON"
    assert d["status"] == "won" and d["amount"] == 19999.99 and d["company_id"] is None
    assert d["created_at"] == "2026-11-01T10:00:00Z" and d["closed_at"] == "2026-11-19T21:00:00Z"
    assert d["raw"] is DEAL
    open_deal = one(p.deal(dict(DEAL, CLOSED="N", STAGE_SEMANTIC_ID="P"), Ctx()), "deals")
    assert open_deal["closed_at"] is None and open_deal["status"] == "open"


def test_deal_parser_links_contacts_from_the_companion_and_always_carries_the_links_table():
    page = p.deal(DEAL, Ctx(side={37: [14, "12", 14]}))
    assert page.rows["deal_contacts"] == [
        {"deal_id": 37, "contact_id": 14, "is_main": 0},
        {"deal_id": 37, "contact_id": 12, "is_main": 1},
    ]
    assert p.deal(DEAL, Ctx()).rows["deal_contacts"] == []  # the store replaces links whole


def test_lead_contact_company_parsers():
    lead = one(
        p.lead(
            {
                "ID": "3",
                "TITLE": "L",
                "STATUS_ID": "JUNK",
                "STATUS_SEMANTIC_ID": "F",
                "OPPORTUNITY": "0.00",
                "DATE_CLOSED": "2026-11-02T03:00:00+03:00",
            },
            Ctx(),
        ),
        "leads",
    )
    assert (lead["id"], lead["status"], lead["closed_at"]) == (3, "junk", "2026-11-02T00:00:00Z")
    c = one(
        p.contact(
            {
                "ID": "9",
                "NAME": "Anna",
                "LAST_NAME": "Ivanova",
                "COMPANY_ID": "4",
                "ASSIGNED_BY_ID": "1",
                "DATE_MODIFY": "2026-11-23T10:00:00+03:00",
            },
            Ctx(),
        ),
        "contacts",
    )
    assert (c["name"], c["company_id"], c["updated_at"]) == ("Anna Ivanova", 4, "2026-11-23T07:00:00Z")
    assert one(p.company({"ID": "4", "TITLE": "ACME"}, Ctx()), "companies")["name"] == "ACME"


def test_task_parser_reads_camel_case_and_crm_binding():
    t = one(
        p.task(
            {
                "id": "77",
                "title": "Call back",
                "responsibleId": "5",
                "status": "5",
                "ufCrmTask": ["CO_3", "D_12"],
                "deadline": "2026-11-24T18:00:00+03:00",
                "closedDate": "2026-11-23T12:00:00+03:00",
                "changedDate": None,
            },
            Ctx(),
        ),
        "tasks",
    )
    assert (t["id"], t["entity_type"], t["entity_id"], t["is_completed"]) == (77, "company", 3, 1)
    assert p.task_binding(["D_12"]) == ("deal", 12) and p.task_binding(["L_4"]) == ("lead", 4)
    assert p.task_binding(["C_5"]) == ("contact", 5) and p.task_binding([]) == (None, None)


def test_call_parser_directions_statuses_and_activity_binding():
    row = {
        "ID": "501",
        "CALL_TYPE": "3",
        "CALL_FAILED_CODE": "304",
        "CALL_DURATION": "0",
        "CALL_START_DATE": "2026-11-23T12:00:00+03:00",
        "PORTAL_USER_ID": "5",
        "PHONE_NUMBER": "+79990000000",
        "CRM_ENTITY_TYPE": "CONTACT",
        "CRM_ENTITY_ID": "9",
        "CRM_ACTIVITY_ID": "800",
    }
    c = one(p.call(row, Ctx()), "calls")
    assert (c["direction"], c["status"], c["entity_type"], c["entity_id"]) == ("in", "missed", "contact", 9)
    bound = one(
        p.call(
            dict(row, CALL_TYPE="1", CALL_FAILED_CODE="200"),
            Ctx(side={501: {"OWNER_TYPE_ID": "2", "OWNER_ID": "37"}}),
        ),
        "calls",
    )
    assert (bound["direction"], bound["status"], bound["entity_type"], bound["entity_id"]) == (
        "out",
        "answered",
        "deal",
        37,
    )
    # Any code but 200 is unanswered: missed when incoming, failed when outgoing.
    assert one(p.call(dict(row, CALL_FAILED_CODE="603-S"), Ctx()), "calls")["status"] == "missed"
    assert one(p.call(dict(row, CALL_TYPE="1", CALL_FAILED_CODE="304"), Ctx()), "calls")["status"] == "failed"


def test_stage_and_history_parsers():
    s = p.stage({"STATUS_ID": "C1:LOSE", "NAME": "Lost", "SORT": "70", "SEMANTICS": "F"}, 1, "deal")
    assert (s["id"], s["semantics"], s["sort"]) == ("C1:LOSE", "lost", 70)
    assert p.stage({"STATUS_ID": "NEW", "SEMANTICS": None}, -1, "lead")["semantics"] == "open"
    ctx = Ctx(memo={("deal", 37): "C1:NEW"})
    h = one(
        p.stage_change(
            {
                "ID": "7365",
                "TYPE_ID": "2",
                "OWNER_ID": "37",
                "CATEGORY_ID": "1",
                "STAGE_ID": "C1:WON",
                "CREATED_TIME": "2026-11-20T09:30:00+03:00",
            },
            ctx,
        ),
        "stage_changes",
    )
    assert (h["id"], h["entity_id"], h["pipeline_id"], h["previous_stage_id"]) == (
        "deal:7365",
        37,
        1,
        "C1:NEW",
    )
    assert ctx.memo[("deal", 37)] == "C1:WON"
    lh = one(p.stage_change({"ID": "8", "OWNER_ID": "37", "STATUS_ID": "JUNK"}, ctx), "stage_changes")
    assert (lh["id"], lh["pipeline_id"], lh["stage_id"], lh["previous_stage_id"]) == (
        "lead:8",
        -1,
        "JUNK",
        None,
    )


def test_streams_are_declared_with_the_common_contract_in_run_order():
    a = adapter(streams=["deals", "calls", "reconcile"])
    assert [s.name for s in st.STREAMS] == [
        "users",
        "pipelines",
        "companies",
        "contacts",
        "leads",
        "deals",
        "tasks",
        "calls",
        "stage_history",
        "activities",
        "reconcile",
    ]
    assert all(isinstance(s, Stream) for s in st.STREAMS)
    assert {s.name: s.mode for s in st.STREAMS} == {
        "users": "snapshot",
        "pipelines": "snapshot",
        "companies": "changes",
        "contacts": "changes",
        "leads": "changes",
        "deals": "changes",
        "tasks": "changes",
        "calls": "append",
        "stage_history": "append",
        "activities": "changes",
        "reconcile": "reconcile",
    }
    assert [s.name for s in a.streams()] == a.stream_names() == ["deals", "calls", "reconcile"]
    assert st.DEALS.tables == ("deals", "deal_contacts") and st.STAGE_HISTORY.tables == ("stage_changes",)
    assert st.RECONCILE.request.streams == ("companies", "contacts", "leads", "deals", "tasks", "activities")


# ---- streams through mocked HTTP --------------------------------------------------------


@responses.activate
def test_incremental_deals_read_links_in_the_same_batch():
    a = adapter()
    items = {"items": [{"id": 37, "contactIds": [12, 14]}]}
    responses.post(
        HOOK + "batch",
        json=batch_body({"p0": [DEAL], "q0": items}, times={"p0": {"operating": 1.0, "duration": 0.1}}),
    )
    pages = list(a.fetch("deals", json.dumps({"since": "2026-11-23T00:00:00Z"}), NOW))
    assert len(responses.calls) == 1
    cmd = json.loads(responses.calls[0].request.body)["cmd"]
    assert "filter[%3E%3DDATE_MODIFY]=2026-11-22T23%3A55%3A00%2B00%3A00" in cmd["p0"]
    assert "crm.item.list" in cmd["q0"] and "updatedTime" in cmd["q0"]
    assert pages[0].rows["deals"][0]["id"] == 37
    assert pages[0].rows["deal_contacts"] == [
        {"deal_id": 37, "contact_id": 12, "is_main": 1},
        {"deal_id": 37, "contact_id": 14, "is_main": 0},
    ]
    assert json.loads(pages[-1].bookmark) == {"since": "2026-11-23T12:00:00Z"}  # read from the old ISO text
    assert a.client.budget.state("crm.deal.list")["operating"] == 1.0


@responses.activate
def test_tasks_nested_under_result_tasks():
    a = adapter()
    responses.post(
        HOOK + "tasks.task.list",
        json={
            "result": {"tasks": [{"id": "5", "title": "T", "status": "2", "ufCrmTask": ["D_37"]}]},
            "total": 0,
            "time": {},
        },
    )
    pages = list(a.fetch("tasks", json.dumps({"since": "2026-11-23T00:00:00Z"}), NOW))
    assert pages[0].rows["tasks"][0]["entity_id"] == 37
    body = json.loads(responses.calls[0].request.body)
    assert body["filter"][">ID"] == 0 and body["start"] == -1 and body["order"] == {"ID": "ASC"}


@responses.activate
def test_users_pipelines_calls_and_history_shapes():
    a = adapter()
    responses.post(
        HOOK + "user.get",
        json={
            "result": [{"ID": "1", "NAME": "Ann", "LAST_NAME": "B", "EMAIL": "a@x", "ACTIVE": True}],
            "total": 0,
        },
    )
    users = list(a.fetch("users", None, NOW))
    assert users[0].rows["users"][0] == {
        "id": 1,
        "name": "Ann B",
        "email": "a@x",
        "is_active": 1,
        "raw": {"ID": "1", "NAME": "Ann", "LAST_NAME": "B", "EMAIL": "a@x", "ACTIVE": True},
    }
    responses.post(
        HOOK + "batch",
        json=batch_body(
            {
                "cats": {
                    "categories": [
                        {"id": 0, "name": "Main", "sort": 10, "isDefault": "Y"},
                        {"id": 1, "name": "B2B", "sort": 20, "isDefault": "N"},
                    ]
                },
                "lead": [{"STATUS_ID": "NEW", "NAME": "New", "SORT": "10", "SEMANTICS": None}],
                "s0": [{"STATUS_ID": "WON", "NAME": "Won", "SORT": "60", "SEMANTICS": "S"}],
                "s1": [{"STATUS_ID": "C1:NEW", "NAME": "New", "SORT": "10", "SEMANTICS": None}],
            }
        ),
    )
    pages = list(a.fetch("pipelines", json.dumps({"categories": [1]}), NOW))
    assert len(responses.calls) == 2  # user.get, then one batch for pipelines and every stage list
    page = pages[0]
    assert [x["id"] for x in page.rows["pipelines"]] == [0, 1, -1]
    assert [x["entity"] for x in page.rows["pipelines"]] == ["deal", "deal", "lead"]
    assert {(s["pipeline_id"], s["id"], s["semantics"]) for s in page.rows["stages"]} == {
        (0, "WON", "won"),
        (1, "C1:NEW", "open"),
        (-1, "NEW", "open"),
    }
    assert json.loads(pages[-1].bookmark) == {"at": "2026-11-23T12:00:00Z", "categories": [1]}


@responses.activate
def test_calls_bind_through_activities_and_bookmark_last_id():
    a = adapter()
    responses.post(
        HOOK + "voximplant.statistic.get",
        json={
            "result": [
                {
                    "ID": "10",
                    "CALL_TYPE": "1",
                    "CALL_FAILED_CODE": "200",
                    "CALL_DURATION": "61",
                    "CRM_ACTIVITY_ID": "800",
                    "CRM_ENTITY_TYPE": "CONTACT",
                    "CRM_ENTITY_ID": "9",
                }
            ],
            "total": 0,
        },
    )
    responses.post(
        HOOK + "crm.activity.list", json={"result": [{"ID": "800", "OWNER_TYPE_ID": "2", "OWNER_ID": "37"}]}
    )
    pages = list(a.fetch("calls", json.dumps({"last_id": {"calls": 5}}), NOW))
    assert (
        pages[0].rows["calls"][0]["entity_type"] == "deal" and pages[0].rows["calls"][0]["duration_s"] == 61
    )
    assert json.loads(pages[-1].bookmark) == {"last_id": {"calls": 10}}
    assert json.loads(responses.calls[1].request.body)["filter"] == {"@ID": [800]}
    assert json.loads(responses.calls[0].request.body)["FILTER"] == {">ID": 5}


@responses.activate
def test_stage_history_reads_deals_and_leads_in_one_request():
    a = adapter()
    responses.post(
        HOOK + "batch",
        json=batch_body(
            {
                "deal": {
                    "items": [
                        {"ID": "7", "OWNER_ID": "37", "STAGE_ID": "NEW", "CATEGORY_ID": "0"},
                        {"ID": "9", "OWNER_ID": "37", "STAGE_ID": "WON", "CATEGORY_ID": "0"},
                    ]
                },
                "lead": {"items": []},
            }
        ),
    )
    pages = list(a.fetch("stage_history", json.dumps({"last_id": {"deal": 6, "lead": 3}}), NOW))
    assert len(responses.calls) == 1
    cmd = json.loads(responses.calls[0].request.body)["cmd"]
    assert "filter[%3EID]=6" in cmd["deal"] and "filter[%3EID]=3" in cmd["lead"]
    rows = pages[0].rows["stage_changes"]
    assert [r["previous_stage_id"] for r in rows] == [None, "NEW"]
    assert json.loads(pages[-1].bookmark) == {"last_id": {"deal": 9, "lead": 3}}


# ---- errors ---------------------------------------------------------------------------


@responses.activate
def test_error_mapping_scope_auth_and_batch_errors():
    a = adapter()
    responses.post(
        HOOK + "voximplant.statistic.get",
        status=403,
        json={"error": "insufficient_scope", "error_description": "The request requires higher privileges"},
    )
    with pytest.raises(ScopeError, match="telephony"):
        list(a.fetch("calls", json.dumps({"last_id": {"calls": 100}}), NOW))
    # A first load plans its ID windows in a batch: the scope error arrives inside it.
    scope = {"error": "insufficient_scope", "error_description": "The request requires higher privileges"}
    responses.post(HOOK + "batch", json=batch_body([], errors={"lo": scope, "hi": scope}))
    with pytest.raises(ScopeError, match="telephony"):
        list(a.fetch("calls", None, NOW))
    responses.post(
        HOOK + "user.get",
        status=401,
        json={"error": "NO_AUTH_FOUND", "error_description": "Wrong authorization data"},
    )
    with pytest.raises(AuthError) as err:
        list(a.fetch("users", None, NOW))
    assert "s3cretcode" not in str(err.value) and "webhook" in str(err.value)
    responses.post(
        HOOK + "batch",
        json=batch_body(
            {"deal": {"items": []}}, errors={"lead": {"error": "", "error_description": "Access denied."}}
        ),
    )
    with pytest.raises(StreamError, match="Access denied"):
        list(a.fetch("stage_history", None, NOW))


@responses.activate
def test_unreadable_body_is_retried():
    a = adapter()
    responses.post(HOOK + "profile", body="<html>502</html>", content_type="text/html")
    responses.post(HOOK + "profile", json={"result": {"ID": 1, "NAME": "A", "ADMIN": True}})
    assert "user A (id 1, admin)" in a.check()
    assert a.requests == 2


# ---- limits ---------------------------------------------------------------------------


class FakeClock:
    def __init__(self):
        self.t = 1000.0
        self.slept = []

    def __call__(self):
        return self.t

    def sleep(self, s):
        self.slept.append(s)
        self.t += s


def test_leaky_bucket_lets_a_burst_through_then_drains():
    c = FakeClock()
    b = LeakyBucket(size=10, drain=2.0, margin=0, clock=c, sleep=c.sleep)
    for _ in range(10):
        b.acquire()
    assert c.slept == []
    b.acquire()
    assert c.slept and abs(sum(c.slept) - 0.5) < 1e-6


def test_operating_budget_waits_for_reset_and_sizes_chains():
    c = FakeClock()
    ob = OperatingBudget(480, safety_s=5, clock=c, sleep=c.sleep)
    n, held = ob.take({"crm.deal.list": 50})
    assert n == 1  # unknown total: probe first
    ob.release(held)
    ob.observe("crm.deal.list", {"operating": 470.0, "operating_reset_at": c.t + 40, "duration": 0.1})
    n, held = ob.take({"crm.deal.list": 50})
    assert 1 <= n < 50 and c.slept == []  # only what still fits under 475 s
    ob.release(held)
    ob.observe("crm.deal.list", {"operating": 476.0, "operating_reset_at": c.t + 40, "duration": 0.1})
    n, held = ob.take({"crm.deal.list": 50})
    assert sum(c.slept) >= 40 and n == 1  # waited for the reset, then probes with one call
    ob.block("crm.deal.list", c.t + 100)
    before = c.t
    ob.release(held)
    ob.take({"crm.deal.list": 1})
    assert c.t - before >= 100


def test_client_oauth_refresh_persists_before_use(tmp_path):
    from connector.mirror.tokens import TokenStore

    tokens = TokenStore(str(tmp_path / "t.json"))
    tokens.save("b24", {"access_token": "old-access-1", "refresh_token": "old-refresh-1"})
    cfg = SourceConfig(
        name="b24",
        kind="bitrix24",
        portal_url="https://portal.example.com",
        client_id="app",
        client_secret="shh-secret",
        requests_per_second=100.0,
    )
    client = Bitrix24Client(cfg, tokens)
    with responses.RequestsMock() as rsps:
        rsps.post(
            "https://portal.example.com/rest/profile",
            status=401,
            json={"error": "expired_token", "error_description": "The access token provided has expired."},
        )
        rsps.get(
            cfg.oauth_url,
            json={"access_token": "new-access-2", "refresh_token": "new-refresh-2", "expires": 2000000000},
        )

        def profile(request):
            assert tokens.load("b24")["refresh_token"] == "new-refresh-2"  # saved before use
            assert json.loads(request.body)["auth"] == "new-access-2"
            return 200, {}, json.dumps({"result": {"ID": 1}})

        rsps.add_callback("POST", "https://portal.example.com/rest/profile", callback=profile)
        assert client.call("profile")["result"]["ID"] == 1


@responses.activate
def test_interrupted_full_pass_resumes_its_windows_then_reads_changes_since_the_pass_start():
    a = adapter()
    bookmark = json.dumps({"since": None, "pass": "2026-11-22T02:00:00Z", "windows": [[120, 200]]})
    responses.post(HOOK + "crm.company.list", json={"result": [{"ID": "150", "TITLE": "X"}], "total": 0})
    pages = list(a.fetch("companies", bookmark, NOW))
    body = json.loads(responses.calls[0].request.body)
    assert body["filter"] == {">ID": 120, "<=ID": 200} and body["start"] == -1
    assert pages[0].rows["companies"][0]["id"] == 150
    # rows before 120 may have changed since the pass began: read from its start, then this
    # run's start is the bookmark
    catch_up = json.loads(responses.calls[1].request.body)["filter"]
    assert catch_up == {">=DATE_MODIFY": "2026-11-22T01:55:00+00:00", ">ID": 0}
    assert json.loads(pages[-1].bookmark) == {"since": "2026-11-23T12:00:00Z"}


def test_secrets_never_reach_error_messages():
    a = adapter()
    err = a.client.error("crm.deal.list", "", f"bad call to {HOOK}crm.deal.list")
    assert "s3cretcode" not in str(err)


def test_in_window_order_holds_later_windows_until_earlier_ones_finish():
    from adapters.bitrix24.paging import Chunk, in_window_order

    arrived = [
        Chunk(1, [{"ID": 11}]),
        Chunk(0, [{"ID": 1}]),
        Chunk(2, [], done=True),
        Chunk(1, [{"ID": 12}], done=True),
        Chunk(0, [{"ID": 2}], done=True),
    ]
    out = [(c.window, [r["ID"] for r in c.rows]) for c in in_window_order(arrived)]
    assert out == [(0, [1]), (0, [2]), (1, [11]), (1, [12]), (2, [])]
