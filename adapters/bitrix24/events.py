"""Bitrix24 event deliveries and offline events, read into `Change`s: pure, no HTTP.

A handler bound with `event.bind` (an app) or an outgoing webhook (set up in Bitrix24's UI)
receives one form-encoded POST per event:

    event=ONCRMDEALUPDATE&event_handler_id=7&data[FIELDS][ID]=1000001&ts=1796530331
    &auth[domain]=portal.bitrix24.com&auth[member_id]=...&auth[application_token]=...

Task events carry the id in `data[FIELDS_AFTER][ID]` (in `data[FIELDS_BEFORE][ID]` for a
deletion, whose FIELDS_AFTER is "undefined"). Event names come upper case or as the docs spell
some (`onCrmActivityUpdate`): compared upper-cased. Nothing in a delivery is trusted but the
object's id: `auth[application_token]` must equal the source's `application_token` (the token
the app received at installation, or the one shown for the outgoing webhook), and the record
is read back from the API (`Bitrix24Adapter.read_changes`).

Offline events (`event.offline.get`) hold the same `EVENT_NAME` and `EVENT_DATA` per entry, one
entry per changed object.

A call is an activity on the timeline: its events are `ONCRMACTIVITY*` with the activity's id
and name the `activities` record; the `calls` record whose `CRM_ACTIVITY_ID` it is gets re-read
beside it (`read_changes`), since a call's deal comes from its activity.
"""

from __future__ import annotations

import hmac

from adapters.hooks import Change, HookRefused
from adapters.values import to_int

# event (upper case) -> (mirror table, whether it says the record was deleted)
EVENTS: dict[str, tuple[str, bool]] = {
    **{
        f"{prefix}{what}": (table, what == "DELETE")
        for prefix, table in (
            ("ONCRMDEAL", "deals"),
            ("ONCRMLEAD", "leads"),
            ("ONCRMCONTACT", "contacts"),
            ("ONCRMCOMPANY", "companies"),
            ("ONCRMACTIVITY", "activities"),
            ("ONTASK", "tasks"),
        )
        for what in ("ADD", "UPDATE", "DELETE")
    },
    "ONCRMDEALMOVETOCATEGORY": ("deals", False),
}
# What `install_hooks` binds, online and offline alike.
BOUND = (
    "ONCRMDEALADD",
    "ONCRMDEALUPDATE",
    "ONCRMDEALDELETE",
    "ONCRMCONTACTADD",
    "ONCRMCONTACTUPDATE",
    "ONCRMCONTACTDELETE",
    "ONCRMCOMPANYADD",
    "ONCRMCOMPANYUPDATE",
    "ONCRMCOMPANYDELETE",
    "ONCRMLEADADD",
    "ONCRMLEADUPDATE",
    "ONCRMLEADDELETE",
    "ONCRMACTIVITYADD",
    "ONCRMACTIVITYUPDATE",
    "ONTASKADD",
    "ONTASKUPDATE",
    "ONTASKDELETE",
)
TOKEN = "auth[application_token]"
# The key our offline bindings carry (event.bind auth_connector) and every write of ours sends
# (a REST call's auth_connector): the portal records no offline event for a change made by a
# call carrying it, so our own write-back never fills the offline queue we catch up from.
AUTH_CONNECTOR = "crm_connector"


def check_token(pairs: list[tuple[str, str]], expected: str | None, source: str) -> None:
    """Refuse a delivery whose `auth[application_token]` is not the source's (compared in
    constant time); refuse all when the source has none configured."""
    who = f"Bitrix24 source '{source}'"
    if not expected:
        raise HookRefused(
            f"{who}: no application_token is set, so no delivery can be trusted; "
            "set it to the token of the app or outgoing webhook sending events"
        )
    given = [v for k, v in pairs if k == TOKEN]
    if len(given) != 1:
        raise HookRefused(f"{who}: the delivery carries {'no' if not given else 'more than one'} {TOKEN}")
    if not hmac.compare_digest(given[0].encode(), expected.encode()):
        raise HookRefused(f"{who}: the delivery's application_token is not the source's")


def nest(pairs: list[tuple[str, str]]) -> dict:
    """PHP-style form keys as nested dicts: data[FIELDS][ID]=5 -> {"data": {"FIELDS": {"ID": "5"}}}.
    A key given twice is a shape no portal sends: ValueError."""
    out: dict = {}
    for key, value in pairs:
        head, _, rest = key.partition("[")
        path = [head] + ([p.rstrip("]") for p in ("[" + rest).split("[")[1:]] if rest else [])
        node = out
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ValueError(key)
            node = child
        if path[-1] in node:
            raise ValueError(key)
        node[path[-1]] = value
    return out


def object_id(data) -> int | None:
    """The changed object's id in an event's `data` (CRM: FIELDS; tasks: FIELDS_AFTER, for a
    deletion FIELDS_BEFORE)."""
    if not isinstance(data, dict):
        return None
    for part in ("FIELDS", "FIELDS_AFTER", "FIELDS_BEFORE"):
        fields = data.get(part)
        if isinstance(fields, dict):
            oid = to_int(fields.get("ID"))
            if oid and oid > 0:
                return oid
    return None


def change_of(event: str, data) -> Change | None:
    """The `Change` an event names; None for an event the mirror does not follow. ValueError
    when a followed event has no readable object id."""
    followed = EVENTS.get(str(event).upper())
    if followed is None:
        return None
    oid = object_id(data)
    if oid is None:
        raise ValueError(f"{str(event).upper()} without an object id")
    return Change(followed[0], oid, followed[1])


def parse_delivery(pairs: list[tuple[str, str]], token: str | None, source: str) -> list[Change]:
    """One POST to the handler -> its Change (none for an event not followed)."""
    check_token(pairs, token, source)
    try:
        body = nest(pairs)
    except ValueError:
        raise HookRefused(
            f"Bitrix24 source '{source}': a delivery repeats a key, which no portal sends"
        ) from None
    event = body.get("event")
    if not isinstance(event, str) or not event:
        raise HookRefused(f"Bitrix24 source '{source}': the delivery names no event")
    try:
        change = change_of(event, body.get("data"))
    except ValueError as err:
        raise HookRefused(f"Bitrix24 source '{source}': {err}") from None
    return [change] if change else []


def offline_changes(events: list) -> tuple[list[Change], int]:
    """`event.offline.get` entries -> their Changes (one per record, the latest entry's say
    on deletion wins), and how many followed entries named no readable object."""
    out: dict[tuple[str, int], Change] = {}
    unreadable = 0
    for e in events if isinstance(events, list) else []:
        if not isinstance(e, dict):
            unreadable += 1
            continue
        try:
            change = change_of(str(e.get("EVENT_NAME") or ""), e.get("EVENT_DATA"))
        except ValueError:
            unreadable += 1
            continue
        if change is not None:
            out.pop((change.table, change.id), None)
            out[(change.table, change.id)] = change
    return list(out.values()), unreadable
