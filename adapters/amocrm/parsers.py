"""amoCRM parsers: one API item to mirror records, `parse(item, ctx) -> Page`.

One item may feed several tables (a lead gives a deal and its contact links; an event a stage
change or a deletion).

Each stream is an `adapters.streams.Stream`; its `request` is a `Request` (what to ask amoCRM
for). `adapters.amocrm.adapter` reads pages for a declaration, one reader per mode, and never
looks at a stream's name. A parser is `parse(item, ctx) -> Page`: one item may feed several
tables (a lead gives a deal and its contact links; an event a stage change or a deletion).

Tasks: amoCRM has no `completed_at`. The `events` stream stamps it from `task_completed`
events (their `created_at`); a task completed before the first sync, or whose event fell
outside the events window, keeps `completed_at` NULL. There is no `task_restored` event: a
listed task is alive (lists skip the trash), so its row clears `is_deleted`, and a
`task_deleted` event is a dated deletion (`Page.deleted_at`) that loses to a later
`updated_at` (a restore changes the task, as a trashing does: `with=only_deleted` gives a
trashed lead's change date). So a deletion read again (events overlap, full sync) cannot undo
a restore, and one after it still deletes.

Events: the filter asks only for types in amoCRM's event-type table (docs/api-notes.md; an
undocumented type is a 400 for the whole stream; there is no `task_restored`). A deal's
entry-stage row comes from its `lead_added` event, which carries no stage: the parser emits
the row with `stage_id` / `pipeline_id` NULL and the store fills them (the stage before the
deal's first move, else its current one: `Mirror._fill_entry_stages`). A deal created
before the first sync's events window has no `lead_added` in reach and so no entry row.
`entity_merged` names a card, but the docs do not say which one, the card merged away or
the survivor: the reader asks for it (`GET /api/v4/{entity}/{id}`, 204 = gone) and only a
card the account no longer serves is marked deleted (`merged_row`).

Interactions (`activities`, ids `note:<id>` / `event:<id>`): call and SMS notes (the notes
streams ask for `call_in`, `call_out`, `sms_in`, `sms_out`; a call note also gives its
`calls` row) and chat messages (`incoming_chat_message` / `outgoing_chat_message` events).
amoCRM documents no note type for e-mails or meetings, so it has none. Call and SMS events
are not asked for: a call event only points at its call note (`value_after` note id), which
the notes streams read with its direction, duration and outcome, and counting both would
count each call twice. No documented event or list reveals a deleted call or SMS note, so
amoCRM activities are never marked deleted.

Survey answers: `nps_rate_added` events, whose documented value is
`value_after = [{"nps": {"rate": N}}]`, N an integer 0-10; any other shape or value is
reported and gives no answer.

Customers (accounts in Customers mode): the calls API files a call to a contact with no open
lead under its customer, so the customers' notes are read too (`calls_customers`). Their
calls and SMS are filed under the customer's main contact, else its company (the reader reads
the customers back with `with=contacts,companies` into `ctx.side`), where KPIs per client
count them; a customer with neither keeps them (`entity_type` `customer`).

Acquisition channel (deals): the lead's tracking-data field `utm_source` (code UTM_SOURCE),
else the name of its source (`with=source`, `_embedded.source`), trimmed and lower-case.
"""

from __future__ import annotations

from adapters.base import Page
from adapters.calls import call_status as call_status_of
from adapters.streams import Ctx, rows
from adapters.times import from_unix
from adapters.values import (
    BadItem,
    BadValue,
    Item,
    amount,
    channel,
    flag,
    identifier,
    integer,
    objects,
    score_in,
    to_int,
    unix_moment,
)

WON, LOST = 142, 143
ENTITY = {
    "leads": "deal",
    "lead": "deal",
    "contacts": "contact",
    "contact": "contact",
    "companies": "company",
    "company": "company",
    "customers": "customer",
    "customer": "customer",
}
# Tables the `*_deleted` / `*_restored` events point at.
EVENT_TABLES = {"lead": "deals", "contact": "contacts", "company": "companies", "task": "tasks"}
# Only types amoCRM's event-type table lists (docs/api-notes.md): tasks have `task_deleted` but no
# `task_restored`. `lead_added` gives a deal's entry-stage row; `entity_merged` a deletion.
RESTORE_EVENTS = {"lead", "contact", "company"}
CHAT_EVENTS = {"incoming_chat_message": "in", "outgoing_chat_message": "out"}
NPS_EVENT = "nps_rate_added"
EVENT_TYPES = (
    "lead_added",
    "lead_status_changed",
    "task_completed",
    "entity_merged",
    *(
        f"{e}_{what}"
        for e in EVENT_TABLES
        for what in ("deleted", "restored")
        if what == "deleted" or e in RESTORE_EVENTS
    ),
    *CHAT_EVENTS,
    NPS_EVENT,
)
# Notes that are client interactions: note_type -> (channel, direction).
NOTE_KINDS = {
    "call_in": ("call", "in"),
    "call_out": ("call", "out"),
    "sms_in": ("sms", "in"),
    "sms_out": ("sms", "out"),
}
UTM_SOURCE = "UTM_SOURCE"
# call_status (docs/api-notes.md): 4 = a conversation took place; every other one (1 left a message,
# 2 call back later, 3 not available, 5 wrong number, 6 no answer, 7 busy, 8 undefined) did not
# connect: missed when incoming, failed when outgoing (adapters.calls).
CALL_TALKED = 4


def _links(v: Item, key: str) -> list[dict]:
    """`_embedded.<key>`: a list of objects with ids (contacts embed their company as one object
    in some examples); anything else skips the item: its links would be wrong."""
    got = v.strict(f"_embedded.{key}", lambda x: [x] if isinstance(x, dict) and "id" in x else objects(x), [])
    for n, link in enumerate(got):
        try:
            if integer(link.get("id")) is None:
                raise BadValue("no id")
        except BadValue as err:
            raise BadItem(f"_embedded.{key}[{n}].id", link.get("id"), str(err)) from None
    return got


def _first_id(v: Item, key: str) -> int | None:
    links = _links(v, key)
    return integer(links[0]["id"]) if links else None


def _status(stage_id: int | None) -> str:
    return "won" if stage_id == WON else "lost" if stage_id == LOST else "open"


def _card(v: Item) -> dict:
    """Owner, the two moments and the deletion flag every card has."""
    return {
        "responsible_user_id": v.get("responsible_user_id", integer),
        "created_at": v.get("created_at", unix_moment),
        "updated_at": v.get("updated_at", unix_moment),
        "is_deleted": flag(v.raw.get("is_deleted")),
    }


def _page(v: Item, table: str, *records: dict) -> Page:
    return Page(rows={table: list(records)}, problems=v.problems)


# -- parsers ---------------------------------------------------------------------------------


def user_row(item: dict, ctx: Ctx) -> Page:
    v = Item(item)
    rights = v.get("rights", lambda x: x if isinstance(x, dict) else None) or {}
    return _page(
        v,
        "users",
        {
            "id": v.need("id", identifier),
            "name": v.get("name"),
            "email": v.get("email"),
            "is_active": flag(rights.get("is_active", True)),
            "raw": item,
        },
    )


def pipeline_rows(item: dict, ctx: Ctx) -> Page:
    """A pipeline and its stages; 142 / 143 are won / lost in every pipeline."""
    v = Item(item)
    pid = v.need("id", integer)
    stages = []
    for s in v.need("_embedded.statuses", objects):
        st = Item(s)
        sid = st.need("id", integer)
        stages.append(
            {
                "pipeline_id": st.get("pipeline_id", integer) or pid,
                "id": sid,
                "entity": "deal",
                "name": st.get("name"),
                "sort": st.get("sort", integer),
                "semantics": _status(sid),
                "raw": s,
            }
        )
        v.problems += st.problems
    pipeline = {
        "id": pid,
        "entity": "deal",
        "name": v.get("name"),
        "sort": v.get("sort", integer),
        "is_default": flag(item.get("is_main")),
        "raw": item,
    }
    return _page(v, "pipelines", pipeline).merge(rows("stages", *stages))


def deal_rows(item: dict, ctx: Ctx) -> Page:
    """A lead and its contact links (`with=contacts`); the main contact is `is_main`. A lead
    without its id, pipeline or stage is skipped and reported; a deleted one that comes with
    only its id (the trash) only marks the deal deleted."""
    v = Item(item)
    did = v.need("id", identifier)
    if flag(item.get("is_deleted")) and item.get("status_id") is None:
        return Page(deleted={"deals": [did]})
    stage = v.need("status_id", integer)
    contacts = _links(v, "contacts")
    main = next((c for c in contacts if c.get("is_main")), contacts[0] if contacts else None)
    deal = {
        "id": did,
        "name": v.get("name"),
        "pipeline_id": v.need("pipeline_id", integer),
        "stage_id": stage,
        "status": _status(stage),
        "amount": v.get("price", amount),
        "currency": ctx.currency,
        "contact_id": integer(main["id"]) if main else None,
        "company_id": _first_id(v, "companies"),
        **_card(v),
        "closed_at": v.get("closed_at", unix_moment),
        "channel": deal_channel(v),
        "raw": item,
    }
    links, seen = [], set()
    for c in contacts:
        cid = integer(c["id"])
        if cid not in seen:
            seen.add(cid)
            links.append({"deal_id": did, "contact_id": cid, "is_main": flag(c is main)})
    # Links always present, even empty: the store replaces a deal's links with the page's.
    return _page(v, "deals", deal).merge(rows("deal_contacts", *links))


def deal_channel(v: Item) -> str | None:
    """The UTM source (tracking-data field UTM_SOURCE) when present, else the source's name."""
    fields = v.get("custom_fields_values", objects) or []
    utm = next(
        (
            x.get("value")
            for f in fields
            if str(f.get("field_code") or "").upper() == UTM_SOURCE
            for x in f.get("values") or ()
            if isinstance(x, dict)
        ),
        None,
    )
    emb = v.raw.get("_embedded")
    has_source = isinstance(emb, dict) and emb.get("source") is not None  # null: no source
    return channel(utm, v.get("_embedded.source.name") if has_source else None)


def contact_row(item: dict, ctx: Ctx) -> Page:
    v = Item(item)
    return _page(
        v,
        "contacts",
        {
            "id": v.need("id", identifier),
            "name": v.get("name"),
            "company_id": _first_id(v, "companies"),
            **_card(v),
            "raw": item,
        },
    )


def company_row(item: dict, ctx: Ctx) -> Page:
    v = Item(item)
    return _page(
        v, "companies", {"id": v.need("id", identifier), "name": v.get("name"), **_card(v), "raw": item}
    )


def task_row(item: dict, ctx: Ctx) -> Page:
    """A listed task: alive (`is_deleted` 0: the list never serves the trash, so this clears a
    deletion the task was restored from). No completed_at key: it comes from events, and an
    upsert leaves absent columns alone."""
    v = Item(item)
    card = _card(v)
    return _page(
        v,
        "tasks",
        {
            "id": v.need("id", identifier),
            "text": v.get("text"),
            "entity_type": ENTITY.get(v.get("entity_type") or ""),
            "entity_id": v.get("entity_id", integer),
            "is_completed": flag(item.get("is_completed")),
            "due_at": v.get("complete_till", unix_moment),
            **card,
            "raw": item,
        },
    )


def call_status(params: dict, direction: str) -> str:
    """The mirror status of a call note; without `call_status`, a call with talk time connected."""
    status = to_int(params.get("call_status"))
    if status is None:
        return call_status_of(direction, (to_int(params.get("duration")) or 0) > 0)
    return call_status_of(direction, status == CALL_TALKED)


def _params(x):
    """A note's `params` object; `[]` is PHP's empty object."""
    if isinstance(x, dict):
        return x
    if x == []:
        return None
    raise BadValue(f"a {type(x).__name__}, not an object")


def note_rows(item: dict, ctx: Ctx, entity: str) -> Page:
    """A call or SMS note: its `activities` row, and for a call its `calls` row; `entity`
    follows from the notes path."""
    kind = NOTE_KINDS.get(item.get("note_type") or "") if isinstance(item, dict) else None
    if kind is None:
        return Page()
    v = Item(item)
    entity, entity_id = note_owner(v, ctx, entity)
    page = _page(
        v,
        "activities",
        {
            "id": f"note:{v.need('id', identifier)}",
            "channel": kind[0],
            "direction": kind[1],
            "at": v.get("created_at", unix_moment),
            "responsible_user_id": v.get("responsible_user_id", integer) or v.get("created_by", integer),
            "entity_type": entity,
            "entity_id": entity_id,
            "is_deleted": 0,
            "raw": item,
        },
    )
    if kind[0] != "call":
        return page
    page.problems = []  # the call row reads the same fields and reports them once
    return call_row(item, ctx, entity, entity_id).merge(page)


def note_owner(v: Item, ctx: Ctx, entity: str) -> tuple[str, int | None]:
    """(entity_type, entity_id) a note is filed under: its path's entity, except that a
    customer's note goes to the customer's main contact, else its company (the reader looked
    them up: `ctx.side[("customer", id)]`); a customer with neither stays a customer."""
    entity_id = v.get("entity_id", integer)
    if entity == "customer":
        return ctx.side.get(("customer", entity_id)) or (entity, entity_id)
    return entity, entity_id


def customer_owner(item: dict) -> tuple[str, int] | None:
    """The card a customer's calls belong to: its main contact (`with=contacts`, `is_main`;
    else its first), else its company (`with=companies`); None when it has neither."""
    emb = item.get("_embedded") if isinstance(item, dict) else None
    emb = emb if isinstance(emb, dict) else {}
    contacts = [c for c in emb.get("contacts") or () if isinstance(c, dict) and to_int(c.get("id"))]
    main = next((c for c in contacts if c.get("is_main") is True), contacts[0] if contacts else None)
    if main is not None:
        return "contact", to_int(main["id"])
    companies = [c for c in emb.get("companies") or () if isinstance(c, dict) and to_int(c.get("id"))]
    return ("company", to_int(companies[0]["id"])) if companies else None


def call_row(item: dict, ctx: Ctx, entity: str, entity_id: int | None = None) -> Page:
    """A `call_in` / `call_out` note's `calls` row; `entity` follows from the notes path (or
    `note_owner`, which gives `entity_id` too)."""
    v = Item(item)
    if entity_id is None:
        entity, entity_id = note_owner(v, ctx, entity)
    cid = v.need("id", identifier)
    params = v.strict("params", _params, {})
    direction = "in" if item.get("note_type") == "call_in" else "out"
    return _page(
        v,
        "calls",
        {
            "id": cid,
            "direction": direction,
            "status": call_status(params, direction),
            "duration_s": v.get("params.duration", integer) if params else None,
            "started_at": v.get("created_at", unix_moment),
            "responsible_user_id": v.get("responsible_user_id", integer) or v.get("created_by", integer),
            "entity_type": entity,
            "entity_id": entity_id,
            "phone": v.get("params.phone") if params else None,
            "raw": item,
        },
    )


def _lead_status(v: Item, key: str) -> dict:
    """`value_after` / `value_before` of a stage change: [{"lead_status": {...}}]."""
    side = v.strict(key, objects, [])
    status = side[0].get("lead_status") if side else {}
    if not isinstance(status, dict):
        raise BadItem(f"{key}[0].lead_status", status, "not an object")
    return status


def event_rows(item: dict, ctx: Ctx) -> Page:
    """A stage change, a deal's creation, a task completion, or a deletion / restore / merge
    of a card."""
    v = Item(item)
    eid = v.need("id")
    kind = v.get("type") or ""
    entity_id = v.get("entity_id", integer)
    changed_at = v.get("created_at", unix_moment)
    if kind in CHAT_EVENTS:
        return chat_row(v, CHAT_EVENTS[kind])
    if kind == NPS_EVENT:
        return nps_row(v)
    if kind == "lead_added":
        # No stage in the event (value_after is a note): the store fills stage and pipeline.
        return _page(
            v,
            "stage_changes",
            {
                "id": eid,
                "entity": "deal",
                "entity_id": v.need("entity_id", integer),
                "pipeline_id": None,
                "stage_id": None,
                "previous_stage_id": None,
                "changed_at": changed_at,
                "raw": item,
            },
        )
    if kind == "entity_merged":
        return merged_row(v, entity_id, ctx)
    if kind == "lead_status_changed":
        after, before = _lead_status(v, "value_after"), _lead_status(v, "value_before")
        try:
            stage, pipe, prev = (
                integer(after.get("id")),
                integer(after.get("pipeline_id")),
                integer(before.get("id")),
            )
        except BadValue as err:
            raise BadItem("value_after", item.get("value_after"), str(err)) from None
        if stage is None:
            raise BadItem("value_after", item.get("value_after"), "no stage")
        return _page(
            v,
            "stage_changes",
            {
                "id": eid,
                "entity": "deal",
                "entity_id": v.need("entity_id", integer),
                "pipeline_id": pipe,
                "stage_id": stage,
                "previous_stage_id": prev,
                "changed_at": changed_at,
                "raw": item,
            },
        )
    if kind == "task_completed" and entity_id is not None:
        return _page(v, "tasks", {"id": entity_id, "is_completed": 1, "completed_at": changed_at})
    at = v.get("created_at", integer) or 0
    return _deleted_or_restored(kind, entity_id, at, ctx).merge(Page(problems=v.problems))


def chat_row(v: Item, direction: str) -> Page:
    """A chat message with a client (author: the manager for an outgoing one, else none)."""
    return _page(
        v,
        "activities",
        {
            "id": f"event:{v.need('id')}",
            "channel": "chat",
            "direction": direction,
            "at": v.get("created_at", unix_moment),
            "responsible_user_id": v.get("created_by", integer) or None,
            "entity_type": ENTITY.get(v.get("entity_type") or ""),
            "entity_id": v.get("entity_id", integer),
            "is_deleted": 0,
            "raw": v.raw,
        },
    )


def nps_row(v: Item) -> Page:
    """An NPS answer (0-10) from `nps_rate_added`; none (reported) when there is no score."""
    score = v.get("value_after", nps_score)
    if score is None:
        return Page(problems=v.problems)
    return _page(
        v,
        "survey_answers",
        {
            "id": f"event:{v.need('id')}",
            "kind": "nps",
            "score": score,
            "at": v.get("created_at", unix_moment),
            "entity_type": ENTITY.get(v.get("entity_type") or ""),
            "entity_id": v.get("entity_id", integer),
            "origin": "amocrm_event",
            "raw": v.raw,
        },
    )


def nps_score(side) -> float | None:
    """The score in the documented shape `[{"nps": {"rate": N}}]`, N an integer 0-10; any
    other shape, a fraction or a score off the scale is BadValue."""
    side = objects(side)
    nps = side[0].get("nps") if len(side) == 1 else None
    if not isinstance(nps, dict) or "rate" not in nps:
        raise BadValue("not [{nps: {rate: N}}]")
    rate = nps["rate"]
    if isinstance(rate, bool) or not isinstance(rate, int):
        raise BadValue("not an integer from 0 to 10")
    return score_in(rate, 0, 10)


def merged_row(v: Item, entity_id: int | None, ctx: Ctx) -> Page:
    """An `entity_merged` event. The docs do not say which card carries it, the one merged
    away or the survivor, so the reader asked for each card `merged_cards` names
    (`ctx.side[("alive", table, id)]`): only a card the account no longer serves is deleted; a
    live one is restored (an older deletion event cannot win). Unchecked: nothing is marked."""
    entity = v.get("entity_type") or ""
    table = EVENT_TABLES.get(entity)
    alive = ctx.side.get(("alive", table, entity_id))
    if table is None or entity not in RESTORE_EVENTS or alive is None:
        return Page(problems=v.problems)
    what = "restored" if alive else "deleted"
    at = v.get("created_at", integer) or 0
    return _deleted_or_restored(f"{entity}_{what}", entity_id, at, ctx).merge(Page(problems=v.problems))


def merged_cards(items: list) -> list[tuple[str, int]]:
    """(table, id) of each card an `entity_merged` event of `items` names, once each: the
    cards `merged_row` needs checked."""
    out = []
    for item in items:
        if not isinstance(item, dict) or item.get("type") != "entity_merged":
            continue
        entity, card = item.get("entity_type"), to_int(item.get("entity_id"))
        key = (EVENT_TABLES.get(entity) if entity in RESTORE_EVENTS else None, card)
        if key[0] and card is not None and key not in out:
            out.append(key)
    return out


def _deleted_or_restored(kind: str, entity_id: int | None, at: int, ctx: Ctx) -> Page:
    """The newest deletion / restore of a card wins, whatever page it is on (`ctx.memo`). A
    deletion whose restore has no event (a task) is dated: a later listing outranks it."""
    entity, _, what = kind.rpartition("_")
    table = EVENT_TABLES.get(entity)
    if not table or what not in ("deleted", "restored") or entity_id is None:
        return Page()
    latest = ctx.memo.setdefault("latest_event", {})
    if latest.get((table, entity_id), -1) > at:
        return Page()  # a newer event, on an earlier page, already decided this id
    latest[(table, entity_id)] = at
    if what == "restored":
        return Page(restored={table: [entity_id]})
    if entity in RESTORE_EVENTS:
        return Page(deleted={table: [entity_id]})
    return Page(deleted_at={table: {entity_id: from_unix(at)}})
