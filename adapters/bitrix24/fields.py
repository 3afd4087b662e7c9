"""Custom (UF_CRM_*) fields on contacts and companies: list, create, write KPI values.

Writes go as `crm.{contact,company}.update` sub-calls of `batch`, 50 per request, with
REGISTER_HISTORY_EVENT=N so KPI updates do not flood the card history. A sub-call the CRM
rejects is retried alone once; its failure never stops the other cards.
"""

from __future__ import annotations

import re

from adapters.base import CrmField, FieldWrite, WriteResult
from adapters.bitrix24.client import MAX_BATCH, Bitrix24Client
from adapters.errors import AuthError, BlockedError, SourceError

ENTITIES = ("contact", "company")


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
    return CrmField(key=name, name=_label(row), type=row.get("USER_TYPE_ID", ""),
                    code=name[len("UF_CRM_"):] if name.startswith("UF_CRM_") else name)


def list_fields(client: Bitrix24Client, entity_type: str) -> list[CrmField]:
    env = client.call(f"crm.{_entity(entity_type)}.userfield.list", {"filter": {"LANG": "en"}})
    rows = env.get("result") or []
    if isinstance(rows, dict):
        rows = list(rows.values())
    return [to_field(r) for r in rows if isinstance(r, dict)]


def create_field(client: Bitrix24Client, entity_type: str, code: str, label: str) -> CrmField:
    """A `double` field named UF_CRM_{code} (the API adds the UF_CRM_ prefix itself)."""
    base = re.sub(r"^(UF_CRM_|UF_)", "", code.upper())
    fields = {"USER_TYPE_ID": "double", "FIELD_NAME": base, "LABEL": label,
              "EDIT_FORM_LABEL": label, "LIST_COLUMN_LABEL": label, "LIST_FILTER_LABEL": label,
              "MULTIPLE": "N", "MANDATORY": "N", "SHOW_FILTER": "Y", "SHOW_IN_LIST": "Y",
              "EDIT_IN_LIST": "N", "SETTINGS": {"PRECISION": 4}}
    client.call(f"crm.{_entity(entity_type)}.userfield.add", {"fields": fields})
    return CrmField(key="UF_CRM_" + base, name=label, type="double", code=base)


def _command(entity_type: str, w: FieldWrite) -> tuple[str, dict]:
    # None clears the field; Bitrix24 takes an empty string for that.
    values = {k: ("" if v is None else v) for k, v in w.values.items()}
    return (f"crm.{entity_type}.update",
            {"id": w.entity_id, "fields": values,
             "params": {"REGISTER_HISTORY_EVENT": "N", "REGISTER_SONET_EVENT": "N"}})


def write_values(client: Bitrix24Client, entity_type: str,
                 writes: list[FieldWrite]) -> list[WriteResult]:
    _entity(entity_type)
    results: dict[int, WriteResult] = {}
    retry: list[int] = []
    for start in range(0, len(writes), MAX_BATCH):
        chunk = list(enumerate(writes[start:start + MAX_BATCH], start))
        cmds = {f"w{i}": _command(entity_type, w) for i, w in chunk}
        try:
            res = client.batch(cmds)
        except SourceError as err:
            if isinstance(err, (AuthError, BlockedError)):
                raise
            retry.extend(i for i, _ in chunk)  # the whole batch failed: try each card alone
            continue
        for i, w in chunk:
            key = f"w{i}"
            if key in res.errors or res.results.get(key) in (None, False):
                retry.append(i)
            else:
                results[i] = WriteResult(w.entity_id, True)
    for i in retry:
        w = writes[i]
        method, params = _command(entity_type, w)
        try:
            env = client.call(method, params)
            ok = env.get("result") not in (None, False)
            results[i] = WriteResult(w.entity_id, ok, None if ok else "the CRM did not confirm the update")
        except SourceError as err:
            if isinstance(err, (AuthError, BlockedError)):
                raise
            results[i] = WriteResult(w.entity_id, False, str(err))
    return [results[i] for i in range(len(writes))]


class FieldWriter:
    """The adapter's field methods, on one portal's client."""

    def __init__(self, client: Bitrix24Client):
        self.client = client

    def list_fields(self, entity_type: str) -> list[CrmField]:
        return list_fields(self.client, entity_type)

    def create_field(self, entity_type: str, code: str, label: str) -> CrmField:
        return create_field(self.client, entity_type, code, label)

    def write_values(self, entity_type: str, writes: list[FieldWrite]) -> list[WriteResult]:
        return write_values(self.client, entity_type, writes)
