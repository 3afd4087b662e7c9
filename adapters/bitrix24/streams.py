"""Bitrix24 streams, declared: what each asks the portal for, its mode, cursor and parser.

Every stream is an `adapters.streams.Stream`; its `request` is one of the Bitrix24 request
types below, which the readers in `adapters.bitrix24.reading` understand (one per mode):

- `ListRequest`: one list method paged by ID windows (`start=-1`, chained in batches), with
  an optional companion list read beside each page in the same batch (deal -> contact ids),
  an optional lookup per page, run in the worker that read it (call -> its activity), or a
  method asked once per item, the page's items in one batch (activity -> its bindings).
- `AppendRequest`: named parts, each a `ListRequest` read after the last ID seen.
- `PipelinesRequest`: deal pipelines, their stages and the lead statuses, in one batch.
- `ReconcileRequest`: the change streams whose IDs are listed whole to find deletions
  (the CRM entities and tasks: deleted records simply vanish from their lists).

Parsers live in `adapters.bitrix24.parsers`; the paging itself in `adapters.bitrix24.paging`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from adapters.bitrix24 import parsers as p
from adapters.bitrix24.paging import ListSpec
from adapters.streams import Stream
from adapters.values import to_int


@dataclass(frozen=True)
class Companion:
    """A second list read beside every page, in the same batch, over the same ID window and
    change filter: what the first list lacks (crm.deal.list has no contact ids; crm.item.list
    has `contactIds`). The parser finds `value` in ctx.side[item id]."""

    method: str
    params: dict
    value: str
    renames: tuple[tuple[str, str], ...] = ()  # the main list's filter fields -> this list's
    id_key: str = "id"
    wrap: str = "items"

    def command(self, lower, hi: int | None, extra: dict) -> tuple[str, dict]:
        """The companion page for the main page starting after `lower` (a value or a reference)."""
        flt = {">" + self.id_key: lower}
        if hi is not None:
            flt["<=" + self.id_key] = hi
        for key, v in extra.items():
            for old, new in self.renames:
                key = key.replace(old, new)
            flt[key] = v
        return self.method, {**self.params, "filter": flt, "order": {self.id_key: "ASC"}, "start": -1}

    def by_ids(self, ids: list[int]) -> tuple[str, dict]:
        """The same list for given IDs (items changed between the two sub-calls of a batch)."""
        return self.method, {**self.params, "filter": {"@" + self.id_key: ids}, "start": -1}

    def values(self, results) -> dict[int, object]:
        """Item id -> `value`, from companion results (one per page)."""
        out = {}
        for result in results:
            items = result.get(self.wrap) if isinstance(result, dict) else None
            for item in items or []:
                out[to_int(item.get(self.id_key))] = item.get(self.value) or []
        return out


@dataclass(frozen=True)
class Lookup:
    """Rows of another list fetched by ID for each page, in the worker that read the page
    (best effort: a failed lookup leaves ctx.side empty). ctx.side[item id] = the row whose
    ID the item's `key` holds."""

    spec: ListSpec
    key: str


@dataclass(frozen=True)
class PerItem:
    """A method that answers for one item at a time (no list form, no select field gives the
    same), asked for each item of a page that `wanted` picks: the page's calls go in one batch
    (50 sub-calls, one request per page), in the worker that read the page. ctx.side[item id]
    = its result; an item the portal no longer finds (NOT_FOUND) has none."""

    method: str
    param: str  # the method's parameter naming the item's ID
    wanted: Callable[[dict], bool]


@dataclass(frozen=True)
class ListRequest:
    """One list method, paged by ID windows."""

    spec: ListSpec
    companion: Companion | None = None
    lookup: Lookup | None = None
    per_item: PerItem | None = None
    reconciles: bool = False  # a complete fresh listing doubles as the ID reconciliation
    first_chain: int = 1  # pages chained in a window's first batch

    def snapshot(self, reader, state: dict):
        """Read whole (snapshot mode)."""
        return reader.list_all(self)


@dataclass(frozen=True)
class AppendRequest:
    """Rows after the last ID seen, per named part; rows never change once written.
    Several parts: their first pages come in one batch, so a quiet run costs one request."""

    parts: dict[str, ListRequest]


@dataclass(frozen=True)
class PipelinesRequest:
    """Pipelines with their stages in one batch: the bookmark remembers the pipelines seen, so
    their stage lists ride along with the pipeline list; a new pipeline costs one more batch."""

    categories: tuple[str, dict]
    lead_statuses: tuple[str, dict]
    leads: dict  # the item standing for the lead pseudo-pipeline

    @staticmethod
    def stages(category_id: int) -> tuple[str, dict]:
        entity = "DEAL_STAGE" if category_id == 0 else f"DEAL_STAGE_{category_id}"
        return "crm.status.list", {"filter": {"ENTITY_ID": entity}, "order": {"SORT": "ASC"}}

    def snapshot(self, reader, state: dict):
        return reader.pipelines(self, state)


@dataclass(frozen=True)
class ReconcileRequest:
    """List every ID of these streams (their first table) to mark the missing ones deleted."""

    streams: tuple[str, ...]


# ---- what to ask for --------------------------------------------------------------------

CRM_SELECT = ["*", "UF_*"]
# The acquisition channel reads UTM_SOURCE, else SOURCE_ID. Both are in the `*` set today;
# they are named anyway, as the docs advise for fields a reader depends on.
SOURCE_SELECT = ("SOURCE_ID", "UTM_SOURCE")
ACTIVITY_SELECT = [
    "ID",
    "TYPE_ID",
    "PROVIDER_ID",
    "PROVIDER_TYPE_ID",
    "DIRECTION",
    "OWNER_TYPE_ID",
    "OWNER_ID",
    "RESPONSIBLE_ID",
    "START_TIME",
    "CREATED",
    "LAST_UPDATED",
    "SUBJECT",
    "COMPLETED",
]
TASK_SELECT = [
    "ID",
    "TITLE",
    "DESCRIPTION",
    "RESPONSIBLE_ID",
    "CREATED_BY",
    "CREATED_DATE",
    "CHANGED_DATE",
    "CLOSED_DATE",
    "DEADLINE",
    "STATUS",
    "REAL_STATUS",
    "UF_CRM_TASK",
    "GROUP_ID",
]
CONTACT_IDS = Companion(
    "crm.item.list",
    {"entityTypeId": 2, "select": ["id", "contactIds"]},
    value="contactIds",
    renames=(("DATE_MODIFY", "updatedTime"),),
)
CALL_ACTIVITY = Lookup(
    ListSpec("crm.activity.list", {"select": ["ID", "OWNER_TYPE_ID", "OWNER_ID"]}), key="CRM_ACTIVITY_ID"
)
# crm.activity.list has no bindings column (BINDINGS is a filter only): each activity's are read
# with crm.activity.binding.list, a page's worth in one batch.
ACTIVITY_BINDINGS = PerItem("crm.activity.binding.list", "activityId", p.wanted_activity)
DEAL_HISTORY = ListSpec("crm.stagehistory.list", {"entityTypeId": 2}, wrap="items")
LEAD_HISTORY = ListSpec("crm.stagehistory.list", {"entityTypeId": 1}, wrap="items")


def crm_list(method: str, *select: str, companion: Companion | None = None) -> ListRequest:
    """A `crm.*.list` of every standard and custom field (+ `select`), part of the reconciliation."""
    return ListRequest(
        ListSpec(method, {"select": CRM_SELECT + list(select)}), companion=companion, reconciles=True
    )


# ---- the streams, in run order ----------------------------------------------------------
# `scope`: the webhook's or app's permission each stream's methods need (`client.scope_of`).

USERS = Stream(
    "users",
    ("users",),
    "snapshot",
    ListRequest(
        ListSpec("user.get", {"ADMIN_MODE": True}, filter_key="FILTER", order={"sort": "ID", "order": "ASC"}),
        first_chain=4,
    ),
    p.user,
    scope="user",
)
PIPELINES = Stream(
    "pipelines",
    ("pipelines", "stages"),
    "snapshot",
    PipelinesRequest(
        categories=("crm.category.list", {"entityTypeId": 2}),
        lead_statuses=("crm.status.list", {"filter": {"ENTITY_ID": "STATUS"}, "order": {"SORT": "ASC"}}),
        leads=p.LEAD_CATEGORY,
    ),
    p.pipeline,
    scope="crm",
)
COMPANIES = Stream(
    "companies",
    ("companies",),
    "changes",
    crm_list("crm.company.list"),
    p.company,
    cursor="DATE_MODIFY",
    scope="crm",
)
CONTACTS = Stream(
    "contacts",
    ("contacts",),
    "changes",
    crm_list("crm.contact.list", "PHONE", "EMAIL"),
    p.contact,
    cursor="DATE_MODIFY",
    scope="crm",
)
LEADS = Stream(
    "leads",
    ("leads",),
    "changes",
    crm_list("crm.lead.list", *SOURCE_SELECT),
    p.lead,
    cursor="DATE_MODIFY",
    scope="crm",
)
DEALS = Stream(
    "deals",
    ("deals", "deal_contacts"),
    "changes",
    crm_list("crm.deal.list", *SOURCE_SELECT, companion=CONTACT_IDS),
    p.deal,
    cursor="DATE_MODIFY",
    scope="crm",
)
# tasks.task.list stops listing a deleted task and nothing reports the deletion: tasks are
# reconciled by ID like the CRM entities.
TASKS = Stream(
    "tasks",
    ("tasks",),
    "changes",
    ListRequest(
        ListSpec("tasks.task.list", {"select": TASK_SELECT}, row_id="id", wrap="tasks"), reconciles=True
    ),
    p.task,
    cursor="CHANGED_DATE",
    scope="task",
)
CALLS = Stream(
    "calls",
    ("calls", "survey_answers"),
    "append",
    AppendRequest(
        {
            "calls": ListRequest(
                ListSpec(
                    "voximplant.statistic.get", {}, filter_key="FILTER", order={"SORT": "ID", "ORDER": "ASC"}
                ),
                lookup=CALL_ACTIVITY,
            )
        }
    ),
    p.call,
    cursor="ID",
    scope="telephony",
)
STAGE_HISTORY = Stream(
    "stage_history",
    ("stage_changes",),
    "append",
    AppendRequest({"deal": ListRequest(DEAL_HISTORY), "lead": ListRequest(LEAD_HISTORY)}),
    p.stage_change,
    cursor="ID",
    scope="crm",
)
# Every client interaction on the timeline, calls included, with every record it is bound to; a
# deleted activity vanishes from the list, so activities are reconciled by ID like the CRM entities.
ACTIVITIES = Stream(
    "activities",
    ("activities", "activity_bindings"),
    "changes",
    ListRequest(
        ListSpec("crm.activity.list", {"select": ACTIVITY_SELECT}),
        per_item=ACTIVITY_BINDINGS,
        reconciles=True,
    ),
    p.activity,
    cursor="LAST_UPDATED",
    scope="crm",
)
RECONCILED = ("companies", "contacts", "leads", "deals", "tasks", "activities")
# It also lists tasks: without the task scope the whole reconciliation is skipped.
RECONCILE = Stream("reconcile", RECONCILED, "reconcile", ReconcileRequest(RECONCILED), scope="crm")

STREAMS = [
    USERS,
    PIPELINES,
    COMPANIES,
    CONTACTS,
    LEADS,
    DEALS,
    TASKS,
    CALLS,
    STAGE_HISTORY,
    ACTIVITIES,
    RECONCILE,
]
