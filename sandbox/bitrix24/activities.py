"""The Bitrix24 sandbox's timeline activities and deal/lead sources.

`crm.activity.list` lists every activity of the portal in one id sequence: each call
(`TYPE_ID` 2, provider `VOXIMPLANT_CALL`, its id is the `voximplant.statistic.get` row's
`CRM_ACTIVITY_ID`) and each other interaction of the dataset: meetings (1), e-mails (4) and
provider activities (6): open-lines chats (`IMOPENLINES_SESSION`) and SMS (`CRM_SMS`).
`DIRECTION` 1 incoming, 2 outgoing, 0 none (meetings). A deleted activity vanishes from the
list, as on a real portal. A planned activity (the dataset's `planned`: a meeting or call set
for a later day) has `COMPLETED` N and its START_TIME ahead; every other one is done (Y).

Bindings: an activity can be bound to several CRM records (the docs' example: a call bound
to a lead, a deal and a contact). `crm.activity.list` has no bindings column (`BINDINGS` is
a filter key in the docs, not a returned field); `crm.activity.binding.list` answers for one
activity: `[{"entityTypeId", "entityId"}]`, the owner first. A call's activity is bound to its
own record and to the call's CRM entity (`voximplant.statistic.get` names a CONTACT, COMPANY
or LEAD only: a call on a deal names the deal's contact, else its company); any activity also
to the dataset's `also` records.

Deals and leads: `SOURCE_ID` is the CRM's own source (a `crm.status.list` SOURCE code);
`UTM_SOURCE` is free text as the form or link carried it; both are in the `*` set, as the
docs' `crm.deal.list` sample shows.
"""

from __future__ import annotations

from .spec import Field, Spec

OWNER_TYPE = {"lead": 1, "deal": 2, "contact": 3, "company": 4}  # OWNER_TYPE_ID
# dataset channel -> TYPE_ID, PROVIDER_ID, PROVIDER_TYPE_ID
KINDS = {
    "call": (2, "VOXIMPLANT_CALL", "CALL"),
    "meeting": (1, "CRM_MEETING", "MEETING"),
    "email": (4, "CRM_EMAIL", "EMAIL"),
    "chat": (6, "IMOPENLINES_SESSION", "1"),
    "sms": (6, "CRM_SMS", "SMS"),
}
DIRECTION = {"in": 1, "out": 2, None: 0}
# The dataset's neutral source names as Bitrix24 SOURCE_ID codes (crm.status.list SOURCE).
SOURCE_IDS = {
    "website": "WEB",
    "referral": "RECOMMENDATION",
    "cold call": "CALL",
    "exhibition": "TRADE_SHOW",
    "advert": "ADVERTISING",
}


def rows(ds) -> list[dict]:
    """Every activity in id order: each call seen as an activity (`call_activity`), merged with
    the other interactions (one id sequence, see `sandbox.data_interactions`)."""
    calls = [call_activity(c) for c in ds.calls if c.get("activity_id")]
    return sorted(calls + ds.activities, key=lambda r: r["id"])


def call_entity(c: dict) -> tuple[str | None, int | None]:
    """The CRM entity `voximplant.statistic.get` names for a call: CONTACT, COMPANY or LEAD
    only: the record its number belongs to (the dataset's `caller`; for a deal's call the
    deal's contact or company when the call was logged)."""
    return tuple(c.get("caller") or (None, None))


def bindings(r: dict) -> list[tuple[str, int]]:
    """Every record an activity row is bound to, its owner first, each once."""
    out = [(r["entity_type"], r["entity_id"])] if r.get("entity_type") and r.get("entity_id") else []
    out += [tuple(b) for b in r.get("also") or ()]
    return list(dict.fromkeys(out))


def call_activity(c: dict) -> dict:
    """A dataset call as its timeline activity."""
    crm = call_entity(c)
    return {
        "id": c["activity_id"],
        "channel": "call",
        "direction": c["direction"],
        "at": c["started_at"],
        "end": c["started_at"] + c["duration_s"],
        "updated_at": c["started_at"] + c["duration_s"],
        "responsible_user_id": c["responsible_user_id"],
        "entity_type": c["entity_type"],
        "entity_id": c["entity_id"],
        "subject": ("Outgoing" if c["direction"] == "out" else "Incoming") + " call " + (c["phone"] or ""),
        "origin": f"VI_externalcall.{c['id']:x}",
        "also": ([crm] if crm[0] else []) + list(c.get("also") or ()),
    }


def _end(r) -> int:
    return r.get("end") or r["at"] + 1800 * (r["channel"] == "meeting")


def _origin(r) -> str:
    return r.get("origin") or f"sbx.{r['channel']}.{r['id']}"


def activity_spec() -> Spec:
    return Spec(
        [
            Field("ID", None, "id"),
            Field("OWNER_TYPE_ID", None, lambda r: OWNER_TYPE.get(r["entity_type"], 0)),
            Field("OWNER_ID", None, lambda r: r["entity_id"] or 0),
            Field("TYPE_ID", None, lambda r: KINDS[r["channel"]][0]),
            Field("PROVIDER_ID", None, lambda r: KINDS[r["channel"]][1], "str"),
            Field("PROVIDER_TYPE_ID", None, lambda r: KINDS[r["channel"]][2], "str"),
            Field("SUBJECT", None, "subject", "str"),
            Field("DIRECTION", None, lambda r: DIRECTION[r["direction"]]),
            Field("RESPONSIBLE_ID", None, "responsible_user_id"),
            Field("COMPLETED", None, lambda r: "N" if r.get("planned") else "Y", "yn"),
            Field("START_TIME", None, "at", "date"),
            Field("END_TIME", None, _end, "date"),
            Field("CREATED", None, lambda r: r.get("created_at") or r["at"], "date"),
            Field("LAST_UPDATED", None, "updated_at", "date"),
            Field("ORIGIN_ID", None, _origin, "str"),
        ]
    )


def source_fields() -> list[Field]:
    """SOURCE_ID and UTM_SOURCE of a deal or lead."""
    return [
        Field("SOURCE_ID", "sourceId", lambda r: SOURCE_IDS.get(r.get("source")), "str"),
        Field("UTM_SOURCE", "utmSource", lambda r: r.get("utm_source"), "str"),
    ]
