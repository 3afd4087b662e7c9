"""Bitrix24 parsers on recorded response bodies, no HTTP: body -> items -> mirror records.

The bodies in tests/unit/bodies/bitrix24/ have the shapes of real portal replies (see
docs/api-notes.md): old `crm.*.list` numbers as strings, "0" for no reference,
datetimes with the portal's +03:00 offset, `result.tasks` / `result.items` nesting, camelCase
tasks and crm.item.list; the stage history and category list follow fast_bitrix24's captures.
Items are taken out of a body the way the stream's own ListSpec does it.
"""

from __future__ import annotations

import json
from pathlib import Path

from adapters.bitrix24 import parsers as p
from adapters.bitrix24 import streams as st
from adapters.streams import Ctx, records

BODIES = Path(__file__).parent / "bodies" / "bitrix24"


def body(name: str) -> dict:
    return json.loads((BODIES / f"{name}.json").read_text(encoding="utf-8"))


def items(stream_request, name: str) -> list[dict]:
    return stream_request.spec.rows(body(name)["result"])


def test_deals_with_string_numbers_offset_dates_and_zero_references():
    deals = items(st.DEALS.request, "crm.deal.list")
    side = st.CONTACT_IDS.values([body("crm.item.list")["result"]])
    page = records(deals, st.DEALS.parse, Ctx(side=side))
    won, fresh = page.rows["deals"]
    assert won == {
        "id": 37,
        "name": "Поставка оборудования",
        "pipeline_id": 1,
        "stage_id": "C1:WON",
        "status": "won",
        "amount": 19999.99,
        "currency": "RUB",
        "responsible_user_id": 5,
        "contact_id": 12,
        "company_id": None,
        "lead_id": None,  # LEAD_ID null: opened without a lead
        "created_at": "2026-11-01T10:00:00Z",
        "updated_at": "2026-11-20T06:30:00Z",
        "closed_at": "2026-11-20T06:30:00Z",  # MOVED_TIME
        "channel": "call",
        "is_deleted": 0,
        "raw": deals[0],
    }
    assert won["raw"] is deals[0] and won["raw"]["UF_CRM_KPI_WIN_RATE"] == "0.5"
    assert (fresh["pipeline_id"], fresh["status"], fresh["amount"], fresh["currency"]) == (
        0,
        "open",
        0.0,
        "USD",
    )
    assert (fresh["contact_id"], fresh["responsible_user_id"], fresh["company_id"]) == (None, None, 4)
    assert fresh["closed_at"] is None  # CLOSEDATE of an open deal is only the planned date
    assert fresh["lead_id"] == 3  # LEAD_ID "3": converted from lead 3
    # contactIds [14, 12, 14] from crm.item.list: each contact once, CONTACT_ID is the main one.
    assert page.rows["deal_contacts"] == [
        {"deal_id": 37, "contact_id": 14, "is_main": 0},
        {"deal_id": 37, "contact_id": 12, "is_main": 1},
    ]


def test_channel_is_the_utm_source_else_source_id_trimmed_and_lower_case():
    no_utm, with_utm = items(st.DEALS.request, "crm.deal.list")
    assert (with_utm["SOURCE_ID"], with_utm["UTM_SOURCE"]) == ("WEB", "google")
    assert p.deal(with_utm, Ctx()).rows["deals"][0]["channel"] == "google"
    assert p.deal(no_utm, Ctx()).rows["deals"][0]["channel"] == "call"  # SOURCE_ID CALL
    spaced = dict(no_utm, UTM_SOURCE="  Yandex ", SOURCE_ID="WEB")
    assert p.deal(spaced, Ctx()).rows["deals"][0]["channel"] == "yandex"
    blank = dict(no_utm, UTM_SOURCE=" ", SOURCE_ID="")
    assert p.deal(blank, Ctx()).rows["deals"][0]["channel"] is None
    for s in (st.DEALS, st.LEADS):
        assert {"SOURCE_ID", "UTM_SOURCE"} <= set(s.request.spec.params["select"])


def test_closed_at_is_the_move_into_the_final_stage_and_the_close_date_only_without_one():
    deal = items(st.DEALS.request, "crm.deal.list")[0]
    assert p.deal(deal, Ctx()).rows["deals"][0]["closed_at"] == "2026-11-20T06:30:00Z"
    dated = {k: v for k, v in deal.items() if k != "MOVED_TIME"}  # CLOSEDATE: a date, the last resort
    assert p.deal(dated, Ctx()).rows["deals"][0]["closed_at"] == "2026-11-20T00:00:00Z"
    lead = items(st.LEADS.request, "crm.lead.list")[0]
    moved = dict(lead, MOVED_TIME="2026-11-01T18:42:00+03:00")
    assert p.lead(moved, Ctx()).rows["leads"][0]["closed_at"] == "2026-11-01T15:42:00Z"
    reopened = dict(lead, STATUS_ID="IN_PROCESS", STATUS_SEMANTIC_ID="P")
    assert p.lead(reopened, Ctx()).rows["leads"][0]["closed_at"] is None


def test_lead():
    (lead,) = records(items(st.LEADS.request, "crm.lead.list"), st.LEADS.parse, Ctx()).rows["leads"]
    raw = lead.pop("raw")
    assert lead == {
        "id": 3,
        "title": "Заявка с сайта",
        "status_id": "JUNK",
        "status": "junk",
        "amount": 1500.0,
        "currency": "RUB",
        "responsible_user_id": 5,
        "contact_id": 12,
        "company_id": None,
        "created_at": "2026-11-01T06:00:00Z",
        "updated_at": "2026-11-02T00:00:00Z",
        "closed_at": "2026-11-02T00:00:00Z",
        "channel": "web",
        "is_deleted": 0,
    }
    assert raw["STATUS_SEMANTIC_ID"] == "F"


def test_contacts_and_company():
    anna, oleg = records(items(st.CONTACTS.request, "crm.contact.list"), st.CONTACTS.parse, Ctx()).rows[
        "contacts"
    ]
    assert {
        k: anna[k]
        for k in ("id", "name", "company_id", "responsible_user_id", "created_at", "updated_at", "is_deleted")
    } == {
        "id": 12,
        "name": "Анна Сергеевна Иванова",
        "company_id": 4,
        "responsible_user_id": 1,
        "created_at": "2026-10-15T09:00:00Z",
        "updated_at": "2026-11-23T07:00:00Z",
        "is_deleted": 0,
    }
    assert anna["raw"]["PHONE"][0]["VALUE"] == "+79990000000"
    assert (oleg["name"], oleg["company_id"], oleg["responsible_user_id"]) == ("Олег", None, None)
    (company,) = records(items(st.COMPANIES.request, "crm.company.list"), st.COMPANIES.parse, Ctx()).rows[
        "companies"
    ]
    assert {k: v for k, v in company.items() if k != "raw"} == {
        "id": 4,
        "name": "ООО «Ромашка»",
        "responsible_user_id": 5,
        "created_at": "2026-09-01T09:00:00Z",
        "updated_at": "2026-11-22T15:45:10Z",
        "is_deleted": 0,
    }


def test_tasks_from_result_tasks_with_their_crm_binding():
    done, todo = records(items(st.TASKS.request, "tasks.task.list"), st.TASKS.parse, Ctx()).rows["tasks"]
    assert {k: v for k, v in done.items() if k != "raw"} == {
        "id": 77,
        "text": "Перезвонить клиенту",
        "responsible_user_id": 5,
        "entity_type": "company",
        "entity_id": 4,
        "is_completed": 1,
        "due_at": "2026-11-24T15:00:00Z",
        "completed_at": "2026-11-23T09:00:00Z",
        "created_at": "2026-11-20T07:00:00Z",
        "updated_at": "2026-11-23T09:00:00Z",
        "is_deleted": 0,
    }
    assert (todo["entity_type"], todo["entity_id"], todo["is_completed"]) == (None, None, 0)
    assert (todo["responsible_user_id"], todo["due_at"], todo["completed_at"]) == (None, None, None)


def test_calls_bound_to_a_deal_through_their_activity_in_ctx_side():
    calls = st.CALLS.request.parts["calls"]
    activity = st.CALL_ACTIVITY.spec.rows(body("crm.activity.list")["result"])[0]
    answered, missed = records(
        items(calls, "voximplant.statistic.get"), st.CALLS.parse, Ctx(side={7002001: activity})
    ).rows["calls"]
    assert {k: v for k, v in answered.items() if k != "raw"} == {
        "id": 7002001,
        "direction": "out",
        "status": "answered",
        "duration_s": 61,
        "started_at": "2026-11-23T09:00:00Z",
        "responsible_user_id": 5,
        "entity_type": "deal",
        "entity_id": 37,
        "phone": "+79990000000",
        "activity_id": "800",
        "is_automated": 0,
        "is_deleted": 0,
    }
    assert answered["raw"]["CRM_ENTITY_TYPE"] == "CONTACT"  # the activity's deal wins
    # CRM_ACTIVITY_ID "0": no activity, the call's own binding stays.
    assert (missed["direction"], missed["status"], missed["duration_s"]) == ("in", "missed", 0)
    assert (missed["entity_type"], missed["entity_id"]) == ("company", 4)


def test_a_call_vote_1_to_5_is_a_csat_answer_and_0_is_none():
    calls = st.CALLS.request.parts["calls"]
    answered, missed = items(calls, "voximplant.statistic.get")
    assert (answered["CALL_VOTE"], missed["CALL_VOTE"]) == ("0", "0")
    page = records([dict(answered, CALL_VOTE="4"), missed], st.CALLS.parse, Ctx())
    assert page.rows["survey_answers"] == [
        {
            "id": "call_vote:7002001",
            "kind": "csat",
            "score": 4.0,
            "at": "2026-11-23T09:00:00Z",
            "entity_type": "contact",
            "entity_id": 12,
            "origin": "call_vote",
            "raw": {"ID": "7002001", "CALL_VOTE": "4"},
        }
    ]
    off_scale = records([answered, dict(missed, CALL_VOTE="6")], st.CALLS.parse, Ctx())
    assert "survey_answers" not in off_scale.rows
    assert [(p["field"], p["value"]) for p in off_scale.problems] == [("CALL_VOTE", "6")]
    assert "survey_answers" in st.CALLS.tables


def test_activities_by_type_and_provider_with_direction_owner_and_time():
    rows = items(st.ACTIVITIES.request, "crm.activity.list.interactions")
    page = records(rows, st.ACTIVITIES.parse, Ctx())
    got = [{k: v for k, v in a.items() if k != "raw"} for a in page.rows["activities"]]
    assert got == [
        {
            "id": "801",
            "channel": "call",
            "direction": "out",
            "at": "2026-11-23T09:00:00Z",
            "responsible_user_id": 5,
            "entity_type": "deal",
            "entity_id": 37,
            "is_completed": 1,
            "is_deleted": 0,
        },
        {
            "id": "802",
            "channel": "email",
            "direction": "in",
            "at": "2026-11-23T09:10:00Z",
            "responsible_user_id": 5,
            "entity_type": "contact",
            "entity_id": 12,
            "is_completed": 0,
            "is_deleted": 0,
        },
        {
            "id": "803",
            "channel": "meeting",
            "direction": None,
            "at": "2026-11-24T12:00:00Z",
            "responsible_user_id": 1,
            "entity_type": "company",
            "entity_id": 4,
            "is_completed": 0,
            "is_deleted": 0,
        },
        {
            "id": "804",
            "channel": "chat",
            "direction": "in",
            "at": "2026-11-23T09:30:00Z",
            "responsible_user_id": 5,
            "entity_type": "lead",
            "entity_id": 3,
            "is_completed": 1,
            "is_deleted": 0,
        },
        # no START_TIME: CREATED; RESPONSIBLE_ID "0": nobody
        {
            "id": "805",
            "channel": "sms",
            "direction": "out",
            "at": "2026-11-23T09:40:00Z",
            "responsible_user_id": None,
            "entity_type": "contact",
            "entity_id": 12,
            "is_completed": 1,
            "is_deleted": 0,
        },
    ]
    # 806 is a task (the tasks stream has it), 807 an unknown app's activity: no rows
    assert page.rows["activities"][0]["raw"] is rows[0]
    assert (st.ACTIVITIES.mode, st.ACTIVITIES.cursor, st.ACTIVITIES.scope) == (
        "changes",
        "LAST_UPDATED",
        "crm",
    )
    assert st.ACTIVITIES.request.reconciles and "activities" in st.RECONCILED


def test_stage_history_takes_the_previous_stage_from_ctx_memo_per_deal_and_lead():
    deal, lead = st.STAGE_HISTORY.request.parts["deal"], st.STAGE_HISTORY.request.parts["lead"]
    ctx = Ctx()  # one memo per fetch, as the reader keeps it across pages and parts
    page = records(items(deal, "crm.stagehistory.list.deal"), st.STAGE_HISTORY.parse, ctx)
    page.merge(records(items(lead, "crm.stagehistory.list.lead"), st.STAGE_HISTORY.parse, ctx))
    got = [
        (r["id"], r["entity"], r["entity_id"], r["pipeline_id"], r["stage_id"], r["previous_stage_id"])
        for r in page.rows["stage_changes"]
    ]
    assert got == [
        ("deal:7365", "deal", 523, 0, "NEW", None),
        ("deal:7367", "deal", 817, 0, "UC_KW9988", None),
        ("deal:7369", "deal", 523, 0, "UC_KW9988", "NEW"),
        ("deal:7371", "deal", 523, 0, "WON", "UC_KW9988"),
        ("deal:7373", "deal", 1069, 1, "C1:NEW", None),
        ("lead:101", "lead", 523, -1, "NEW", None),  # lead 523 is not deal 523
        ("lead:105", "lead", 523, -1, "JUNK", "NEW"),
    ]
    assert page.rows["stage_changes"][0]["changed_at"] == "2022-01-25T07:18:00Z"
    assert ctx.memo[("deal", 523)] == "WON" and ctx.memo[("lead", 523)] == "JUNK"


def test_pipelines_with_their_status_lists_and_the_lead_pseudo_pipeline():
    cats = body("crm.category.list")["result"]["categories"]
    side = {
        1: body("crm.status.list.DEAL_STAGE_1")["result"],
        p.LEAD_PIPELINE: body("crm.status.list.STATUS")["result"],
    }
    page = records([*cats, st.PIPELINES.request.leads], st.PIPELINES.parse, Ctx(side=side))
    assert [
        (r["id"], r["entity"], r["name"], r["sort"], r["is_default"]) for r in page.rows["pipelines"]
    ] == [(0, "deal", "Portal Shop", 100, 1), (1, "deal", "Закупки", 200, 0), (-1, "lead", "Leads", 0, 0)]
    assert page.rows["pipelines"][1]["raw"] is cats[1]
    assert [
        (s["pipeline_id"], s["id"], s["entity"], s["name"], s["sort"], s["semantics"])
        for s in page.rows["stages"]
    ] == [
        (1, "C1:NEW", "deal", "Новая", 10, "open"),
        (1, "C1:WON", "deal", "Сделка успешна", 60, "won"),
        (1, "C1:LOSE", "deal", "Сделка провалена", 70, "lost"),
        (-1, "NEW", "lead", "Не обработан", 10, "open"),
        (-1, "CONVERTED", "lead", "Качественный лид", 70, "won"),
        (-1, "JUNK", "lead", "Некачественный лид", 80, "lost"),
    ]


def test_users():
    maria, gone = records(items(st.USERS.request, "user.get"), st.USERS.parse, Ctx()).rows["users"]
    assert {k: v for k, v in maria.items() if k != "raw"} == {
        "id": 1,
        "name": "Мария Смирнова",
        "email": "maria@example.com",
        "is_active": 1,
    }
    assert {k: v for k, v in gone.items() if k != "raw"} == {
        "id": 7,
        "name": None,
        "email": None,
        "is_active": 0,
    }
