"""Bitrix24 streams: one declaration each, and the parsers from CRM items to mirror records.

Old `crm.*.list` methods send numbers as strings and datetimes with the portal's offset;
every parser coerces to ints/floats and ISO UTC (`2026-11-23T10:00:00Z`). `raw` keeps the
item exactly as received.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable

from adapters.bitrix24.paging import ListSpec

LEAD_PIPELINE = -1  # Bitrix24 lead statuses live under a pseudo-pipeline (see schema.py)


# ---- coercion --------------------------------------------------------------------------

def to_int(v) -> int | None:
    if v is None or v is False or v == "":
        return None
    try:
        return int(float(v))
    except (TypeError, ValueError):
        return None


def ref_id(v) -> int | None:
    """A foreign id: Bitrix24 sends "0" for none."""
    i = to_int(v)
    return i if i else None


def to_float(v) -> float | None:
    if v in (None, ""):
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def to_utc(v) -> str | None:
    """`2026-11-23T13:00:00+03:00` -> `2026-11-23T10:00:00Z`; empty or junk -> None."""
    if not v or not isinstance(v, str):
        return None
    try:
        dt = datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is None:  # no offset: assume UTC rather than guess the portal's zone
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def yes(v) -> int:
    return 1 if str(v).upper() in ("Y", "TRUE", "1") else 0


# ---- parsers ---------------------------------------------------------------------------

DEAL_STATUS = {"P": "open", "S": "won", "F": "lost"}
LEAD_STATUS = {"P": "open", "S": "converted", "F": "junk"}
SEMANTICS = {None: "open", "": "open", "S": "won", "F": "lost"}


def user(r: dict) -> dict:
    name = " ".join(p for p in (r.get("NAME"), r.get("LAST_NAME")) if p) or None
    return {"id": to_int(r.get("ID")), "name": name, "email": r.get("EMAIL") or None,
            "is_active": yes(r.get("ACTIVE", True)), "raw": r}


def pipeline(c: dict) -> dict:
    return {"id": to_int(c.get("id")), "entity": "deal", "name": c.get("name"),
            "sort": to_int(c.get("sort")), "is_default": yes(c.get("isDefault")), "raw": c}


LEAD_PIPELINE_ROW = {"id": LEAD_PIPELINE, "entity": "lead", "name": "Leads", "sort": 0,
                     "is_default": 0, "raw": {"note": "pseudo-pipeline for lead statuses"}}


def stage(s: dict, pipeline_id: int, entity: str) -> dict:
    return {"pipeline_id": pipeline_id, "id": s.get("STATUS_ID"), "entity": entity,
            "name": s.get("NAME"), "sort": to_int(s.get("SORT")),
            "semantics": SEMANTICS.get(s.get("SEMANTICS"), "open"), "raw": s}


def deal(r: dict) -> dict:
    closed = yes(r.get("CLOSED"))
    return {"id": to_int(r["ID"]), "name": r.get("TITLE"), "pipeline_id": to_int(r.get("CATEGORY_ID")) or 0,
            "stage_id": r.get("STAGE_ID"), "status": DEAL_STATUS.get(r.get("STAGE_SEMANTIC_ID"), "open"),
            "amount": to_float(r.get("OPPORTUNITY")), "currency": r.get("CURRENCY_ID"),
            "responsible_user_id": ref_id(r.get("ASSIGNED_BY_ID")),
            "contact_id": ref_id(r.get("CONTACT_ID")), "company_id": ref_id(r.get("COMPANY_ID")),
            "created_at": to_utc(r.get("DATE_CREATE")), "updated_at": to_utc(r.get("DATE_MODIFY")),
            # CLOSEDATE on an open deal is only the planned close date.
            "closed_at": to_utc(r.get("CLOSEDATE")) if closed else None,
            "is_deleted": 0, "raw": r}


def deal_links(d: dict, contact_ids) -> list[dict]:
    """Links of one deal from crm.item.list `contactIds` (main contact first)."""
    ids = [i for i in (to_int(c) for c in contact_ids or []) if i]
    main = d.get("contact_id") or (ids[0] if ids else None)
    return [{"deal_id": d["id"], "contact_id": c, "is_main": int(c == main)}
            for c in dict.fromkeys(ids)]


def lead(r: dict) -> dict:
    return {"id": to_int(r["ID"]), "title": r.get("TITLE"), "status_id": r.get("STATUS_ID"),
            "status": LEAD_STATUS.get(r.get("STATUS_SEMANTIC_ID"), "open"),
            "amount": to_float(r.get("OPPORTUNITY")), "currency": r.get("CURRENCY_ID"),
            "responsible_user_id": ref_id(r.get("ASSIGNED_BY_ID")),
            "contact_id": ref_id(r.get("CONTACT_ID")), "company_id": ref_id(r.get("COMPANY_ID")),
            "created_at": to_utc(r.get("DATE_CREATE")), "updated_at": to_utc(r.get("DATE_MODIFY")),
            "closed_at": to_utc(r.get("DATE_CLOSED")), "is_deleted": 0, "raw": r}


def contact(r: dict) -> dict:
    name = " ".join(p for p in (r.get("NAME"), r.get("SECOND_NAME"), r.get("LAST_NAME")) if p)
    return {"id": to_int(r["ID"]), "name": name or None, "company_id": ref_id(r.get("COMPANY_ID")),
            "responsible_user_id": ref_id(r.get("ASSIGNED_BY_ID")),
            "created_at": to_utc(r.get("DATE_CREATE")), "updated_at": to_utc(r.get("DATE_MODIFY")),
            "is_deleted": 0, "raw": r}


def company(r: dict) -> dict:
    return {"id": to_int(r["ID"]), "name": r.get("TITLE"),
            "responsible_user_id": ref_id(r.get("ASSIGNED_BY_ID")),
            "created_at": to_utc(r.get("DATE_CREATE")), "updated_at": to_utc(r.get("DATE_MODIFY")),
            "is_deleted": 0, "raw": r}


TASK_ENTITY = {"D": "deal", "C": "contact", "CO": "company", "L": "lead"}


def task_binding(uf) -> tuple[str | None, int | None]:
    """ufCrmTask ["D_12"] -> ("deal", 12); the first CRM binding wins."""
    for b in uf if isinstance(uf, list) else ([uf] if uf else []):
        prefix, _, num = str(b).rpartition("_")
        if prefix in TASK_ENTITY and to_int(num):
            return TASK_ENTITY[prefix], to_int(num)
    return None, None


def task(r: dict) -> dict:
    etype, eid = task_binding(r.get("ufCrmTask"))
    status = to_int(r.get("status")) or to_int(r.get("realStatus"))
    return {"id": to_int(r["id"]), "text": r.get("title"),
            "responsible_user_id": ref_id(r.get("responsibleId")), "entity_type": etype,
            "entity_id": eid, "is_completed": int(status == 5),
            "due_at": to_utc(r.get("deadline")), "completed_at": to_utc(r.get("closedDate")),
            "created_at": to_utc(r.get("createdDate")), "updated_at": to_utc(r.get("changedDate")),
            "is_deleted": 0, "raw": r}


CALL_OWNER = {1: "lead", 2: "deal", 3: "contact", 4: "company"}


def call(r: dict, activity: dict | None = None) -> dict:
    kind = to_int(r.get("CALL_TYPE"))
    code = str(r.get("CALL_FAILED_CODE") or "")
    etype = (r.get("CRM_ENTITY_TYPE") or "").lower() or None
    eid = ref_id(r.get("CRM_ENTITY_ID"))
    if activity and CALL_OWNER.get(to_int(activity.get("OWNER_TYPE_ID"))) and ref_id(activity.get("OWNER_ID")):
        etype, eid = CALL_OWNER[to_int(activity["OWNER_TYPE_ID"])], ref_id(activity["OWNER_ID"])
    return {"id": to_int(r["ID"]), "direction": "in" if kind in (2, 3) else "out",
            "status": "answered" if code == "200" else "missed" if code == "304" else "failed",
            "duration_s": to_int(r.get("CALL_DURATION")) or 0,
            "started_at": to_utc(r.get("CALL_START_DATE")),
            "responsible_user_id": ref_id(r.get("PORTAL_USER_ID")),
            "entity_type": etype if eid else None, "entity_id": eid,
            "phone": r.get("PHONE_NUMBER") or None, "is_deleted": 0, "raw": r}


def stage_change(r: dict, entity: str, previous) -> dict:
    is_deal = entity == "deal"
    return {"id": f"{entity}:{to_int(r['ID'])}", "entity": entity, "entity_id": to_int(r.get("OWNER_ID")),
            "pipeline_id": (to_int(r.get("CATEGORY_ID")) or 0) if is_deal else LEAD_PIPELINE,
            "stage_id": r.get("STAGE_ID") if is_deal else r.get("STATUS_ID"),
            "previous_stage_id": previous, "changed_at": to_utc(r.get("CREATED_TIME")), "raw": r}


# ---- declarations ----------------------------------------------------------------------

@dataclass(frozen=True)
class Stream:
    """A stream: which list to page, how to read changes, how to build records."""
    name: str
    table: str
    spec: ListSpec
    parse: Callable[[dict], dict]
    cursor: str | None = None          # change filter (`>=DATE_MODIFY`); None: snapshot
    append: bool = False               # append-only: bookmark = last ID
    reconcile: bool = False            # included in the ID reconciliation pass
    extra: dict = field(default_factory=dict)


CRM_SELECT = ["*", "UF_*"]
TASK_SELECT = ["ID", "TITLE", "DESCRIPTION", "RESPONSIBLE_ID", "CREATED_BY", "CREATED_DATE",
               "CHANGED_DATE", "CLOSED_DATE", "DEADLINE", "STATUS", "REAL_STATUS", "UF_CRM_TASK",
               "GROUP_ID"]

USERS = Stream("users", "users", ListSpec(
    "user.get", {"ADMIN_MODE": True}, filter_key="FILTER", order={"sort": "ID", "order": "ASC"}),
    user)
COMPANIES = Stream("companies", "companies", ListSpec("crm.company.list", {"select": CRM_SELECT}),
                   company, cursor="DATE_MODIFY", reconcile=True)
CONTACTS = Stream("contacts", "contacts", ListSpec(
    "crm.contact.list", {"select": CRM_SELECT + ["PHONE", "EMAIL"]}), contact,
    cursor="DATE_MODIFY", reconcile=True)
LEADS = Stream("leads", "leads", ListSpec("crm.lead.list", {"select": CRM_SELECT}), lead,
               cursor="DATE_MODIFY", reconcile=True)
DEALS = Stream("deals", "deals", ListSpec("crm.deal.list", {"select": CRM_SELECT}), deal,
               cursor="DATE_MODIFY", reconcile=True)
TASKS = Stream("tasks", "tasks", ListSpec(
    "tasks.task.list", {"select": TASK_SELECT}, row_id="id", wrap="tasks"), task,
    cursor="CHANGED_DATE")
CALLS = Stream("calls", "calls", ListSpec(
    "voximplant.statistic.get", {}, filter_key="FILTER", order={"SORT": "ID", "ORDER": "ASC"}),
    call, append=True)
DEAL_HISTORY = ListSpec("crm.stagehistory.list", {"entityTypeId": 2}, wrap="items")
LEAD_HISTORY = ListSpec("crm.stagehistory.list", {"entityTypeId": 1}, wrap="items")
DEAL_LINKS = "crm.item.list"
ACTIVITIES = ListSpec("crm.activity.list", {"select": ["ID", "OWNER_TYPE_ID", "OWNER_ID"]})

CHANGE_STREAMS = {s.name: s for s in (USERS, COMPANIES, CONTACTS, LEADS, DEALS, TASKS, CALLS)}
ORDER = ["users", "pipelines", "companies", "contacts", "leads", "deals", "tasks", "calls",
         "stage_history", "reconcile"]


def deal_links_command(lower, hi, extra: dict) -> tuple[str, dict]:
    """crm.item.list over the same ID window and change filter as the deal page beside it."""
    flt = {">id": lower}
    if hi is not None:
        flt["<=id"] = hi
    for k, v in extra.items():  # `>=DATE_MODIFY` -> `>=updatedTime`
        flt[k.replace("DATE_MODIFY", "updatedTime")] = v
    return DEAL_LINKS, {"entityTypeId": 2, "select": ["id", "contactIds"], "filter": flt,
                        "order": {"id": "ASC"}, "start": -1}
