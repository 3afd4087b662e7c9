"""Bitrix24 parsers: one API item -> its mirror records, `parse(item, ctx) -> Page`.

Old `crm.*.list` methods send numbers as strings, "0" for "no reference" and datetimes with
the portal's offset; every parser coerces through `adapters.values` and `adapters.times`
(ISO UTC, `2026-11-23T10:00:00Z`); a value that does not parse is NULL and reported, an
item missing what its row needs is skipped and reported (`adapters.values.Item`). `raw`
keeps the item exactly as received. What a parser needs beyond its item comes in `ctx`:
`ctx.side[item id]` for the per-page lookups (a deal's contact ids, a call's activity, a
pipeline's stages), `ctx.memo` for the stage each deal or lead was in before (stage history,
read in ID order).
"""

from __future__ import annotations

from adapters.base import Page
from adapters.calls import call_status
from adapters.streams import Ctx
from adapters.values import (
    BadItem,
    BadValue,
    Item,
    amount,
    channel,
    flag,
    identifier,
    integer,
    offset_moment,
    ref_id,
    reference,
    score_in,
    to_int,
)

LEAD_PIPELINE = -1  # Bitrix24 lead statuses live under a pseudo-pipeline (docs/mirror.md)
# The pseudo-pipeline as an item of its own (crm.category.list has none for leads).
LEAD_CATEGORY = {
    "id": LEAD_PIPELINE,
    "entityTypeId": 1,
    "name": "Leads",
    "sort": 0,
    "isDefault": "N",
    "note": "pseudo-pipeline for lead statuses",
}

DEAL_STATUS = {"P": "open", "S": "won", "F": "lost"}
LEAD_STATUS = {"P": "open", "S": "converted", "F": "junk"}
SEMANTICS = {None: "open", "": "open", "S": "won", "F": "lost"}
PIPELINE_ENTITY = {1: "lead", 2: "deal"}  # entityTypeId
TASK_ENTITY = {"D": "deal", "C": "contact", "CO": "company", "L": "lead"}
CALL_OWNER = {1: "lead", 2: "deal", 3: "contact", 4: "company"}  # activity OWNER_TYPE_ID
# voximplant.statistic.get: CALL_TYPE 2 incoming, 3 incoming with redirection; 1 outgoing,
# 4 callback and 5 informational are ours. CALL_FAILED_CODE 200 = connected; any other code
# (304 no answer, 486 busy, 603 declined, ...) is missed when incoming, failed when outgoing.
# An informational call (5) is a robot reading a message to a number: no manager takes part,
# so it is kept flagged (`is_automated`) and left out of the call and interaction KPIs.
CALL_INCOMING = (2, 3)
CALL_INFORMATIONAL = 5
CALL_CONNECTED = "200"
# crm.activity.list (docs/api-notes.md): TYPE_ID 1 meeting, 2 call, 4 e-mail; 6 is a provider's
# activity, told apart by PROVIDER_ID (open-lines chats, SMS). Tasks (3) live in `tasks`;
# calendar imports (5) and unknown providers are not client interactions we can name.
ACTIVITY_TYPES = {1: "meeting", 2: "call", 4: "email"}
ACTIVITY_PROVIDERS = {
    "IMOPENLINES_SESSION": "chat",
    "CRM_SMS": "sms",
    "SMS": "sms",
    "CRM_EMAIL": "email",
    "VOXIMPLANT_CALL": "call",
    "CRM_MEETING": "meeting",
}
DIRECTIONS = {1: "in", 2: "out"}  # 0: none (meetings)


def one_of(table: dict):
    """A reader for a code that must be one of `table`'s keys; gives its meaning."""

    def read(v):
        if v is None or v == "":
            return None
        if not isinstance(v, str) or v not in table:
            raise BadValue(f"not one of {', '.join(k for k in table if k)}")
        return table[v]

    return read


def user(r: dict, ctx: Ctx) -> Page:
    """A `user.get` item."""
    v = Item(r)
    name = " ".join(p for p in (v.get("NAME"), v.get("LAST_NAME")) if p) or None
    return Page(
        rows={
            "users": [
                {
                    "id": v.need("ID", identifier),
                    "name": name,
                    "email": v.get("EMAIL") or None,
                    "is_active": flag(r.get("ACTIVE", True)),
                    "raw": r,
                }
            ]
        },
        problems=v.problems,
    )


def pipeline(c: dict, ctx: Ctx) -> Page:
    """A `crm.category.list` item (or LEAD_CATEGORY) with its `crm.status.list` rows from ctx.side."""
    v = Item(c)
    pid = v.need("id", integer)
    entity = PIPELINE_ENTITY.get(v.get("entityTypeId", integer), "deal")
    row = {
        "id": pid,
        "entity": entity,
        "name": v.get("name"),
        "sort": v.get("sort", integer),
        "is_default": flag(c.get("isDefault")),
        "raw": c,
    }
    stages = [stage(s, pid, entity, v) for s in ctx.side.get(pid) or []]
    return Page(rows={"pipelines": [row], "stages": stages}, problems=v.problems)


def stage(s: dict, pipeline_id: int, entity: str, owner: Item | None = None) -> dict:
    """One `crm.status.list` row of a pipeline; its problems go to the pipeline's `owner`."""
    st = Item(s)
    row = {
        "pipeline_id": pipeline_id,
        "id": st.need("STATUS_ID"),
        "entity": entity,
        "name": st.get("NAME"),
        "sort": st.get("SORT", integer),
        "semantics": st.get("SEMANTICS", one_of(SEMANTICS), default="open"),
        "raw": s,
    }
    if owner is not None:
        owner.problems += st.problems
    return row


def _common(v: Item) -> dict:
    """Fields every CRM entity has: owner and the two moments."""
    return {
        "responsible_user_id": v.get("ASSIGNED_BY_ID", reference),
        "created_at": v.get("DATE_CREATE", offset_moment),
        "updated_at": v.get("DATE_MODIFY", offset_moment),
        "is_deleted": 0,
    }


def deal(r: dict, ctx: Ctx) -> Page:
    """A `crm.deal.list` item, and its contact links from ctx.side (crm.item.list `contactIds`).

    The page always carries `deal_contacts`, so the store replaces the deal's links whole. A
    deal without its id, pipeline, stage or stage semantics is skipped and reported.
    """
    v = Item(r)
    d = {
        "id": v.need("ID", identifier),
        "name": v.get("TITLE"),
        "pipeline_id": v.need("CATEGORY_ID", integer),
        "stage_id": v.need("STAGE_ID"),
        "status": v.need("STAGE_SEMANTIC_ID", one_of(DEAL_STATUS)),
        "amount": v.get("OPPORTUNITY", amount),
        "currency": v.get("CURRENCY_ID"),
        "contact_id": v.get("CONTACT_ID", reference),
        "company_id": v.get("COMPANY_ID", reference),
        "lead_id": v.get("LEAD_ID", reference),  # the lead the deal was converted from
        **_common(v),
        "closed_at": closing_moment(v, "CLOSEDATE") if flag(r.get("CLOSED")) else None,
        "channel": acquisition(v),
        "raw": r,
    }
    links = deal_links(d, contact_ids(d["id"], ctx.side.get(d["id"])))
    return Page(rows={"deals": [d], "deal_contacts": links}, problems=v.problems)


def contact_ids(deal_id: int, ids) -> list[int]:
    """crm.item.list `contactIds` of one deal; anything but a list of ids skips the deal."""
    if ids is None:
        return []
    try:
        if not isinstance(ids, list):
            raise BadValue(f"a {type(ids).__name__}, not a list of ids")
        return [i for i in (reference(c) for c in ids) if i]
    except BadValue as err:
        raise BadItem("contactIds", ids, str(err)) from None


def closing_moment(v: Item, close_date: str) -> str | None:
    """When a closed deal or lead entered its final stage, as far as the item itself tells.

    The rule (docs/mirror.md, `deals.closed_at`): the stage history's move into the final
    stage; else `MOVED_TIME` (read-only: the last stage move, for a closed item the move into
    the final stage); the editable close date (`CLOSEDATE` is a date, midnight in the portal's
    zone) only when neither exists. The item gives the last two; the history is a stream of its
    own, read after deals and leads, so the store refines `closed_at` from `stage_changes`
    once both are saved (`connector.mirror.store.Mirror._closing_moments`).
    """
    return v.get("MOVED_TIME", offset_moment) or v.get(close_date, offset_moment)


def acquisition(v: Item) -> str | None:
    """The acquisition channel of a deal or lead: UTM_SOURCE, else SOURCE_ID (docs/mirror.md)."""
    return channel(v.get("UTM_SOURCE"), v.get("SOURCE_ID"))


def deal_links(d: dict, ids: list[int]) -> list[dict]:
    """Links of one deal from its contact ids (main contact first)."""
    main = d.get("contact_id") or (ids[0] if ids else None)
    return [{"deal_id": d["id"], "contact_id": c, "is_main": int(c == main)} for c in dict.fromkeys(ids)]


def lead(r: dict, ctx: Ctx) -> Page:
    """A `crm.lead.list` item; one without its id, status or status semantics is skipped."""
    v = Item(r)
    status = v.need("STATUS_SEMANTIC_ID", one_of(LEAD_STATUS))
    return Page(
        rows={
            "leads": [
                {
                    "id": v.need("ID", identifier),
                    "title": v.get("TITLE"),
                    "status_id": v.need("STATUS_ID"),
                    "status": status,
                    "amount": v.get("OPPORTUNITY", amount),
                    "currency": v.get("CURRENCY_ID"),
                    "contact_id": v.get("CONTACT_ID", reference),
                    "company_id": v.get("COMPANY_ID", reference),
                    **_common(v),
                    "closed_at": closing_moment(v, "DATE_CLOSED") if status != "open" else None,
                    "channel": acquisition(v),
                    "raw": r,
                }
            ]
        },
        problems=v.problems,
    )


def contact(r: dict, ctx: Ctx) -> Page:
    """A `crm.contact.list` item."""
    v = Item(r)
    name = " ".join(p for p in (v.get("NAME"), v.get("SECOND_NAME"), v.get("LAST_NAME")) if p)
    return Page(
        rows={
            "contacts": [
                {
                    "id": v.need("ID", identifier),
                    "name": name or None,
                    "company_id": v.get("COMPANY_ID", reference),
                    **_common(v),
                    "raw": r,
                }
            ]
        },
        problems=v.problems,
    )


def company(r: dict, ctx: Ctx) -> Page:
    """A `crm.company.list` item."""
    v = Item(r)
    return Page(
        rows={
            "companies": [{"id": v.need("ID", identifier), "name": v.get("TITLE"), **_common(v), "raw": r}]
        },
        problems=v.problems,
    )


def task_binding(uf) -> tuple[str | None, int | None]:
    """ufCrmTask ["D_12"] -> ("deal", 12); the first CRM binding wins."""
    for b in uf if isinstance(uf, list) else ([uf] if uf else []):
        prefix, _, num = str(b).rpartition("_")
        if prefix in TASK_ENTITY and to_int(num):
            return TASK_ENTITY[prefix], to_int(num)
    return None, None


def task(r: dict, ctx: Ctx) -> Page:
    """A `tasks.task.list` item (camelCase keys; 5 = completed)."""
    v = Item(r)
    etype, eid = task_binding(r.get("ufCrmTask"))
    status = v.get("status", integer) or v.get("realStatus", integer)
    return Page(
        rows={
            "tasks": [
                {
                    "id": v.need("id", identifier),
                    "text": v.get("title"),
                    "responsible_user_id": v.get("responsibleId", reference),
                    "entity_type": etype,
                    "entity_id": eid,
                    "is_completed": int(status == 5),
                    "due_at": v.get("deadline", offset_moment),
                    "completed_at": v.get("closedDate", offset_moment),
                    "created_at": v.get("createdDate", offset_moment),
                    "updated_at": v.get("changedDate", offset_moment),
                    "is_deleted": 0,
                    "raw": r,
                }
            ]
        },
        problems=v.problems,
    )


def call(r: dict, ctx: Ctx) -> Page:
    """A `voximplant.statistic.get` item; its activity in ctx.side (crm.activity.list) names the
    deal it belongs to, else the call's own CRM_ENTITY binding (contact, company or lead) stays."""
    v = Item(r)
    cid = v.need("ID", identifier)
    kind = v.get("CALL_TYPE", integer)
    code = str(v.get("CALL_FAILED_CODE") or "")
    etype = (v.get("CRM_ENTITY_TYPE") or "").lower() or None
    eid = v.get("CRM_ENTITY_ID", reference)
    activity = ctx.side.get(cid) or {}
    owner = CALL_OWNER.get(to_int(activity.get("OWNER_TYPE_ID")))
    if owner and ref_id(activity.get("OWNER_ID")):
        etype, eid = owner, ref_id(activity["OWNER_ID"])
    direction = "in" if kind in CALL_INCOMING else "out"
    started = v.get("CALL_START_DATE", offset_moment)
    page = Page(
        rows={
            "calls": [
                {
                    "id": cid,
                    "direction": direction,
                    "status": call_status(direction, code == CALL_CONNECTED),
                    "duration_s": v.get("CALL_DURATION", integer, default=0),
                    "started_at": started,
                    "responsible_user_id": v.get("PORTAL_USER_ID", reference),
                    "entity_type": etype if eid else None,
                    "entity_id": eid,
                    "phone": v.get("PHONE_NUMBER") or None,
                    "activity_id": str(act) if (act := v.get("CRM_ACTIVITY_ID", reference)) else None,
                    "is_automated": int(kind == CALL_INFORMATIONAL),
                    "is_deleted": 0,
                    "raw": r,
                }
            ]
        },
        problems=v.problems,
    )
    vote = v.get("CALL_VOTE", call_vote)
    if vote is not None:
        page.rows["survey_answers"] = [
            {
                "id": f"call_vote:{cid}",
                "kind": "csat",
                "score": vote,
                "at": started,
                "entity_type": etype if eid else None,
                "entity_id": eid,
                "origin": "call_vote",
                "raw": {"ID": r.get("ID"), "CALL_VOTE": r.get("CALL_VOTE")},
            }
        ]
    return page


def call_vote(x) -> float | None:
    """The client's rating of a call, 1-5 (CSAT); "0" means none was given."""
    return None if integer(x) == 0 else score_in(x, 1, 5)


def activity(r: dict, ctx: Ctx) -> Page:
    """A `crm.activity.list` item: a call, meeting, e-mail, chat or SMS with a client. Other
    kinds (tasks, calendar imports, unknown providers) give no row.

    `COMPLETED` N is a planned activity (a meeting next week): stored with `is_completed` 0,
    not an interaction until done. Its bindings (`crm.activity.binding.list`, in ctx.side) go
    to `activity_bindings`, its owner always among them; bindings to other kinds of record
    (smart processes) are left out.
    """
    v = Item(r)
    aid = v.need("ID", identifier)
    kind = ACTIVITY_TYPES.get(v.get("TYPE_ID", integer)) or ACTIVITY_PROVIDERS.get(
        (v.get("PROVIDER_ID") or "").upper()
    )
    if kind is None:
        return Page(problems=v.problems)
    owner = CALL_OWNER.get(v.get("OWNER_TYPE_ID", integer))
    eid = v.get("OWNER_ID", reference) if owner else None
    bindings = [(owner, eid)] if eid else []
    for b in ctx.side.get(aid) or []:
        etype = CALL_OWNER.get(to_int(b.get("entityTypeId"))) if isinstance(b, dict) else None
        if etype and ref_id(b.get("entityId")):
            bindings.append((etype, ref_id(b["entityId"])))
    return Page(
        rows={
            "activities": [
                {
                    "id": str(aid),
                    "channel": kind,
                    "direction": DIRECTIONS.get(v.get("DIRECTION", integer)),
                    "at": v.get("START_TIME", offset_moment) or v.get("CREATED", offset_moment),
                    "responsible_user_id": v.get("RESPONSIBLE_ID", reference),
                    "entity_type": owner if eid else None,
                    "entity_id": eid,
                    "is_completed": int(flag(r.get("COMPLETED", "Y"))),
                    "is_deleted": 0,
                    "raw": r,
                }
            ],
            "activity_bindings": [
                {"activity_id": str(aid), "entity_type": t, "entity_id": i}
                for t, i in dict.fromkeys(bindings)
            ],
        },
        problems=v.problems,
    )


def wanted_activity(r) -> bool:
    """Whether a `crm.activity.list` item gives a row (so its bindings are worth reading)."""
    return isinstance(r, dict) and bool(
        ACTIVITY_TYPES.get(to_int(r.get("TYPE_ID")))
        or ACTIVITY_PROVIDERS.get(str(r.get("PROVIDER_ID") or "").upper())
    )


def stage_change(r: dict, ctx: Ctx) -> Page:
    """A `crm.stagehistory.list` item; items come in ID order, so the stage a deal or lead was
    in before is the last one ctx.memo saw for it (None for the first this fetch: the store
    fills it from the mirror). Lead items carry STATUS_ID where deal items carry STAGE_ID."""
    v = Item(r)
    entity = "lead" if "STATUS_ID" in r else "deal"
    hid, owner = v.need("ID", identifier), v.need("OWNER_ID", integer)
    stage_id = v.need("STATUS_ID" if entity == "lead" else "STAGE_ID")
    pipeline_id = v.need("CATEGORY_ID", integer) if entity == "deal" else LEAD_PIPELINE
    previous = ctx.memo.get((entity, owner))
    ctx.memo[(entity, owner)] = stage_id
    return Page(
        rows={
            "stage_changes": [
                {
                    "id": f"{entity}:{hid}",
                    "entity": entity,
                    "entity_id": owner,
                    "pipeline_id": pipeline_id,
                    "stage_id": stage_id,
                    "previous_stage_id": previous,
                    "changed_at": v.get("CREATED_TIME", offset_moment),
                    "raw": r,
                }
            ]
        },
        problems=v.problems,
    )
