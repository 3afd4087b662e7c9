"""The REST methods the Bitrix24 sandbox serves: `METHODS` maps each name to its function.

A method takes (portal, params) and returns a `Reply`, or raises `ApiError`. `portal` is
the server's read view of the dataset (`Portal`: spec per entity, id vocabulary). List
methods live in `lists`, card, custom-field and write-back methods in `cards`, the event
methods (`event.bind`, `event.offline.get`, ...) in `events`.
"""

from __future__ import annotations

from .cards import (
    deal_contact_items_get,
    make_get,
    make_update,
    make_userfield_add,
    make_userfield_list,
    profile,
)
from .events import METHODS as EVENT_METHODS
from .lists import (
    activity_list,
    binding_list,
    category_list,
    company_list,
    contact_list,
    deal_list,
    item_list,
    lead_list,
    stagehistory_list,
    status_list,
    task_list,
    user_get,
    voximplant_statistic_get,
)
from .portal import Portal, Reply

__all__ = ["METHODS", "Portal", "Reply", "scope_of"]

METHODS = {
    "crm.deal.list": deal_list,
    "crm.lead.list": lead_list,
    "crm.contact.list": contact_list,
    "crm.company.list": company_list,
    "crm.item.list": item_list,
    "crm.category.list": category_list,
    "crm.status.list": status_list,
    "crm.deal.contact.items.get": deal_contact_items_get,
    "crm.stagehistory.list": stagehistory_list,
    "crm.activity.list": activity_list,
    "crm.activity.binding.list": binding_list,
    "tasks.task.list": task_list,
    "voximplant.statistic.get": voximplant_statistic_get,
    "user.get": user_get,
    "crm.deal.get": make_get("deal", "deals"),
    "crm.lead.get": make_get("lead", "leads"),
    "crm.contact.get": make_get("contact", "contacts", ("PHONE", "EMAIL")),
    "crm.company.get": make_get("company", "companies"),
    "crm.contact.userfield.list": make_userfield_list("contact"),
    "crm.company.userfield.list": make_userfield_list("company"),
    "crm.contact.userfield.add": make_userfield_add("contact"),
    "crm.company.userfield.add": make_userfield_add("company"),
    "crm.contact.update": make_update(
        "contact",
        "contacts",
        {"NAME": "first_name", "LAST_NAME": "last_name", "ASSIGNED_BY_ID": "responsible_user_id"},
    ),
    "crm.company.update": make_update(
        "company", "companies", {"TITLE": "name", "ASSIGNED_BY_ID": "responsible_user_id"}
    ),
    "profile": profile,
    **EVENT_METHODS,
}

# Which webhook/OAuth scope each method needs (None: always allowed).
SCOPE_PREFIXES = (
    ("crm.", "crm"),
    ("tasks.", "task"),
    ("task.", "task"),
    ("user.", "user"),
    ("voximplant.", "telephony"),
    ("telephony.", "telephony"),
)


def scope_of(method: str) -> str | None:
    for prefix, scope in SCOPE_PREFIXES:
        if method.startswith(prefix):
            return scope
    return None
