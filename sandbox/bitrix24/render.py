"""How the neutral sandbox dataset looks through Bitrix24's eyes.

Each entity gets a `Spec`: its fields, each with the old UPPER_SNAKE name (crm.deal.list),
the camelCase name (crm.item.list, tasks.task.list output) and a getter returning a typed
value. Old list methods then stringify every number; typed methods keep the types.
Datetimes render in the portal's zone (Europe/Moscow, a fixed +03:00).
"""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta, timezone
from typing import Callable

from sandbox.call_outcomes import outcome_of

from .activities import activity_spec, call_entity, source_fields
from .spec import Field, Spec

MSK = timezone(timedelta(hours=3))
_MSK_S = 3 * 3600
# Call outcome -> voximplant.statistic.get CALL_FAILED_CODE and CALL_FAILED_REASON.
CALL_FAILED = {
    "talked": ("200", "Success call"),
    "no_answer": ("304", "Skipped call"),
    "busy": ("486", "Busy here"),
    "declined": ("603", "Call declined"),
    "wrong_number": ("404", "Invalid number"),
}

SEMANTIC = {"open": "P", "won": "S", "lost": "F"}
STATUS_SEMANTICS = {"open": None, "won": "S", "lost": "F"}
EXTRA_SEMANTICS = {"open": "process", "won": "success", "lost": "failure"}
LEAD_STATUSES = [
    ("NEW", "New", 10, "open"),
    ("IN_PROCESS", "In progress", 20, "open"),
    ("CONVERTED", "Converted", 30, "won"),
    ("JUNK", "Junk", 40, "lost"),
]
TYPE_UF = {"numeric": "double", "text": "string", "select": "enumeration", "date": "date"}
UF_TYPE = {
    "double": "numeric",
    "integer": "numeric",
    "string": "text",
    "enumeration": "select",
    "date": "date",
}
TASK_PREFIX = {"deal": "D", "contact": "C", "company": "CO", "lead": "L"}


_DAYS: dict[int, str] = {}  # day number -> "2026-11-23T"
_CLOCK: list[str] | None = None  # second of the day -> "13:00:00+03:00"


def fmt_dt(ts: int | None) -> str | None:
    """Unix seconds -> `2026-11-23T13:00:00+03:00`."""
    if ts is None:
        return None
    if type(ts) is not int:
        return time.strftime("%Y-%m-%dT%H:%M:%S+03:00", time.gmtime(ts + _MSK_S))
    # Five dates a row, thousands of rows a batch: two table lookups beat strftime.
    day, sec = divmod(ts + _MSK_S, 86400)
    text = _DAYS.get(day)
    if text is None:
        text = _DAYS[day] = time.strftime("%Y-%m-%dT", time.gmtime(day * 86400))
    return text + (_CLOCK or _clock())[sec]


def portal_midnight(ts: int | None) -> int | None:
    """The start of `ts`'s day in the portal's zone: how a `date` field reads back."""
    return None if ts is None else (ts + _MSK_S) // 86400 * 86400 - _MSK_S


def _clock() -> list[str]:
    global _CLOCK
    _CLOCK = [f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}+03:00" for s in range(86400)]
    return _CLOCK


def parse_dt(value) -> int:
    """A filter datetime -> Unix seconds. ISO 8601 with offset, or portal-local without one.

    Raises ValueError, e.g. for `2026-11-23T13:00:00 03:00` (an unencoded `+` in a query).
    """
    if isinstance(value, (int, float)):
        return int(value)
    text = str(value).strip()
    m = re.fullmatch(r"(\d\d)\.(\d\d)\.(\d{4})(?: (\d\d):(\d\d)(?::(\d\d))?)?", text)
    if m:  # the portal's own format, dd.mm.yyyy hh:mm:ss
        d, mo, y, h, mi, s = m.groups()
        dt = datetime(int(y), int(mo), int(d), int(h or 0), int(mi or 0), int(s or 0), tzinfo=MSK)
        return int(dt.timestamp())
    if not re.fullmatch(r"\d{4}-\d\d-\d\d([T ]\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:?\d\d)?)?", text):
        raise ValueError(f"invalid datetime {text!r}")
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=MSK)
    return int(dt.timestamp())


def camel(name: str) -> str:
    """`UF_CRM_KPI_WIN_RATE` -> `ufCrmKpiWinRate`, `UF_CRM_1704817278` -> `ufCrm_1704817278`."""
    parts = name.lower().split("_")
    out = parts[0]
    for p in parts[1:]:
        out += ("_" + p) if p[:1].isdigit() else p.capitalize()
    return out


def uf_name(f: dict) -> str:
    """A dataset custom field's Bitrix24 FIELD_NAME."""
    code = (f.get("code") or "").upper()
    if code.startswith("UF_CRM_"):
        return code
    if code and re.fullmatch(r"[A-Z0-9_]+", code):
        return "UF_CRM_" + code
    return f"UF_CRM_{1700000000 + f['id']}"  # what the UI-created fields look like


def to_old(kind: str, v):
    """Old list methods: numbers become strings, datetimes ISO strings."""
    if v is None:
        return None
    if kind == "int":
        return str(v)
    if kind == "money":
        return f"{v:.2f}"
    if kind == "date":
        return fmt_dt(v)
    if kind == "float" and isinstance(v, (int, float)):
        return str(int(v)) if float(v).is_integer() and abs(v) < 1e15 else repr(float(v))
    return v


class Vocab:
    """Id mappings between the dataset and Bitrix24 (pipelines, stages, custom fields)."""

    def __init__(self, ds):
        self.ds = ds
        self.default_pipeline = ds.pipelines[0]["id"]
        self.stage_code: dict[int, str] = {}
        self.stage_by_code: dict[str, int] = {}
        for p in ds.pipelines:
            cat = self.category(p["id"])
            for s in p["stages"]:
                code = self.status_id(cat, s)
                self.stage_code[s["id"]] = code
                self.stage_by_code[code] = s["id"]
        self._moved: dict[int, int] = {}
        self._moved_n = -1

    def category(self, pipeline_id: int) -> int:
        return 0 if pipeline_id == self.default_pipeline else pipeline_id

    def pipeline(self, category_id: int) -> int:
        return self.default_pipeline if category_id == 0 else category_id

    @staticmethod
    def status_id(cat: int, stage: dict) -> str:
        code = {"won": "WON", "lost": "LOSE"}.get(stage["semantics"], stage["code"])
        return code if cat == 0 else f"C{cat}:{code}"

    @staticmethod
    def entity_id(cat: int) -> str:
        return "DEAL_STAGE" if cat == 0 else f"DEAL_STAGE_{cat}"

    def moved_time(self, deal: dict) -> int:
        """Last stage change of a deal (indexed once per stage_changes growth)."""
        rows = self.ds.stage_changes
        if self._moved_n != len(rows):
            self._moved = {r["deal_id"]: r["changed_at"] for r in rows}
            self._moved_n = len(rows)
        return self._moved.get(deal["id"], deal["created_at"])

    def uf_fields(self, etype: str) -> list[tuple[str, dict]]:
        return [(uf_name(f), f) for f in self.ds.fields.get(etype, [])]


def _uf_getter(f: dict):
    fid = f["id"]
    if f.get("enums"):  # list fields read back as the enum id, like the real API
        ids = {e["value"]: str(e["id"]) for e in f["enums"]}
        return lambda r: None if (x := r["custom"].get(fid)) is None else ids.get(x, x)
    return lambda r: r["custom"].get(fid)


def _phones(r):
    return (
        [{"ID": str(r["id"] * 2), "VALUE_TYPE": "WORK", "VALUE": r["phone"], "TYPE_ID": "PHONE"}]
        if r.get("phone")
        else None
    )


def _emails(r):
    return (
        [{"ID": str(r["id"] * 2 + 1), "VALUE_TYPE": "WORK", "VALUE": r["email"], "TYPE_ID": "EMAIL"}]
        if r.get("email")
        else None
    )


def _yn(b) -> str:
    return "Y" if b else "N"


def build_specs(v: Vocab) -> dict[str, Callable[[], Spec]]:
    """Spec factories per entity; contacts/companies rebuild when fields are added."""
    cat = lambda r: v.category(r["pipeline_id"])  # noqa: E731
    deal = Spec(
        [
            Field("ID", "id", "id"),
            Field("TITLE", "title", "name", "str"),
            Field("TYPE_ID", "typeId", lambda r: "SALE", "str"),
            Field("CATEGORY_ID", "categoryId", cat),
            Field("STAGE_ID", "stageId", lambda r: v.stage_code[r["stage_id"]], "str"),
            Field("STAGE_SEMANTIC_ID", "stageSemanticId", lambda r: SEMANTIC[r["status"]], "str"),
            Field("IS_NEW", "isNew", lambda r: "N", "yn"),
            Field("OPENED", "opened", lambda r: "Y", "yn"),
            Field("CLOSED", "closed", lambda r: _yn(r["status"] != "open"), "yn"),
            Field("OPPORTUNITY", "opportunity", lambda r: float(r["amount"]), "money"),
            Field("CURRENCY_ID", "currencyId", "currency", "str"),
            Field("ASSIGNED_BY_ID", "assignedById", "responsible_user_id"),
            Field("CREATED_BY_ID", "createdBy", "responsible_user_id"),
            Field("MODIFY_BY_ID", "updatedBy", "responsible_user_id"),
            Field("CONTACT_ID", "contactId", lambda r: r["contact_ids"][0] if r["contact_ids"] else None),
            Field(None, "contactIds", lambda r: list(r["contact_ids"]), "list"),
            # Real portals send "0", not null, for a deal without a company.
            Field("COMPANY_ID", "companyId", lambda r: r["company_id"] or 0),
            # The lead the deal was converted from; null on a deal opened without one.
            Field("LEAD_ID", "leadId", lambda r: r.get("lead_id")),
            Field("BEGINDATE", "begindate", "created_at", "date"),
            # CLOSEDATE is an editable field of type date: midnight in the portal's zone, not the
            # moment of closing (that is MOVED_TIME, or the stage history's final-stage row).
            Field("CLOSEDATE", "closedate", lambda r: portal_midnight(r["closed_at"]), "date"),
            Field("DATE_CREATE", "createdTime", "created_at", "date"),
            Field("DATE_MODIFY", "updatedTime", "updated_at", "date"),
            Field("MOVED_TIME", "movedTime", v.moved_time, "date"),
            *source_fields(),
        ]
    )
    lead = Spec(
        [
            Field("ID", "id", "id"),
            Field("TITLE", "title", "title", "str"),
            Field("STATUS_ID", "stageId", "status_code", "str"),
            Field(
                "STATUS_SEMANTIC_ID",
                "stageSemanticId",
                lambda r: {"open": "P", "converted": "S", "junk": "F"}[r["status"]],
                "str",
            ),
            Field("OPENED", "opened", lambda r: "Y", "yn"),
            Field("OPPORTUNITY", "opportunity", lambda r: float(r["amount"]), "money"),
            Field("CURRENCY_ID", "currencyId", "currency", "str"),
            Field("ASSIGNED_BY_ID", "assignedById", "responsible_user_id"),
            Field("CONTACT_ID", "contactId", "contact_id"),
            Field("COMPANY_ID", "companyId", "company_id"),
            Field("DATE_CREATE", "createdTime", "created_at", "date"),
            Field("DATE_MODIFY", "updatedTime", "updated_at", "date"),
            Field("DATE_CLOSED", "closedate", "closed_at", "date"),
            *source_fields(),
        ]
    )

    def contact() -> Spec:
        fs = [
            Field("ID", "id", "id"),
            Field("NAME", "name", "first_name", "str"),
            Field("LAST_NAME", "lastName", "last_name", "str"),
            Field("SECOND_NAME", "secondName", lambda r: None, "str"),
            Field("COMPANY_ID", "companyId", "company_id"),
            Field("ASSIGNED_BY_ID", "assignedById", "responsible_user_id"),
            Field("OPENED", "opened", lambda r: "Y", "yn"),
            Field("HAS_PHONE", "hasPhone", lambda r: _yn(r.get("phone")), "yn"),
            Field("HAS_EMAIL", "hasEmail", lambda r: _yn(r.get("email")), "yn"),
            Field("DATE_CREATE", "createdTime", "created_at", "date"),
            Field("DATE_MODIFY", "updatedTime", "updated_at", "date"),
            Field("PHONE", None, _phones, "list", explicit=True),
            Field("EMAIL", None, _emails, "list", explicit=True),
        ]
        return Spec(fs + _uf_fields(v, "contact"))

    def company() -> Spec:
        fs = [
            Field("ID", "id", "id"),
            Field("TITLE", "title", "name", "str"),
            Field("COMPANY_TYPE", "typeId", lambda r: "CUSTOMER", "str"),
            Field("ASSIGNED_BY_ID", "assignedById", "responsible_user_id"),
            Field("OPENED", "opened", lambda r: "Y", "yn"),
            Field("DATE_CREATE", "createdTime", "created_at", "date"),
            Field("DATE_MODIFY", "updatedTime", "updated_at", "date"),
        ]
        return Spec(fs + _uf_fields(v, "company"))

    task = Spec(
        [
            Field("ID", "id", "id"),
            Field("TITLE", "title", "text", "str"),
            Field("DESCRIPTION", "description", lambda r: "", "str"),
            Field("RESPONSIBLE_ID", "responsibleId", "responsible_user_id"),
            Field("CREATED_BY", "createdBy", "responsible_user_id"),
            Field("CREATED_DATE", "createdDate", "created_at", "date"),
            Field("CHANGED_DATE", "changedDate", "updated_at", "date"),
            Field("CLOSED_DATE", "closedDate", "completed_at", "date"),
            Field("DEADLINE", "deadline", "due_at", "date"),
            Field("STATUS", "status", lambda r: 5 if r["is_completed"] else 2),
            Field("REAL_STATUS", "realStatus", lambda r: 5 if r["is_completed"] else 2),
            Field("UF_CRM_TASK", "ufCrmTask", _task_crm, "list"),
        ]
    )
    call = Spec(
        [
            Field("ID", None, "id"),
            Field("CALL_ID", None, lambda r: f"externalcall.{r['id']:x}.{r['started_at']}", "str"),
            Field("CALL_CATEGORY", None, lambda r: "external", "str"),
            # 1 outgoing, 2 incoming; 5 informational: a robot reads a message to the number.
            Field(
                "CALL_TYPE",
                None,
                lambda r: 5 if r.get("informational") else 1 if r["direction"] == "out" else 2,
            ),
            Field("CALL_DURATION", None, "duration_s"),
            Field("CALL_START_DATE", None, "started_at", "date"),
            Field("CALL_FAILED_CODE", None, lambda r: CALL_FAILED[outcome_of(r)][0], "str"),
            Field("CALL_FAILED_REASON", None, lambda r: CALL_FAILED[outcome_of(r)][1], "str"),
            Field("PORTAL_USER_ID", None, "responsible_user_id"),
            Field("PORTAL_NUMBER", None, lambda r: "74950000000", "str"),
            Field("PHONE_NUMBER", None, "phone", "str"),
            # CONTACT, COMPANY or LEAD only: a deal's call names the deal's contact or company.
            Field(
                "CRM_ENTITY_TYPE",
                None,
                lambda r: (call_entity(r)[0] or "").upper() or None,
                "str",
            ),
            Field("CRM_ENTITY_ID", None, lambda r: call_entity(r)[1]),
            Field("CRM_ACTIVITY_ID", None, lambda r: r.get("activity_id") or 0),
            Field("COST", None, lambda r: 0.0, "money"),
            # The client's rating of the call, 1-5, when the line asks for one; "0": none.
            Field("CALL_VOTE", None, lambda r: r.get("vote") or 0),
            Field("COST_CURRENCY", None, lambda r: "RUB", "str"),
        ]
    )
    activity = activity_spec()
    user = Spec(
        [
            Field("ID", None, "id"),
            Field("ACTIVE", None, lambda r: bool(r["is_active"]), "bool"),
            Field("NAME", None, lambda r: r["name"].split(" ", 1)[0], "str"),
            Field("LAST_NAME", None, lambda r: (r["name"].split(" ", 1) + [""])[1], "str"),
            Field("EMAIL", None, "email", "str"),
            Field("USER_TYPE", None, lambda r: "employee", "str"),
            Field("UF_DEPARTMENT", None, lambda r: [1], "list"),
        ]
    )
    stage_history = Spec(
        [
            Field("ID", None, "id"),
            Field("TYPE_ID", None, "type_id"),
            Field("OWNER_ID", None, "owner_id"),
            Field("CREATED_TIME", None, "at", "date"),
            Field("CATEGORY_ID", None, lambda r: r.get("category_id")),
            Field("STAGE_SEMANTIC_ID", None, lambda r: r.get("semantic"), "str"),
            Field("STAGE_ID", None, lambda r: r.get("stage"), "str"),
        ]
    )
    lead_history = Spec(
        [
            Field("ID", None, "id"),
            Field("TYPE_ID", None, "type_id"),
            Field("OWNER_ID", None, "owner_id"),
            Field("CREATED_TIME", None, "at", "date"),
            Field("STATUS_SEMANTIC_ID", None, lambda r: r.get("semantic"), "str"),
            Field("STATUS_ID", None, lambda r: r.get("stage"), "str"),
        ]
    )
    fixed = {
        "deal": deal,
        "lead": lead,
        "task": task,
        "call": call,
        "activity": activity,
        "user": user,
        "stagehistory_deal": stage_history,
        "stagehistory_lead": lead_history,
    }
    out = {k: (lambda s=s: s) for k, s in fixed.items()}
    out["contact"] = contact
    out["company"] = company
    return out


def _uf_fields(v: Vocab, etype: str) -> list[Field]:
    out = []
    for name, f in v.uf_fields(etype):
        kind = {"numeric": "float", "date": "date"}.get(f["type"], "str")
        out.append(Field(name, camel(name), _uf_getter(f), kind))
    return out


def _task_crm(r):
    et = r.get("entity_type")
    if not et or r.get("entity_id") is None:
        return []
    return [f"{TASK_PREFIX[et]}_{r['entity_id']}"]
