"""amoCRM streams: every stream declared once, and the parsers from one API item to records.

Each stream is an `adapters.streams.Stream`; its `request` is a `Request` (what to ask amoCRM
for). `adapters.amocrm.adapter` reads pages for a declaration, one reader per mode, and never
looks at a stream's name. A parser is `parse(item, ctx) -> Page`: one item may feed several
tables (a lead gives a deal and its contact links; an event a stage change or a deletion).

Tasks: amoCRM has no `completed_at`. The `events` stream stamps it from `task_completed`
events (their `created_at`); a task completed before the first sync, or whose event fell
outside the events window, keeps `completed_at` NULL.

Events: the filter asks only for types in amoCRM's event-type table (facts §2.8; an
undocumented type is a 400 for the whole stream; there is no `task_restored`). A deal's
entry-stage row comes from its `lead_added` event, which carries no stage: the parser emits
the row with `stage_id` / `pipeline_id` NULL and the store fills them (the stage before the
deal's first move, else its current one: `Mirror._fill_entry_stages`). A deal created
before the first sync's events window has no `lead_added` in reach and so no entry row.
`entity_merged` marks the card merged away (the event's entity, facts §5.5) deleted.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from adapters.base import Page
from adapters.calls import call_status as call_status_of
from adapters.streams import Ctx, Stream, rows
from adapters.times import from_unix
from adapters.values import flag, float_or_none, int_or_none

WON, LOST = 142, 143
ENTITY = {"leads": "deal", "lead": "deal", "contacts": "contact", "contact": "contact",
          "companies": "company", "company": "company", "customers": "customer",
          "customer": "customer"}
# Tables the `*_deleted` / `*_restored` events point at.
EVENT_TABLES = {"lead": "deals", "contact": "contacts", "company": "companies", "task": "tasks"}
# Only types amoCRM's event-type table lists (facts §2.8): tasks have `task_deleted` but no
# `task_restored`. `lead_added` gives a deal's entry-stage row; `entity_merged` a deletion.
EVENT_TYPES = ("lead_added", "lead_status_changed", "task_completed", "entity_merged",
               *(f"{e}_{what}" for e in EVENT_TABLES for what in ("deleted", "restored")
                 if (e, what) != ("task", "restored")))
# call_status (facts §2.7): 4 = a conversation took place; every other one (1 left a message,
# 2 call back later, 3 not available, 5 wrong number, 6 no answer, 7 busy, 8 undefined) did not
# connect: missed when incoming, failed when outgoing (adapters.calls).
CALL_TALKED = 4
BY_UPDATED_AT = (("order[updated_at]", "asc"),)


@dataclass(frozen=True)
class Request:
    """What to ask amoCRM for one stream.

    path / embedded: the list endpoint and its `_embedded` key. params: fixed query pairs.
    order: the sort asked for on filtered incremental reads. sorted_by: items then arrive
    ascending by this field, so a page's maximum is a safe per-page bookmark. limit: page size
    (events allow 100). paged: False for lists that take no paging (pipelines). gated: list
    filters are amoCRM's paid add-on here; without it, page newest-first and stop at the
    bookmark. skip_on_403: a 403 means "not available to this token", not a block: the stream
    is skipped with a warning giving this reason. page_order: items of one page are parsed in
    ascending order of this field (event order is undocumented; a later event must win).
    """
    path: str
    embedded: str
    params: tuple = ()
    order: tuple = ()
    sorted_by: str | None = None
    limit: int = 250
    paged: bool = True
    gated: bool = False
    skip_on_403: str | None = None
    page_order: str | None = None


def _embedded_first_id(item: dict, key: str) -> int | None:
    items = (item.get("_embedded") or {}).get(key) or []
    if isinstance(items, dict):  # contacts embed their company as one object in some examples
        items = [items]
    return int_or_none(items[0].get("id")) if items else None


def _status(stage_id: int | None) -> str:
    return "won" if stage_id == WON else "lost" if stage_id == LOST else "open"


# -- parsers ---------------------------------------------------------------------------------

def user_row(item: dict, ctx: Ctx) -> Page:
    rights = item.get("rights") or {}
    return rows("users", {"id": int(item["id"]), "name": item.get("name"),
                          "email": item.get("email"),
                          "is_active": flag(rights.get("is_active", True)), "raw": item})


def pipeline_rows(item: dict, ctx: Ctx) -> Page:
    """A pipeline and its stages; 142 / 143 are won / lost in every pipeline (facts §2.3)."""
    pid = int(item["id"])
    statuses = (item.get("_embedded") or {}).get("statuses") or []
    stages = [{"pipeline_id": int_or_none(s.get("pipeline_id")) or pid, "id": int(s["id"]),
               "entity": "deal", "name": s.get("name"), "sort": s.get("sort"),
               "semantics": _status(int(s["id"])), "raw": s} for s in statuses]
    pipeline = {"id": pid, "entity": "deal", "name": item.get("name"), "sort": item.get("sort"),
                "is_default": flag(item.get("is_main")), "raw": item}
    return rows("pipelines", pipeline).merge(rows("stages", *stages))


def deal_rows(item: dict, ctx: Ctx) -> Page:
    """A lead and its contact links (`with=contacts`); the main contact is `is_main`."""
    did = int(item["id"])
    contacts = (item.get("_embedded") or {}).get("contacts") or []
    main = next((c for c in contacts if c.get("is_main")), contacts[0] if contacts else None)
    stage = int_or_none(item.get("status_id"))
    deal = {
        "id": did, "name": item.get("name"), "pipeline_id": int_or_none(item.get("pipeline_id")),
        "stage_id": stage, "status": _status(stage), "amount": float_or_none(item.get("price")),
        "currency": ctx.currency, "responsible_user_id": int_or_none(item.get("responsible_user_id")),
        "contact_id": int_or_none(main["id"]) if main else None,
        "company_id": _embedded_first_id(item, "companies"),
        "created_at": from_unix(item.get("created_at")),
        "updated_at": from_unix(item.get("updated_at")),
        "closed_at": from_unix(item.get("closed_at")), "is_deleted": flag(item.get("is_deleted")),
        "raw": item}
    links, seen = [], set()
    for c in contacts:
        cid = int(c["id"])
        if cid not in seen:
            seen.add(cid)
            links.append({"deal_id": did, "contact_id": cid, "is_main": flag(c is main)})
    # Links always present, even empty: the store replaces a deal's links with the page's.
    return rows("deals", deal).merge(rows("deal_contacts", *links))


def contact_row(item: dict, ctx: Ctx) -> Page:
    return rows("contacts", {
        "id": int(item["id"]), "name": item.get("name"),
        "company_id": _embedded_first_id(item, "companies"),
        "responsible_user_id": int_or_none(item.get("responsible_user_id")),
        "created_at": from_unix(item.get("created_at")),
        "updated_at": from_unix(item.get("updated_at")),
        "is_deleted": flag(item.get("is_deleted")), "raw": item})


def company_row(item: dict, ctx: Ctx) -> Page:
    return rows("companies", {
        "id": int(item["id"]), "name": item.get("name"),
        "responsible_user_id": int_or_none(item.get("responsible_user_id")),
        "created_at": from_unix(item.get("created_at")),
        "updated_at": from_unix(item.get("updated_at")),
        "is_deleted": flag(item.get("is_deleted")), "raw": item})


def task_row(item: dict, ctx: Ctx) -> Page:
    # No completed_at / is_deleted keys: those come from events, and an upsert leaves absent
    # columns alone.
    return rows("tasks", {
        "id": int(item["id"]), "text": item.get("text"),
        "responsible_user_id": int_or_none(item.get("responsible_user_id")),
        "entity_type": ENTITY.get(item.get("entity_type") or ""),
        "entity_id": int_or_none(item.get("entity_id")),
        "is_completed": flag(item.get("is_completed")),
        "due_at": from_unix(item.get("complete_till")),
        "created_at": from_unix(item.get("created_at")),
        "updated_at": from_unix(item.get("updated_at")), "raw": item})


def call_status(params: dict, direction: str) -> str:
    """The mirror status of a call note; without `call_status`, a call with talk time connected."""
    status = int_or_none(params.get("call_status"))
    if status is None:
        return call_status_of(direction, (int_or_none(params.get("duration")) or 0) > 0)
    return call_status_of(direction, status == CALL_TALKED)


def call_row(item: dict, ctx: Ctx, entity: str) -> Page:
    """A `call_in` / `call_out` note; `entity` follows from the notes path."""
    params = item.get("params") or {}
    if isinstance(params, list):  # PHP-style empty object
        params = {}
    direction = "in" if item.get("note_type") == "call_in" else "out"
    return rows("calls", {
        "id": int(item["id"]), "direction": direction,
        "status": call_status(params, direction), "duration_s": int_or_none(params.get("duration")),
        "started_at": from_unix(item.get("created_at")),
        "responsible_user_id": int_or_none(item.get("responsible_user_id") or item.get("created_by")),
        "entity_type": entity, "entity_id": int_or_none(item.get("entity_id")),
        "phone": params.get("phone"), "raw": item})


def _lead_status(side) -> dict:
    if isinstance(side, list) and side and isinstance(side[0], dict):
        return side[0].get("lead_status") or {}
    return {}


def event_rows(item: dict, ctx: Ctx) -> Page:
    """A stage change, a deal's creation, a task completion, or a deletion / restore / merge
    of a card."""
    kind = item.get("type") or ""
    entity_id = int_or_none(item.get("entity_id"))
    if kind == "lead_added":
        # No stage in the event (value_after is a note): the store fills stage and pipeline.
        return rows("stage_changes", {
            "id": str(item["id"]), "entity": "deal", "entity_id": entity_id,
            "pipeline_id": None, "stage_id": None, "previous_stage_id": None,
            "changed_at": from_unix(item.get("created_at")), "raw": item})
    if kind == "entity_merged":
        kind = f"{item.get('entity_type') or ''}_deleted"   # the card merged away is gone
    if kind == "lead_status_changed":
        after, before = _lead_status(item.get("value_after")), _lead_status(item.get("value_before"))
        return rows("stage_changes", {
            "id": str(item["id"]), "entity": "deal", "entity_id": entity_id,
            "pipeline_id": int_or_none(after.get("pipeline_id")), "stage_id": int_or_none(after.get("id")),
            "previous_stage_id": int_or_none(before.get("id")),
            "changed_at": from_unix(item.get("created_at")), "raw": item})
    if kind == "task_completed" and entity_id is not None:
        return rows("tasks", {"id": entity_id, "is_completed": 1,
                              "completed_at": from_unix(item.get("created_at"))})
    return _deleted_or_restored(kind, entity_id, int_or_none(item.get("created_at")) or 0, ctx)


def _deleted_or_restored(kind: str, entity_id: int | None, at: int, ctx: Ctx) -> Page:
    """The newest deletion / restore of a card wins, whatever page it is on (`ctx.memo`)."""
    entity, _, what = kind.rpartition("_")
    table = EVENT_TABLES.get(entity)
    if not table or what not in ("deleted", "restored") or entity_id is None:
        return Page()
    latest = ctx.memo.setdefault("latest_event", {})
    if latest.get((table, entity_id), -1) > at:
        return Page()  # a newer event, on an earlier page, already decided this id
    latest[(table, entity_id)] = at
    return Page(deleted={table: [entity_id]}) if what == "deleted" else Page(
        restored={table: [entity_id]})


# -- declarations ----------------------------------------------------------------------------

def _calls(entity_path: str) -> Stream:
    return Stream(
        name=f"calls_{entity_path}", tables=("calls",), mode="changes", cursor="updated_at",
        request=Request(f"/api/v4/{entity_path}/notes", "notes",
                        params=(("filter[note_type][]", "call_in"),
                                ("filter[note_type][]", "call_out")),
                        order=BY_UPDATED_AT, sorted_by="updated_at"),
        parse=functools.partial(call_row, entity=ENTITY[entity_path]))


def _cards(name: str, tables: tuple, path: str, embedded: str, parse, **kw) -> Stream:
    """Leads, contacts, companies: ordered by updated_at, list filters a paid add-on."""
    return Stream(name=name, tables=tables, mode="changes", cursor="updated_at", parse=parse,
                  request=Request(path, embedded, order=BY_UPDATED_AT, sorted_by="updated_at",
                                  gated=True, **kw))


STREAMS: tuple[Stream, ...] = (
    Stream(name="users", tables=("users",), mode="snapshot", parse=user_row,
           request=Request("/api/v4/users", "users", skip_on_403="the token is not an admin's")),
    Stream(name="pipelines", tables=("pipelines", "stages"), mode="snapshot", parse=pipeline_rows,
           request=Request("/api/v4/leads/pipelines", "pipelines", paged=False)),
    _cards("companies", ("companies",), "/api/v4/companies", "companies", company_row),
    _cards("contacts", ("contacts",), "/api/v4/contacts", "contacts", contact_row),
    _cards("deals", ("deals", "deal_contacts"), "/api/v4/leads", "leads", deal_rows,
           params=(("with", "contacts"),)),
    # Tasks cannot be ordered by updated_at (facts §1.2): order by id, bookmark at the end.
    Stream(name="tasks", tables=("tasks",), mode="changes", cursor="updated_at", parse=task_row,
           request=Request("/api/v4/tasks", "tasks", order=(("order[id]", "asc"),))),
    _calls("leads"), _calls("contacts"), _calls("companies"),
    Stream(name="events", tables=("stage_changes", "deals", "contacts", "companies", "tasks"),
           mode="changes", cursor="created_at", parse=event_rows,
           request=Request("/api/v4/events", "events", limit=100, page_order="created_at",
                           params=tuple(("filter[type][]", t) for t in EVENT_TYPES))),
)
BY_NAME: dict[str, Stream] = {s.name: s for s in STREAMS}
