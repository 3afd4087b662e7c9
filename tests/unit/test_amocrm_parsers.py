"""amoCRM parsers on recorded response bodies (tests/unit/bodies/amocrm), with no HTTP:
each stream's declared parser turns the items of a real-shaped page into mirror records."""

import json
from pathlib import Path

from adapters.amocrm.streams import BY_NAME
from adapters.streams import Ctx, records

BODIES = Path(__file__).parent / "bodies" / "amocrm"
T = 1763892000  # 2025-11-23T10:00:00Z


def body(name: str) -> dict:
    return json.loads((BODIES / f"{name}.json").read_text(encoding="utf-8"))


def parse(stream: str, name: str, ctx: Ctx | None = None):
    """The page a stream's parser makes of a recorded body; also the body's items."""
    s = BY_NAME[stream]
    items = body(name)["_embedded"][s.request.embedded]
    return records(items, s.parse, ctx or Ctx()), items


def test_deal_with_contacts_and_company():
    page, items = parse("deals", "leads")
    deals = {d["id"]: d for d in page.rows["deals"]}
    assert deals[19619] == {
        "id": 19619,
        "name": "Поставка оборудования",
        "pipeline_id": 1300,
        "stage_id": 142,
        "status": "won",
        "amount": 46333.0,
        "currency": "RUB",
        "responsible_user_id": 123321,
        "contact_id": 10971467,
        "company_id": 10971463,
        "created_at": "2025-11-22T10:00:00Z",
        "updated_at": "2025-11-23T10:00:00Z",
        "closed_at": "2025-11-23T10:00:00Z",
        "channel": "yandex",
        "is_deleted": 0,
        "raw": items[0],
    }
    assert (deals[14460]["status"], deals[14460]["contact_id"], deals[14460]["company_id"]) == (
        "lost",
        None,
        None,
    )
    # one contact, not flagged main: it is the main contact all the same
    assert (deals[14461]["status"], deals[14461]["contact_id"], deals[14461]["closed_at"]) == (
        "open",
        10971465,
        None,
    )
    assert page.rows["deal_contacts"] == [
        {"deal_id": 19619, "contact_id": 10971465, "is_main": 0},
        {"deal_id": 19619, "contact_id": 10971467, "is_main": 1},
        {"deal_id": 14461, "contact_id": 10971465, "is_main": 1},
    ]


def test_deal_channel_is_the_utm_source_else_the_source_name_normalised():
    page, _ = parse("deals", "leads")
    channels = {d["id"]: d["channel"] for d in page.rows["deals"]}
    # 19619: UTM " Yandex " beats the source "Сайт"; 14460: neither; 14461: source name only
    assert channels == {19619: "yandex", 14460: None, 14461: "входящий звонок"}


def test_deals_ask_for_the_lead_source():
    assert ("with", "contacts,source") in BY_NAME["deals"].request.params


def test_deal_without_contacts_still_carries_its_links_table():
    s = BY_NAME["deals"]
    lone = body("leads")["_embedded"]["leads"][1]
    page = s.parse(lone, Ctx(currency="USD"))
    assert page.rows["deal_contacts"] == [] and page.rows["deals"][0]["currency"] == "USD"


def test_contact_with_company_and_phone():
    page, items = parse("contacts", "contacts")
    assert page.rows == {
        "contacts": [
            {
                "id": 10971467,
                "name": "Иван Петров",
                "company_id": 10971463,
                "responsible_user_id": 123321,
                "created_at": "2025-11-21T10:00:00Z",
                "updated_at": "2025-11-23T10:00:00Z",
                "is_deleted": 0,
                "raw": items[0],
            },
            {
                "id": 10971465,
                "name": "Анна",
                "company_id": None,
                "responsible_user_id": 504141,
                "created_at": "2025-11-21T10:00:00Z",
                "updated_at": "2025-11-23T10:00:10Z",
                "is_deleted": 0,
                "raw": items[1],
            },
        ]
    }
    assert page.rows["contacts"][0]["raw"]["custom_fields_values"][0]["field_code"] == "PHONE"


def test_company():
    page, items = parse("companies", "companies")
    assert page.rows == {
        "companies": [
            {
                "id": 10971463,
                "name": "ООО Альфа",
                "responsible_user_id": 504141,
                "created_at": "2025-11-20T10:00:00Z",
                "updated_at": "2025-11-23T10:00:05Z",
                "is_deleted": 0,
                "raw": items[0],
            }
        ]
    }


def test_tasks_plural_entity_types_and_no_completed_at():
    page, items = parse("tasks", "tasks")
    assert page.rows == {
        "tasks": [
            {
                "id": 7087,
                "text": "Перезвонить клиенту",
                "responsible_user_id": 123321,
                "entity_type": "deal",
                "entity_id": 19619,
                "is_completed": 0,
                "due_at": "2025-11-24T10:00:00Z",
                "created_at": "2025-11-21T10:00:00Z",
                "updated_at": "2025-11-23T10:00:00Z",
                "is_deleted": 0,
                "raw": items[0],
            },
            {
                "id": 7088,
                "text": "Встреча",
                "responsible_user_id": 504141,
                "entity_type": "contact",
                "entity_id": 10971467,
                "is_completed": 1,
                "due_at": "2025-11-22T10:00:00Z",
                "created_at": "2025-11-21T10:00:00Z",
                "updated_at": "2025-11-23T10:00:30Z",
                "is_deleted": 0,
                "raw": items[1],
            },
        ]
    }
    # Listed means alive (lists skip the trash): a restored task's row clears is_deleted.


def test_task_deletion_is_dated_as_no_event_reports_a_task_restore():
    s = BY_NAME["events"]
    asked = {v for k, v in s.request.params if k == "filter[type][]"}
    assert "task_deleted" in asked and "task_restored" not in asked
    assert {"lead_restored", "contact_restored", "company_restored"} <= asked
    deleted = {
        "id": "01pz58t6p04ymgsgfbmfyfy8mn",
        "type": "task_deleted",
        "entity_id": 7087,
        "entity_type": "task",
        "created_at": T + 60,
        "value_after": [],
        "value_before": [],
    }
    page = records([deleted], s.parse, Ctx())
    # the store weighs it against the task's updated_at (a later listing: restored)
    assert (page.deleted, page.deleted_at) == ({}, {"tasks": {7087: "2025-11-23T10:01:00Z"}})
    assert page.count() == 1 and page.entities("tasks") == 1


def test_call_notes_direction_and_call_status():
    page, items = parse("calls_leads", "notes_calls")
    calls = page.rows["calls"]
    assert calls[0] == {
        "id": 42709325,
        "direction": "in",
        "status": "answered",
        "duration_s": 60,
        "started_at": "2025-11-23T10:00:00Z",
        "responsible_user_id": 123321,
        "entity_type": "deal",
        "entity_id": 19619,
        "phone": "+79001234567",
        "raw": items[0],
    }
    # call_status 6 (no answer) and 5 (wrong number) on an outgoing call -> failed,
    # absent -> by duration
    assert [(c["id"], c["direction"], c["status"], c["duration_s"]) for c in calls] == [
        (42709325, "in", "answered", 60),
        (42709326, "out", "failed", 0),
        (42709327, "out", "failed", 0),
        (42709328, "in", "answered", 35),
    ]
    contacts_page, _ = parse("calls_contacts", "notes_calls")
    assert {c["entity_type"] for c in contacts_page.rows["calls"]} == {"contact"}


def test_call_notes_are_activities_too_with_prefixed_ids():
    page, items = parse("calls_leads", "notes_calls")
    assert page.rows["activities"][0] == {
        "id": "note:42709325",
        "channel": "call",
        "direction": "in",
        "at": "2025-11-23T10:00:00Z",
        "responsible_user_id": 123321,
        "entity_type": "deal",
        "entity_id": 19619,
        "is_deleted": 0,
        "raw": items[0],
    }
    assert [a["id"] for a in page.rows["activities"]] == [f"note:{c['id']}" for c in page.rows["calls"]]


def test_sms_notes_are_activities_without_a_call_row():
    page, items = parse("calls_contacts", "notes_sms")
    assert [(a["id"], a["channel"], a["direction"], a["entity_type"]) for a in page.rows["activities"]] == [
        ("note:42709401", "sms", "out", "contact"),
        ("note:42709402", "sms", "in", "contact"),
        ("note:42709403", "call", "out", "contact"),
    ]
    assert [c["id"] for c in page.rows["calls"]] == [42709403]
    assert ("filter[note_type][]", "sms_in") in BY_NAME["calls_contacts"].request.params


def test_chat_message_events_are_activities_and_nps_events_survey_answers():
    page, items = parse("events", "events_interactions")
    assert page.rows["activities"] == [
        {
            "id": "event:01pz58t6q0chatin0000000001",
            "channel": "chat",
            "direction": "in",
            "at": "2025-11-23T10:00:00Z",
            "responsible_user_id": None,
            "entity_type": "contact",
            "entity_id": 10971467,
            "is_deleted": 0,
            "raw": items[0],
        },
        {
            "id": "event:01pz58t6q0chatout000000002",
            "channel": "chat",
            "direction": "out",
            "at": "2025-11-23T10:01:00Z",
            "responsible_user_id": 123321,
            "entity_type": "deal",
            "entity_id": 19619,
            "is_deleted": 0,
            "raw": items[1],
        },
    ]
    # Only the documented shape [{"nps": {"rate": N}}], N an integer 0-10, is a score: 11 is
    # off the scale, another key is not the documented shape, 7.5 is no integer. No rows, each
    # reported.
    assert [(p["field"], p["why"]) for p in page.problems] == [
        ("value_after", "not a whole number from 0 to 10"),
        ("value_after", "not [{nps: {rate: N}}]"),
        ("value_after", "not an integer from 0 to 10"),
    ]
    assert page.rows["survey_answers"] == [
        {
            "id": "event:01pz58t6q0nps0000000000003",
            "kind": "nps",
            "score": 9.0,
            "at": "2025-11-23T10:02:00Z",
            "entity_type": "contact",
            "entity_id": 10971467,
            "origin": "amocrm_event",
            "raw": items[2],
        }
    ]


def test_events_ask_only_for_documented_interaction_types():
    asked = {v for k, v in BY_NAME["events"].request.params if k == "filter[type][]"}
    assert {"incoming_chat_message", "outgoing_chat_message", "nps_rate_added"} <= asked
    # call events only point at the call notes the notes streams read already
    assert not asked & {"incoming_call", "outgoing_call", "incoming_sms", "outgoing_sms"}


def test_events_stage_change_deletion_restore_and_task_completion():
    page, items = parse("events", "events")
    assert page.rows["stage_changes"] == [
        {
            "id": "01pz58t6p04ymgsgfbmfyfy1mf",
            "entity": "deal",
            "entity_id": 19619,
            "pipeline_id": 1300,
            "stage_id": 142,
            "previous_stage_id": 40234567,
            "changed_at": "2025-11-23T10:00:00Z",
            "raw": items[0],
        }
    ]
    assert page.deleted == {"deals": [14460]}
    assert page.restored == {"contacts": [10971465]}  # restored after it was deleted
    assert page.rows["tasks"] == [{"id": 7088, "is_completed": 1, "completed_at": "2025-11-23T10:06:40Z"}]


def test_newest_deletion_event_wins_across_pages():
    ctx = Ctx()
    first, _ = parse("events", "events", ctx)
    s = BY_NAME["events"]
    old = {
        "id": "01pz58t6p04ymgsgfbmfyfy6ij",
        "type": "lead_restored",
        "entity_id": 14460,
        "entity_type": "lead",
        "created_at": T + 50,
        "value_after": [],
        "value_before": [],
    }
    new = {
        **old,
        "id": "01pz58t6p04ymgsgfbmfyfy7kl",
        "type": "contact_deleted",
        "entity_id": 10971465,
        "created_at": T + 900,
    }
    later = records([old, new], s.parse, ctx)
    assert first.deleted == {"deals": [14460]}
    assert later.restored == {}  # older than page 1's deletion: loses
    assert later.deleted == {"contacts": [10971465]}  # newer than page 1's restore: wins


def test_users_active_and_disabled():
    page, items = parse("users", "users")
    assert page.rows == {
        "users": [
            {
                "id": 123321,
                "name": "Мария Смирнова",
                "email": "maria@example.ru",
                "is_active": 1,
                "raw": items[0],
            },
            {
                "id": 504141,
                "name": "Олег Уволенный",
                "email": "oleg@example.ru",
                "is_active": 0,
                "raw": items[1],
            },
        ]
    }


def test_pipeline_with_system_statuses_142_won_and_143_lost():
    page, items = parse("pipelines", "pipelines")
    assert page.rows["pipelines"] == [
        {"id": 1300, "entity": "deal", "name": "Продажи", "sort": 1, "is_default": 1, "raw": items[0]}
    ]
    assert [(s["pipeline_id"], s["id"], s["name"], s["semantics"]) for s in page.rows["stages"]] == [
        (1300, 40234565, "Неразобранное", "open"),
        (1300, 40234567, "Первичный контакт", "open"),
        (1300, 142, "Успешно реализовано", "won"),
        (1300, 143, "Закрыто и не реализовано", "lost"),
    ]


def test_customer_calls_are_filed_under_the_customers_main_contact_else_its_company():
    from adapters.amocrm.parsers import customer_owner

    customers = body("customers")["_embedded"]["customers"]
    # the documented example: two contacts, the second is_main
    assert [customer_owner(c) for c in customers] == [
        ("contact", 9820781),
        ("company", 10971463),
        None,
    ]
    notes = body("notes_calls")["_embedded"]["notes"][:3]
    for note, customer in zip(notes, (1, 134923, 134924)):
        note["entity_id"] = customer
    side = {("customer", c["id"]): customer_owner(c) for c in customers if customer_owner(c)}
    page = records(notes, BY_NAME["calls_customers"].parse, Ctx(side=side))
    assert [(c["entity_type"], c["entity_id"]) for c in page.rows["calls"]] == [
        ("contact", 9820781),
        ("company", 10971463),
        ("customer", 134924),  # a customer linked to nobody keeps its calls
    ]
    assert [(a["entity_type"], a["entity_id"]) for a in page.rows["activities"]] == [
        ("contact", 9820781),
        ("company", 10971463),
        ("customer", 134924),
    ]
    assert BY_NAME["calls_customers"].request.path == "/api/v4/customers/notes"


def test_entity_merged_deletes_only_a_card_the_account_no_longer_serves():
    from adapters.amocrm.parsers import merged_cards

    def merged(n, entity_id):
        return {
            "id": f"01pz58t6q0merge00000000000{n}",
            "type": "entity_merged",
            "entity_id": entity_id,
            "entity_type": "contact",
            "created_by": 0,
            "created_at": T + n,
            "value_after": [],
            "value_before": [],
            "account_id": 5135160,
        }

    items = [merged(1, 11), merged(2, 12), merged(3, 13), merged(4, 11)]
    assert merged_cards(items) == [("contacts", 11), ("contacts", 12), ("contacts", 13)]
    side = {("alive", "contacts", 11): True, ("alive", "contacts", 12): False}
    page = records(items, BY_NAME["events"].parse, Ctx(side=side))
    # 11 survived the merge (named twice), 12 is gone, 13 was not checked: nothing said of it
    assert (page.deleted, page.restored) == ({"contacts": [12]}, {"contacts": [11]})
    assert BY_NAME["events"].request.lookup == "merged_cards"
