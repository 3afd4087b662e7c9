"""Custom (UF_CRM_*) fields on contacts and companies: list, create, write KPI values.

Writes go as `crm.{contact,company}.update` sub-calls of `batch`, 50 per request, with
REGISTER_HISTORY_EVENT=N so KPI updates do not flood the card history, and with the
`auth_connector` our offline event bindings carry, so the portal queues no offline event for
them (`adapters.bitrix24.subscribe`). A sub-call the CRM rejects, or every card of a batch
request that failed short of the credentials, is reported for a retry alone
(`adapters.adapter.FieldWriter` sends it once more, as a plain call); its failure never stops
the other cards.
"""

from __future__ import annotations

import re
from datetime import datetime

from adapters import adapter
from adapters.base import CrmField, FieldWrite, WriteResult
from adapters.bitrix24.client import MAX_BATCH, Bitrix24Client
from adapters.bitrix24.events import AUTH_CONNECTOR
from adapters.errors import AuthError, BlockedError, SourceError

ENTITIES = ("contact", "company")
UNCONFIRMED = "the CRM did not confirm the update"


def _entity(entity_type: str) -> str:
    if entity_type not in ENTITIES:
        raise ValueError(f"custom fields are kept on contact or company cards, not {entity_type!r}")
    return entity_type


def _label(row: dict) -> str:
    for k in ("EDIT_FORM_LABEL", "LIST_COLUMN_LABEL", "LIST_FILTER_LABEL"):
        v = row.get(k)
        if isinstance(v, dict):  # a language map
            v = v.get("en") or v.get("ru") or next((x for x in v.values() if x), None)
        if v:
            return str(v)
    return row.get("FIELD_NAME", "")


def to_field(row: dict) -> CrmField:
    name = row.get("FIELD_NAME", "")
    return CrmField(
        key=name,
        name=_label(row),
        type=row.get("USER_TYPE_ID", ""),
        code=name[len("UF_CRM_") :] if name.startswith("UF_CRM_") else name,
    )


def list_fields(client: Bitrix24Client, entity_type: str) -> list[CrmField]:
    env = client.call(f"crm.{_entity(entity_type)}.userfield.list", {"filter": {"LANG": "en"}})
    rows = env.get("result") or []
    if isinstance(rows, dict):
        rows = list(rows.values())
    return [to_field(r) for r in rows if isinstance(r, dict)]


def create_field(
    client: Bitrix24Client, entity_type: str, code: str, label: str, kind: str = "number"
) -> CrmField:
    """A `double` field (a `date` one for `kind="date"`) named UF_CRM_{code} (the API adds the
    UF_CRM_ prefix itself)."""
    base = re.sub(r"^(UF_CRM_|UF_)", "", code.upper())
    utype = "date" if kind == "date" else "double"
    fields = {
        "USER_TYPE_ID": utype,
        "FIELD_NAME": base,
        "LABEL": label,
        "EDIT_FORM_LABEL": label,
        "LIST_COLUMN_LABEL": label,
        "LIST_FILTER_LABEL": label,
        "MULTIPLE": "N",
        "MANDATORY": "N",
        "SHOW_FILTER": "Y",
        "SHOW_IN_LIST": "Y",
        "EDIT_IN_LIST": "N",
        "SETTINGS": {"PRECISION": 4} if utype == "double" else {},
    }
    client.call(f"crm.{_entity(entity_type)}.userfield.add", {"fields": fields})
    return CrmField(key="UF_CRM_" + base, name=label, type=utype, code=base)


def _command(entity_type: str, w: FieldWrite) -> tuple[str, dict]:
    # None clears the field; Bitrix24 takes an empty string for that. A date goes as ISO 8601
    # `2026-11-23`: a date-only field keeps no time.
    values = {
        k: "" if v is None else v.date().isoformat() if isinstance(v, datetime) else v
        for k, v in w.values.items()
    }
    return (
        f"crm.{entity_type}.update",
        {
            "id": w.entity_id,
            "fields": values,
            "params": {"REGISTER_HISTORY_EVENT": "N", "REGISTER_SONET_EVENT": "N"},
            "auth_connector": AUTH_CONNECTOR,
        },
    )


class FieldWriter(adapter.FieldWriter):
    """The adapter's field methods, on one portal's client."""

    BATCH = MAX_BATCH

    def __init__(self, client: Bitrix24Client):
        self.client = client

    def list_fields(self, entity_type: str) -> list[CrmField]:
        return list_fields(self.client, entity_type)

    def create_field(self, entity_type: str, code: str, label: str, kind: str = "number") -> CrmField:
        return create_field(self.client, entity_type, code, label, kind)

    def send_batch(self, entity_type: str, writes: list[FieldWrite]) -> list[WriteResult]:
        """One `batch` of update sub-calls; a card whose sub-call failed or was not confirmed,
        or every card when the request failed (not for the credentials), may land alone."""
        _entity(entity_type)
        cmds = {f"w{i}": _command(entity_type, w) for i, w in enumerate(writes)}
        try:
            res = self.client.batch(cmds)
        except SourceError as err:
            if isinstance(err, (AuthError, BlockedError)):
                raise
            return [WriteResult(w.entity_id, False, str(err), retry_alone=True) for w in writes]
        out = []
        for i, w in enumerate(writes):
            e = res.errors.get(f"w{i}")
            if e is None and res.results.get(f"w{i}") not in (None, False):
                out.append(WriteResult(w.entity_id, True))
            else:
                why = f"{e.code} {e.description}".strip() if e else UNCONFIRMED
                out.append(WriteResult(w.entity_id, False, why, retry_alone=True))
        return out

    def send_alone(self, entity_type: str, write: FieldWrite) -> WriteResult:
        """The card's update as a plain call."""
        method, params = _command(entity_type, write)
        try:
            env = self.client.call(method, params)
        except SourceError as err:
            if isinstance(err, (AuthError, BlockedError)):
                raise
            return WriteResult(write.entity_id, False, str(err))
        ok = env.get("result") not in (None, False)
        return WriteResult(write.entity_id, ok, None if ok else UNCONFIRMED)
