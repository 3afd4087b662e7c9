"""Bitrix24 parsers: one API item -> its mirror records, `parse(item, ctx) -> Page`.

Old `crm.*.list` methods send numbers as strings, "0" for "no reference" and datetimes with
the portal's offset; every parser coerces through `adapters.values` and `adapters.times`
(ISO UTC, `2026-11-23T10:00:00Z`). `raw` keeps the item exactly as received. What a parser
needs beyond its item comes in `ctx`: `ctx.side[item id]` for the per-page lookups (a deal's
contact ids, a call's activity, a pipeline's stages), `ctx.memo` for the stage each deal or
lead was in before (stage history, read in ID order).
"""

from __future__ import annotations

from adapters.base import Page
from adapters.calls import call_status
from adapters.streams import Ctx, rows
from adapters.times import from_offset
from adapters.values import flag, ref_id, to_float, to_int

LEAD_PIPELINE = -1  # Bitrix24 lead statuses live under a pseudo-pipeline (see MIRROR.md)
# The pseudo-pipeline as an item of its own (crm.category.list has none for leads).
LEAD_CATEGORY = {"id": LEAD_PIPELINE, "entityTypeId": 1, "name": "Leads", "sort": 0,
                 "isDefault": "N", "note": "pseudo-pipeline for lead statuses"}

DEAL_STATUS = {"P": "open", "S": "won", "F": "lost"}
LEAD_STATUS = {"P": "open", "S": "converted", "F": "junk"}
SEMANTICS = {None: "open", "": "open", "S": "won", "F": "lost"}
PIPELINE_ENTITY = {1: "lead", 2: "deal"}  # entityTypeId
TASK_ENTITY = {"D": "deal", "C": "contact", "CO": "company", "L": "lead"}
CALL_OWNER = {1: "lead", 2: "deal", 3: "contact", 4: "company"}  # activity OWNER_TYPE_ID
# voximplant.statistic.get: CALL_TYPE 2 incoming, 3 incoming with redirection; 1 outgoing,
# 4 callback and 5 informational are ours. CALL_FAILED_CODE 200 = connected; any other code
# (304 no answer, 486 busy, 603 declined, ...) is missed when incoming, failed when outgoing.
CALL_INCOMING = (2, 3)
CALL_CONNECTED = "200"


def user(r: dict, ctx: Ctx) -> Page:
    """A `user.get` item."""
    name = " ".join(p for p in (r.get("NAME"), r.get("LAST_NAME")) if p) or None
    return rows("users", {"id": to_int(r.get("ID")), "name": name, "email": r.get("EMAIL") or None,
                          "is_active": flag(r.get("ACTIVE", True)), "raw": r})


def pipeline(c: dict, ctx: Ctx) -> Page:
    """A `crm.category.list` item (or LEAD_CATEGORY) with its `crm.status.list` rows from ctx.side."""
    pid = to_int(c.get("id")) or 0
    entity = PIPELINE_ENTITY.get(to_int(c.get("entityTypeId")), "deal")
    row = {"id": pid, "entity": entity, "name": c.get("name"), "sort": to_int(c.get("sort")),
           "is_default": flag(c.get("isDefault")), "raw": c}
    return Page(rows={"pipelines": [row],
                      "stages": [stage(s, pid, entity) for s in ctx.side.get(pid) or []]})


def stage(s: dict, pipeline_id: int, entity: str) -> dict:
    """One `crm.status.list` row of a pipeline."""
    return {"pipeline_id": pipeline_id, "id": s.get("STATUS_ID"), "entity": entity,
            "name": s.get("NAME"), "sort": to_int(s.get("SORT")),
            "semantics": SEMANTICS.get(s.get("SEMANTICS"), "open"), "raw": s}


def deal(r: dict, ctx: Ctx) -> Page:
    """A `crm.deal.list` item, and its contact links from ctx.side (crm.item.list `contactIds`).

    The page always carries `deal_contacts`, so the store replaces the deal's links whole.
    """
    d = {"id": to_int(r["ID"]), "name": r.get("TITLE"), "pipeline_id": to_int(r.get("CATEGORY_ID")) or 0,
         "stage_id": r.get("STAGE_ID"), "status": DEAL_STATUS.get(r.get("STAGE_SEMANTIC_ID"), "open"),
         "amount": to_float(r.get("OPPORTUNITY")), "currency": r.get("CURRENCY_ID"),
         "responsible_user_id": ref_id(r.get("ASSIGNED_BY_ID")),
         "contact_id": ref_id(r.get("CONTACT_ID")), "company_id": ref_id(r.get("COMPANY_ID")),
         "created_at": from_offset(r.get("DATE_CREATE")), "updated_at": from_offset(r.get("DATE_MODIFY")),
         "closed_at": closing_moment(r, "CLOSEDATE") if flag(r.get("CLOSED")) else None,
         "is_deleted": 0, "raw": r}
    return Page(rows={"deals": [d], "deal_contacts": deal_links(d, ctx.side.get(d["id"]))})


def closing_moment(r: dict, close_date: str) -> str | None:
    """When a closed deal or lead entered its final stage, as far as the item itself tells.

    The rule (MIRROR.md `closed_at`): the stage history's move into the final stage; else
    `MOVED_TIME` (read-only: the last stage move, for a closed item the move into the final
    stage); the editable close date (`CLOSEDATE` is a date, midnight in the portal's zone)
    only when neither exists. The item gives the last two; the history is a stream of its
    own, read after deals and leads, so the store refines `closed_at` from `stage_changes`
    once both are saved (`connector.store.Mirror._closing_moments`).
    """
    return from_offset(r.get("MOVED_TIME")) or from_offset(r.get(close_date))


def deal_links(d: dict, contact_ids) -> list[dict]:
    """Links of one deal from crm.item.list `contactIds` (main contact first)."""
    ids = [i for i in (to_int(c) for c in contact_ids or []) if i]
    main = d.get("contact_id") or (ids[0] if ids else None)
    return [{"deal_id": d["id"], "contact_id": c, "is_main": int(c == main)}
            for c in dict.fromkeys(ids)]


def lead(r: dict, ctx: Ctx) -> Page:
    """A `crm.lead.list` item."""
    return rows("leads", {
        "id": to_int(r["ID"]), "title": r.get("TITLE"), "status_id": r.get("STATUS_ID"),
        "status": LEAD_STATUS.get(r.get("STATUS_SEMANTIC_ID"), "open"),
        "amount": to_float(r.get("OPPORTUNITY")), "currency": r.get("CURRENCY_ID"),
        "responsible_user_id": ref_id(r.get("ASSIGNED_BY_ID")),
        "contact_id": ref_id(r.get("CONTACT_ID")), "company_id": ref_id(r.get("COMPANY_ID")),
        "created_at": from_offset(r.get("DATE_CREATE")), "updated_at": from_offset(r.get("DATE_MODIFY")),
        "closed_at": closing_moment(r, "DATE_CLOSED") if r.get("STATUS_SEMANTIC_ID") in ("S", "F") else None,
        "is_deleted": 0, "raw": r})


def contact(r: dict, ctx: Ctx) -> Page:
    """A `crm.contact.list` item."""
    name = " ".join(p for p in (r.get("NAME"), r.get("SECOND_NAME"), r.get("LAST_NAME")) if p)
    return rows("contacts", {
        "id": to_int(r["ID"]), "name": name or None, "company_id": ref_id(r.get("COMPANY_ID")),
        "responsible_user_id": ref_id(r.get("ASSIGNED_BY_ID")),
        "created_at": from_offset(r.get("DATE_CREATE")), "updated_at": from_offset(r.get("DATE_MODIFY")),
        "is_deleted": 0, "raw": r})


def company(r: dict, ctx: Ctx) -> Page:
    """A `crm.company.list` item."""
    return rows("companies", {
        "id": to_int(r["ID"]), "name": r.get("TITLE"), "responsible_user_id": ref_id(r.get("ASSIGNED_BY_ID")),
        "created_at": from_offset(r.get("DATE_CREATE")), "updated_at": from_offset(r.get("DATE_MODIFY")),
        "is_deleted": 0, "raw": r})


def task_binding(uf) -> tuple[str | None, int | None]:
    """ufCrmTask ["D_12"] -> ("deal", 12); the first CRM binding wins."""
    for b in uf if isinstance(uf, list) else ([uf] if uf else []):
        prefix, _, num = str(b).rpartition("_")
        if prefix in TASK_ENTITY and to_int(num):
            return TASK_ENTITY[prefix], to_int(num)
    return None, None


def task(r: dict, ctx: Ctx) -> Page:
    """A `tasks.task.list` item (camelCase keys; 5 = completed)."""
    etype, eid = task_binding(r.get("ufCrmTask"))
    status = to_int(r.get("status")) or to_int(r.get("realStatus"))
    return rows("tasks", {
        "id": to_int(r["id"]), "text": r.get("title"),
        "responsible_user_id": ref_id(r.get("responsibleId")), "entity_type": etype,
        "entity_id": eid, "is_completed": int(status == 5),
        "due_at": from_offset(r.get("deadline")), "completed_at": from_offset(r.get("closedDate")),
        "created_at": from_offset(r.get("createdDate")), "updated_at": from_offset(r.get("changedDate")),
        "is_deleted": 0, "raw": r})


def call(r: dict, ctx: Ctx) -> Page:
    """A `voximplant.statistic.get` item; its activity in ctx.side (crm.activity.list) names the
    deal it belongs to, else the call's own CRM_ENTITY binding (contact, company or lead) stays."""
    kind = to_int(r.get("CALL_TYPE"))
    code = str(r.get("CALL_FAILED_CODE") or "")
    etype = (r.get("CRM_ENTITY_TYPE") or "").lower() or None
    eid = ref_id(r.get("CRM_ENTITY_ID"))
    activity = ctx.side.get(to_int(r.get("ID"))) or {}
    owner = CALL_OWNER.get(to_int(activity.get("OWNER_TYPE_ID")))
    if owner and ref_id(activity.get("OWNER_ID")):
        etype, eid = owner, ref_id(activity["OWNER_ID"])
    direction = "in" if kind in CALL_INCOMING else "out"
    return rows("calls", {
        "id": to_int(r["ID"]), "direction": direction,
        "status": call_status(direction, code == CALL_CONNECTED),
        "duration_s": to_int(r.get("CALL_DURATION")) or 0,
        "started_at": from_offset(r.get("CALL_START_DATE")),
        "responsible_user_id": ref_id(r.get("PORTAL_USER_ID")),
        "entity_type": etype if eid else None, "entity_id": eid,
        "phone": r.get("PHONE_NUMBER") or None, "is_deleted": 0, "raw": r})


def stage_change(r: dict, ctx: Ctx) -> Page:
    """A `crm.stagehistory.list` item; items come in ID order, so the stage a deal or lead was
    in before is the last one ctx.memo saw for it (None for the first this fetch: the store
    fills it from the mirror). Lead items carry STATUS_ID where deal items carry STAGE_ID."""
    entity = "lead" if "STATUS_ID" in r else "deal"
    owner = to_int(r.get("OWNER_ID"))
    stage_id = r.get("STATUS_ID") if entity == "lead" else r.get("STAGE_ID")
    previous = ctx.memo.get((entity, owner))
    ctx.memo[(entity, owner)] = stage_id
    return rows("stage_changes", {
        "id": f"{entity}:{to_int(r['ID'])}", "entity": entity, "entity_id": owner,
        "pipeline_id": (to_int(r.get("CATEGORY_ID")) or 0) if entity == "deal" else LEAD_PIPELINE,
        "stage_id": stage_id, "previous_stage_id": previous,
        "changed_at": from_offset(r.get("CREATED_TIME")), "raw": r})
