"""amoCRM custom fields on contact and company cards: list, create, write KPI values.

Writes go as `PATCH /api/v4/{contacts|companies}` with up to 50 cards per request (amoCRM does
not document a cap for this endpoint; 50 is the limit it documents for its complex lead
creation). A 4xx for a batch of several cards is usually one bad card, and the answer does not
say which: every card of the batch is reported for a retry alone (`adapters.adapter.FieldWriter`
sends them one by one), so the others still land.
"""

from __future__ import annotations

from datetime import datetime
from typing import Callable

from adapters import adapter
from adapters.amocrm.client import problem_text
from adapters.base import CrmField, FieldWrite, WriteResult
from adapters.errors import ScopeError, StreamError

BATCH = 50
PLURAL = {"contact": "contacts", "company": "companies"}


def plural(entity_type: str) -> str:
    try:
        return PLURAL[entity_type]
    except KeyError:
        raise ValueError(f"amoCRM KPI fields live on contact or company cards, not '{entity_type}'") from None


def field_from_amo(item: dict) -> CrmField:
    return CrmField(
        key=str(item["id"]),
        name=item.get("name") or "",
        type=item.get("type") or "",
        code=item.get("code") or None,
    )


def card_value(raw: dict, key: str):
    """A card's value in custom field `key` (its id): the first value of its entry in
    `custom_fields_values`, or None."""
    for f in raw.get("custom_fields_values") or ():
        if str(f.get("field_id")) == str(key):
            values = f.get("values") or [{}]
            return values[0].get("value")
    return None


def format_value(value: float | datetime | None) -> str | None:
    """amoCRM numeric values are sent as strings; no exponent, no trailing zeros. A date as
    RFC 3339 text (`2026-11-23T00:00:00+03:00`), as the official library sends date fields."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.isoformat()
    text = f"{float(value):.6f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def card_patch(write: FieldWrite) -> dict:
    values = []
    for key, value in write.values.items():
        ref = {"field_id": int(key)} if str(key).isdigit() else {"field_code": key}
        text = format_value(value)
        values.append({**ref, "values": None if text is None else [{"value": text}]})
    return {"id": int(write.entity_id), "custom_fields_values": values}


class FieldWriter(adapter.FieldWriter):
    """Field methods of the adapter; `send(method, path, **kw)` is the adapter's HTTP call
    returning (status, parsed JSON or None); `items(path, embedded)` yields collection items."""

    BATCH = BATCH

    def __init__(self, source_name: str, send: Callable, items: Callable):
        self.source_name, self.send, self.items = source_name, send, items

    def list_fields(self, entity_type: str) -> list[CrmField]:
        path = f"/api/v4/{plural(entity_type)}/custom_fields"
        return [field_from_amo(i) for i in self.items(path, "custom_fields")]

    def create_field(self, entity_type: str, code: str, label: str, kind: str = "number") -> CrmField:
        path = f"/api/v4/{plural(entity_type)}/custom_fields"
        amo_type = "date" if kind == "date" else "numeric"
        body = [{"type": amo_type, "name": label, "code": code, "is_api_only": True}]
        status, data = self.send("POST", path, json=body, allow=(400, 403, 422))
        if status == 403:
            raise ScopeError(
                f"amoCRM source '{self.source_name}': creating field '{label}' was "
                f"refused (403); creating custom fields needs an admin's token"
            )
        if status not in (200, 201):
            raise StreamError(
                f"amoCRM source '{self.source_name}': creating field '{label}' "
                f"failed (HTTP {status}: {_problem(data)})"
            )
        try:
            return field_from_amo(data["_embedded"]["custom_fields"][0])
        except (KeyError, IndexError, TypeError):
            raise StreamError(
                f"amoCRM source '{self.source_name}': creating field '{label}': unexpected answer shape"
            ) from None

    def send_batch(self, entity_type: str, writes: list[FieldWrite]) -> list[WriteResult]:
        """One PATCH. A 4xx rejects the whole batch: each card of several may land alone."""
        path = f"/api/v4/{plural(entity_type)}"
        try:
            status, data = self.send(
                "PATCH", path, json=[card_patch(w) for w in writes], allow=(400, 404, 422)
            )
        except StreamError as err:  # persistent 5xx: these cards failed, the next batch may not
            return [WriteResult(w.entity_id, False, str(err)) for w in writes]
        if status == 200:
            return [WriteResult(w.entity_id, True) for w in writes]
        error, alone = f"HTTP {status}: {_problem(data)}", len(writes) > 1 and 400 <= status < 500
        return [WriteResult(w.entity_id, False, error, retry_alone=alone) for w in writes]


def _problem(data) -> str:
    """A short, secret-free summary of an amoCRM problem+json body."""
    return (problem_text(data) if isinstance(data, dict) else None) or "no details"
