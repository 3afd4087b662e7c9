"""amoCRM streams: what to request, and how an item becomes mirror records.

A stream is a declaration (`Stream`); `adapters.amocrm` runs them all with one paging loop.
A parser takes `(page, item, ctx)` and adds the item's records to the page, so one item may
feed several tables (a lead gives a deal and its contact links; an event may give a stage
change or a deletion).

Tasks: amoCRM has no `completed_at`. The `events` stream stamps it from `task_completed`
events (their `created_at`); a task completed before the first sync, or whose event fell
outside the events window, keeps `completed_at` NULL.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable

from adapters.base import Page

WON, LOST = 142, 143
ENTITY = {"leads": "deal", "lead": "deal", "contacts": "contact", "contact": "contact",
          "companies": "company", "company": "company", "customers": "customer",
          "customer": "customer"}
# Tables the `*_deleted` / `*_restored` events point at.
EVENT_TABLES = {"lead": "deals", "contact": "contacts", "company": "companies", "task": "tasks"}
EVENT_TYPES = ("lead_status_changed", "task_completed",
               *(f"{e}_{what}" for e in EVENT_TABLES for what in ("deleted", "restored")))
# call_status (facts §2.7, §5.7): 4 talked; 5 wrong number; 1, 2, 3, 6, 7 (and 8) not reached.
CALL_STATUS = {4: "answered", 5: "failed"}


@dataclass(frozen=True)
class Ctx:
    """What parsers need to know about the source, plus per-fetch state.

    latest: (table, id) -> created_at of the deletion/restore event that decided it so far in
    this fetch. Event order is undocumented, so the newest event wins whatever page it is on.
    """
    currency: str = "RUB"
    latest: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Stream:
    """One stream: request shape plus parser.

    cursor: the filter field for incremental reads (`updated_at`, or `created_at` for events);
    None means the whole collection is read every run (it is small).
    sorted_by: items arrive ascending by this field, so a page's maximum is a safe bookmark.
    gated: list filters are amoCRM's paid add-on here; without it, page newest-first and stop
    at the bookmark.
    """
    name: str
    path: str
    embedded: str
    parse: Callable[[Page, dict, Ctx], None]
    cursor: str | None = "updated_at"
    params: tuple = ()
    order: tuple = (("order[updated_at]", "asc"),)
    sorted_by: str | None = "updated_at"
    limit: int = 250
    paged: bool = True
    gated: bool = False
    tables: tuple = field(default=())


def ts(value) -> str | None:
    """Unix seconds -> ISO 8601 UTC text (None and 0 stay None)."""
    if value in (None, "", 0):
        return None
    return datetime.fromtimestamp(int(value), timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _int(value) -> int | None:
    return None if value in (None, "") else int(value)


def _bool(value) -> int:
    return 1 if value else 0


def _embedded_first_id(item: dict, key: str) -> int | None:
    items = (item.get("_embedded") or {}).get(key) or []
    if isinstance(items, dict):  # contacts embed their company as one object in some examples
        items = [items]
    return _int(items[0].get("id")) if items else None


def _add(page: Page, table: str, row: dict) -> None:
    page.rows.setdefault(table, []).append(row)


# -- parsers ---------------------------------------------------------------------------------

def user_row(page: Page, item: dict, ctx: Ctx) -> None:
    rights = item.get("rights") or {}
    _add(page, "users", {"id": int(item["id"]), "name": item.get("name"), "email": item.get("email"),
                         "is_active": _bool(rights.get("is_active", True)), "raw": item})


def stage_semantics(status: dict) -> str:
    sid = int(status["id"])
    return "won" if sid == WON else "lost" if sid == LOST else "open"


def pipeline_rows(page: Page, item: dict, ctx: Ctx) -> None:
    pid = int(item["id"])
    statuses = (item.get("_embedded") or {}).get("statuses") or []
    _add(page, "pipelines", {"id": pid, "entity": "deal", "name": item.get("name"),
                             "sort": item.get("sort"), "is_default": _bool(item.get("is_main")),
                             "raw": item})
    page.rows.setdefault("stages", [])
    for s in statuses:
        _add(page, "stages", {"pipeline_id": _int(s.get("pipeline_id")) or pid, "id": int(s["id"]),
                              "entity": "deal", "name": s.get("name"), "sort": s.get("sort"),
                              "semantics": stage_semantics(s), "raw": s})


def deal_rows(page: Page, item: dict, ctx: Ctx) -> None:
    did = int(item["id"])
    contacts = (item.get("_embedded") or {}).get("contacts") or []
    main = next((c for c in contacts if c.get("is_main")), contacts[0] if contacts else None)
    stage = _int(item.get("status_id"))
    _add(page, "deals", {
        "id": did, "name": item.get("name"), "pipeline_id": _int(item.get("pipeline_id")),
        "stage_id": stage, "status": "won" if stage == WON else "lost" if stage == LOST else "open",
        "amount": float(item["price"]) if item.get("price") is not None else None,
        "currency": ctx.currency, "responsible_user_id": _int(item.get("responsible_user_id")),
        "contact_id": _int(main["id"]) if main else None,
        "company_id": _embedded_first_id(item, "companies"),
        "created_at": ts(item.get("created_at")), "updated_at": ts(item.get("updated_at")),
        "closed_at": ts(item.get("closed_at")), "is_deleted": _bool(item.get("is_deleted")),
        "raw": item})
    # Always present, even empty: the store replaces each deal's links with what the page holds.
    links = page.rows.setdefault("deal_contacts", [])
    seen = set()
    for c in contacts:
        cid = int(c["id"])
        if cid not in seen:
            seen.add(cid)
            links.append({"deal_id": did, "contact_id": cid, "is_main": _bool(c is main)})


def contact_row(page: Page, item: dict, ctx: Ctx) -> None:
    _add(page, "contacts", {
        "id": int(item["id"]), "name": item.get("name"),
        "company_id": _embedded_first_id(item, "companies"),
        "responsible_user_id": _int(item.get("responsible_user_id")),
        "created_at": ts(item.get("created_at")), "updated_at": ts(item.get("updated_at")),
        "is_deleted": _bool(item.get("is_deleted")), "raw": item})


def company_row(page: Page, item: dict, ctx: Ctx) -> None:
    _add(page, "companies", {
        "id": int(item["id"]), "name": item.get("name"),
        "responsible_user_id": _int(item.get("responsible_user_id")),
        "created_at": ts(item.get("created_at")), "updated_at": ts(item.get("updated_at")),
        "is_deleted": _bool(item.get("is_deleted")), "raw": item})


def task_row(page: Page, item: dict, ctx: Ctx) -> None:
    # No completed_at / is_deleted keys: those come from events, and an upsert leaves absent
    # columns alone.
    _add(page, "tasks", {
        "id": int(item["id"]), "text": item.get("text"),
        "responsible_user_id": _int(item.get("responsible_user_id")),
        "entity_type": ENTITY.get(item.get("entity_type") or ""),
        "entity_id": _int(item.get("entity_id")),
        "is_completed": _bool(item.get("is_completed")), "due_at": ts(item.get("complete_till")),
        "created_at": ts(item.get("created_at")), "updated_at": ts(item.get("updated_at")),
        "raw": item})


def call_status(params: dict) -> str:
    status = _int(params.get("call_status"))
    if status is not None:
        return CALL_STATUS.get(status, "missed")
    return "answered" if (_int(params.get("duration")) or 0) > 0 else "missed"


def call_row(page: Page, item: dict, ctx: Ctx, entity: str) -> None:
    params = item.get("params") or {}
    if isinstance(params, list):  # PHP-style empty object
        params = {}
    _add(page, "calls", {
        "id": int(item["id"]), "direction": "in" if item.get("note_type") == "call_in" else "out",
        "status": call_status(params), "duration_s": _int(params.get("duration")),
        "started_at": ts(item.get("created_at")),
        "responsible_user_id": _int(item.get("responsible_user_id") or item.get("created_by")),
        "entity_type": entity, "entity_id": _int(item.get("entity_id")),
        "phone": params.get("phone"), "raw": item})


def _lead_status(side) -> dict:
    if isinstance(side, list) and side and isinstance(side[0], dict):
        return side[0].get("lead_status") or {}
    return {}


def event_rows(page: Page, item: dict, ctx: Ctx) -> None:
    kind = item.get("type") or ""
    entity_id = _int(item.get("entity_id"))
    if kind == "lead_status_changed":
        after, before = _lead_status(item.get("value_after")), _lead_status(item.get("value_before"))
        _add(page, "stage_changes", {
            "id": str(item["id"]), "entity": "deal", "entity_id": entity_id,
            "pipeline_id": _int(after.get("pipeline_id")), "stage_id": _int(after.get("id")),
            "previous_stage_id": _int(before.get("id")), "changed_at": ts(item.get("created_at")),
            "raw": item})
    elif kind == "task_completed" and entity_id is not None:
        _add(page, "tasks", {"id": entity_id, "is_completed": 1,
                             "completed_at": ts(item.get("created_at"))})
    else:
        entity, _, what = kind.rpartition("_")
        table = EVENT_TABLES.get(entity)
        at = int(item.get("created_at") or 0)
        if table and what in ("deleted", "restored") and entity_id is not None:
            if ctx.latest.get((table, entity_id), -1) > at:
                return  # a newer event (seen on an earlier page) already decided this id
            ctx.latest[(table, entity_id)] = at
            # Later events win: move the id out of the opposite list.
            other = page.restored if what == "deleted" else page.deleted
            mine = page.deleted if what == "deleted" else page.restored
            if entity_id in other.get(table, []):
                other[table].remove(entity_id)
                if not other[table]:
                    del other[table]
            if entity_id not in mine.setdefault(table, []):
                mine[table].append(entity_id)


def sort_events(items: list[dict]) -> list[dict]:
    """Oldest first within a page, so a deletion followed by a restore ends restored."""
    return sorted(items, key=lambda e: (e.get("created_at") or 0))


# -- declarations ----------------------------------------------------------------------------

def _calls(entity_path: str) -> Stream:
    return Stream(
        name=f"calls_{entity_path}", path=f"/api/v4/{entity_path}/notes", embedded="notes",
        parse=functools.partial(call_row, entity=ENTITY[entity_path]),
        params=(("filter[note_type][]", "call_in"), ("filter[note_type][]", "call_out")),
        tables=("calls",))


STREAMS: dict[str, Stream] = {s.name: s for s in (
    Stream(name="users", path="/api/v4/users", embedded="users", parse=user_row, cursor=None,
           order=(), sorted_by=None, tables=("users",)),
    Stream(name="pipelines", path="/api/v4/leads/pipelines", embedded="pipelines",
           parse=pipeline_rows, cursor=None, order=(), sorted_by=None, paged=False,
           tables=("pipelines", "stages")),
    Stream(name="companies", path="/api/v4/companies", embedded="companies", parse=company_row,
           gated=True, tables=("companies",)),
    Stream(name="contacts", path="/api/v4/contacts", embedded="contacts", parse=contact_row,
           gated=True, tables=("contacts",)),
    Stream(name="deals", path="/api/v4/leads", embedded="leads", parse=deal_rows,
           params=(("with", "contacts"),), gated=True, tables=("deals", "deal_contacts")),
    # Tasks cannot be ordered by updated_at (facts §1.2): order by id, bookmark at the end.
    Stream(name="tasks", path="/api/v4/tasks", embedded="tasks", parse=task_row,
           order=(("order[id]", "asc"),), sorted_by=None, tables=("tasks",)),
    _calls("leads"), _calls("contacts"), _calls("companies"),
    Stream(name="events", path="/api/v4/events", embedded="events", parse=event_rows,
           cursor="created_at", order=(), sorted_by=None, limit=100,
           params=tuple(("filter[type][]", t) for t in EVENT_TYPES),
           tables=("stage_changes", "deals", "contacts", "companies", "tasks")),
)}
