"""amoCRM webhooks in the adapter, with no real server: recorded delivery bodies
(tests/unit/bodies/amocrm/webhooks.json: amoCRM's documented examples and the sandbox's
shapes, for this test account) parsed into Changes, refusals, reading records back by id
(`responses`), and installing / removing the webhook."""

import json
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest
import responses

from adapters.amocrm.hooks import HOOK_EVENTS, parse_delivery, split_key
from adapters.amocrm.streams import BY_NAME
from adapters.errors import ScopeError
from adapters.hooks import Change, HookRefused
from adapters.streams import Ctx, records
from tests.unit.test_amocrm_support import BASE, hal, make_adapter, query

BODIES = Path(__file__).parent / "bodies" / "amocrm"
ACCOUNT = {"id": 29711111, "name": "Acme", "subdomain": "acme", "current_user_id": 1}
ACC = [
    ("account[subdomain]", "acme"),
    ("account[id]", "29711111"),
    ("account[_links][self]", "https://acme.amocrm.ru"),
]
SECRET_URL = "https://hooks.example.com/amocrm/3f9c1d2e7a5b4c8d"


def recorded(name: str) -> list[tuple[str, str]]:
    bodies = json.loads((BODIES / "webhooks.json").read_text(encoding="utf-8"))
    return parse_qsl(bodies[name], keep_blank_values=True)


def items(name: str) -> list[dict]:
    return json.loads((BODIES / f"{name}.json").read_text(encoding="utf-8"))["_embedded"][name]


def parse(pairs):
    return parse_delivery(pairs, 29711111, "acme")


@pytest.fixture
def adapter(tmp_path):
    a = make_adapter(tmp_path)
    yield a
    a.close()


# -- parsing -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, changes",
    [
        ("lead_status_documented", [Change("deals", 25399013)]),
        ("contact_add_documented", [Change("contacts", 10952709)]),
        ("company_add_documented", [Change("companies", 10959143)]),
        ("task_update_documented", [Change("tasks", 11122233)]),  # its item nested one deeper
        ("lead_update_sandbox", [Change("deals", 1000001)]),
        ("lead_status_sandbox", [Change("deals", 1000001)]),
        ("company_update_sandbox", [Change("companies", 20001)]),
        ("contact_delete_sandbox", [Change("contacts", 300001, deleted=True)]),
    ],
)
def test_recorded_deliveries_name_the_right_records(name, changes):
    """Nested fields (custom fields' ids, linked leads) name no record of their own."""
    assert parse(recorded(name)) == changes


def test_every_entity_and_action_in_one_delivery():
    pairs = [
        ("leads[add][0][id]", "11"),
        ("leads[update][0][id]", "12"),
        ("leads[update][1][id]", "11"),  # named twice: one change
        ("leads[status][0][id]", "12"),
        ("leads[status][0][status_id]", "142"),
        ("leads[status][0][pipeline_id]", "3"),
        ("leads[status][0][old_status_id]", "7"),
        ("leads[delete][0][id]", "13"),
        ("leads[restore][0][id]", "14"),
        ("leads[responsible][0][id]", "15"),
        ("contacts[update][0][id]", "21"),
        ("contacts[update][0][type]", "contact"),
        ("contacts[update][1][id]", "22"),
        ("contacts[update][1][type]", "company"),
        ("contacts[delete][0][id]", "23"),
        ("contacts[delete][0][type]", "Company"),
        ("companies[update][0][id]", "24"),
        ("task[add][0][id]", "31"),
        ("task[delete][0][id]", "32"),
        ("customers[update][0][id]", "41"),  # not mirrored: left out
        ("leads[note][0][note][id]", "51"),  # a note: left out
        ("unsorted[add][0][uid]", "abc"),
        *ACC,
    ]
    assert parse(pairs) == [
        Change("deals", 11),
        Change("deals", 12),
        Change("deals", 13, deleted=True),
        Change("deals", 14),
        Change("deals", 15),
        Change("contacts", 21),
        Change("companies", 22),
        Change("companies", 23, deleted=True),
        Change("companies", 24),
        Change("tasks", 31),
        Change("tasks", 32, deleted=True),
    ]


def test_a_deletion_given_as_the_bare_id_and_a_deletion_with_an_update():
    assert parse([("leads[delete][0]", "5"), *ACC]) == [Change("deals", 5, deleted=True)]
    assert parse([("leads[delete]", "6"), *ACC]) == [Change("deals", 6, deleted=True)]
    assert parse([("leads[update][0][id]", "7"), ("leads[delete][0][id]", "7"), *ACC]) == [
        Change("deals", 7, deleted=True)
    ]


@pytest.mark.parametrize(
    "pairs, why",
    [
        ([("leads[update][0][id]", "1"), ACC[0], ACC[2]], "no account[id]"),
        (
            [("leads[update][0][id]", "1"), ("account[subdomain]", "acme"), ("account[id]", "29711112")],
            "another account: account[id] 29711112",
        ),
        (
            [("leads[update][0][id]", "1"), ("account[subdomain]", "acme"), ("account[id]", "1 OR 1=1")],
            "account[id] not an account id",
        ),
        (
            [
                ("leads[update][0][id]", "1"),
                ("account[subdomain]", "acme"),
                ("account[id]", "29711111"),
                ("account[id]", "5"),
            ],
            "account[id] given 2 different values",
        ),
        ([("leads[update][0][id]", "1"), ("account[id]", "29711111")], "no account[subdomain]"),
        (
            [("leads[update][0][id]", "1"), ("account[subdomain]", "rival"), ("account[id]", "29711111")],
            "another account: account[subdomain] rival",
        ),
        (
            [("leads[update][0][id]", "1"), ("account[subdomain]", "<script>"), ("account[id]", "29711111")],
            "account[subdomain] not a subdomain",
        ),
        ([*ACC], "names no lead, contact, company or task"),
        ([("unsorted[add][0][uid]", "x"), ("customers[add][0][id]", "3"), *ACC], "names no lead"),
        ([("leads[update][0][name]", "x"), *ACC], "leads[update][0] has no id"),
        ([("leads[update][0][id]", "12abc"), *ACC], "leads[update][0][id] is not an id"),
        ([("leads[update][0][id]", "0"), *ACC], "is not an id"),
        ([("contacts[update][0][id]", "3"), *ACC], "contacts[update][0] has no type"),
        (
            [("contacts[update][0][id]", "3"), ("contacts[update][0][type]", "customer"), *ACC],
            "neither contact nor company",
        ),
    ],
)
def test_refusals_say_why_in_one_line(pairs, why):
    with pytest.raises(HookRefused, match=why.replace("[", r"\[").replace("]", r"\]")) as err:
        parse(pairs)
    assert "\n" not in str(err.value)
    assert "OR 1=1" not in str(err.value) and "<script>" not in str(err.value)


def test_split_key():
    assert split_key("leads[update][0][id]") == ["leads", "update", "0", "id"]
    assert split_key("account[_links][self]") == ["account", "_links", "self"]
    assert split_key("plain") == ["plain"]
    assert split_key("leads[update]x[0]") is None and split_key("[0][id]") is None


@responses.activate
def test_parse_hook_checks_the_account_read_once(adapter):
    responses.get(BASE + "/api/v4/account", json=ACCOUNT)
    for _ in range(3):
        assert adapter.parse_hook(recorded("lead_update_sandbox")) == [Change("deals", 1000001)]
    with pytest.raises(HookRefused):
        adapter.parse_hook(
            [("leads[update][0][id]", "1"), ("account[subdomain]", "acme"), ("account[id]", "1")]
        )
    assert len(responses.calls) == 1 and adapter.account()["subdomain"] == "acme"


# -- reading back --------------------------------------------------------------------------------


def serve(path: str, body_for):
    """A GET on BASE+path answered by `body_for(query pairs)`: a dict, or None for 204."""

    def callback(request):
        body = body_for(parse_qsl(urlsplit(request.url).query))
        return (204, {}, "") if body is None else (200, {}, json.dumps(body))

    responses.add_callback(responses.GET, BASE + path, callback=callback)


def listing(embedded: str, all_items: list, next_page: bool = False, honour: bool = True):
    """A list endpoint serving the items whose id was asked for (or, `honour` False, all of
    them, as an account without the list-filter add-on does)."""

    def body_for(q):
        ids = {int(v) for k, v in q if k == "filter[id][]"}
        got = [i for i in all_items if i["id"] in ids] if honour else all_items
        return hal(embedded, got, next_page) if got else None

    return body_for


@responses.activate
def test_read_changes_builds_the_sync_rows_and_marks_missing_ids_deleted(adapter):
    leads, contacts, tasks = items("leads"), items("contacts"), items("tasks")
    serve("/api/v4/leads", listing("leads", leads))
    serve("/api/v4/contacts", listing("contacts", contacts))
    serve("/api/v4/tasks", listing("tasks", tasks))
    page = adapter.read_changes(
        [
            Change("deals", 19619),
            Change("deals", 14461),
            Change("deals", 999, deleted=True),
            Change("contacts", 10971467),
            Change("tasks", 7087),
            Change("tasks", 7088, deleted=True),
            Change("deals", 19619),
        ]
    )
    assert len(responses.calls) == 3  # one request per table
    ctx = Ctx(currency=adapter.cfg.currency)
    want = records([leads[0], leads[2]], BY_NAME["deals"].parse, ctx)
    want.merge(records([contacts[0]], BY_NAME["contacts"].parse, ctx))
    want.merge(records(tasks, BY_NAME["tasks"].parse, ctx))
    assert page.rows == want.rows  # deals with their contact links too
    assert page.rows["deal_contacts"]
    assert page.deleted == {"deals": [999]}  # a deletion is what reading says
    lead_q = query(responses.calls[0])
    assert [v for k, v in lead_q if k == "filter[id][]"] == ["19619", "14461", "999"]
    assert ("with", "contacts,source") in lead_q and ("order[updated_at]", "desc") in lead_q
    task_q = query(responses.calls[2])
    assert [v for k, v in task_q if k == "filter[id][]"] == ["7087", "7088"]
    assert not [k for k, _ in task_q if k.startswith("order")]  # tasks: no updated_at order


@responses.activate
def test_without_the_filter_add_on_unseen_ids_are_read_one_by_one(adapter):
    """The account ignores `filter[id]` and serves its newest-first list, which has more
    pages: ids not on it are read alone, 204 meaning gone."""
    leads = items("leads")
    serve("/api/v4/leads", listing("leads", leads[:2], next_page=True, honour=False))
    responses.get(BASE + "/api/v4/leads/14461", json=leads[2])
    responses.get(BASE + "/api/v4/leads/555", status=204)
    page = adapter.read_changes([Change("deals", 14460), Change("deals", 14461), Change("deals", 555)])
    assert [c.request.method + " " + c.request.url.split("?")[0][len(BASE) :] for c in responses.calls] == [
        "GET /api/v4/leads",
        "GET /api/v4/leads/14461",
        "GET /api/v4/leads/555",
    ]
    assert ("with", "contacts,source") in query(responses.calls[1])
    assert [d["id"] for d in page.rows["deals"]] == [14460, 14461]
    assert page.deleted == {"deals": [555]}


@responses.activate
def test_an_unfiltered_answer_that_is_the_whole_list_is_conclusive(adapter):
    companies = items("companies")
    serve("/api/v4/companies", listing("companies", companies, honour=False))
    page = adapter.read_changes([Change("companies", 10971463), Change("companies", 77)])
    assert len(responses.calls) == 1
    assert [c["id"] for c in page.rows["companies"]] == [10971463]
    assert page.deleted == {"companies": [77]}


@responses.activate
def test_many_ids_go_100_a_request_and_an_empty_answer_means_all_gone(adapter):
    serve("/api/v4/tasks", lambda q: None)  # 204: none of them
    ids = list(range(1, 151))
    page = adapter.read_changes([Change("tasks", i) for i in ids])
    assert [len([k for k, _ in query(c) if k == "filter[id][]"]) for c in responses.calls] == [100, 50]
    assert page.deleted == {"tasks": ids} and not page.rows


@responses.activate
def test_a_deleted_change_still_served_is_alive(adapter):
    serve("/api/v4/contacts", listing("contacts", items("contacts")))
    page = adapter.read_changes([Change("contacts", 10971465, deleted=True)])
    assert [c["id"] for c in page.rows["contacts"]] == [10971465] and not page.deleted


@responses.activate
def test_read_changes_skips_streams_not_mirrored_and_refuses_foreign_tables(tmp_path):
    a = make_adapter(tmp_path, streams=["contacts"])
    try:
        assert a.read_changes([Change("deals", 1)]).count() == 0 and not responses.calls
        with pytest.raises(ValueError, match="activities"):
            a.read_changes([Change("activities", 1)])
        assert a.read_changes([]).count() == 0
    finally:
        a.close()


# -- installing and removing ------------------------------------------------------------------


@responses.activate
def test_install_hooks_subscribes_every_change_event(adapter):
    responses.post(
        BASE + "/api/v4/webhooks",
        status=201,
        json={
            "id": 1056949,
            "destination": SECRET_URL,
            "settings": list(HOOK_EVENTS),
            "disabled": False,
            "sort": 1,
            "account_id": 29711111,
        },
    )
    text = adapter.install_hooks(SECRET_URL)
    sent = json.loads(responses.calls[0].request.body)
    assert sent == {"destination": SECRET_URL, "settings": list(HOOK_EVENTS)}
    assert {
        "add_lead",
        "update_lead",
        "delete_lead",
        "restore_lead",
        "status_lead",
        "add_contact",
        "update_contact",
        "delete_contact",
        "restore_contact",
        "add_company",
        "update_company",
        "delete_company",
        "restore_company",
        "add_task",
        "update_task",
        "delete_task",
    } <= set(HOOK_EVENTS)
    assert text == (
        f"amoCRM webhook 1056949 sends {len(HOOK_EVENTS)} events (lead, contact, "
        f"company and task changes) to https://hooks.example.com/…"
    )
    assert "3f9c1d2e" not in text and "\n" not in text


@responses.activate
def test_install_hooks_reports_a_disabled_webhook(adapter):
    responses.post(
        BASE + "/api/v4/webhooks",
        status=201,
        json={"id": 7, "destination": SECRET_URL, "settings": list(HOOK_EVENTS[:-1]), "disabled": True},
    )
    text = adapter.install_hooks(SECRET_URL)
    assert f"left out {HOOK_EVENTS[-1]}" in text and "disabled" in text


@responses.activate
def test_remove_hooks(adapter):
    responses.delete(BASE + "/api/v4/webhooks", status=204)
    responses.delete(BASE + "/api/v4/webhooks", status=404, json={"title": "Not Found"})
    assert adapter.remove_hooks(SECRET_URL) == "amoCRM webhook to https://hooks.example.com/… removed"
    assert json.loads(responses.calls[0].request.body) == {"destination": SECRET_URL}
    assert "nothing to remove" in adapter.remove_hooks(SECRET_URL)


@responses.activate
def test_webhooks_without_admin_rights_are_a_scope_error_not_a_block(adapter):
    responses.post(BASE + "/api/v4/webhooks", status=403, json={"title": "Forbidden"})
    responses.delete(BASE + "/api/v4/webhooks", status=403, json={"title": "Forbidden"})
    responses.get(BASE + "/api/v4/account", json=ACCOUNT)
    with pytest.raises(ScopeError, match="admin"):
        adapter.install_hooks(SECRET_URL)
    with pytest.raises(ScopeError, match="admin"):
        adapter.remove_hooks(SECRET_URL)
    adapter.check()  # the source is not blocked


def test_amocrm_keeps_no_queue_of_missed_changes(adapter):
    assert adapter.missed_changes() is None
