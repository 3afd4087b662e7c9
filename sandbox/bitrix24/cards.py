"""The Bitrix24 sandbox's card methods: one record by id, a deal's contacts, custom field
definitions (list and add), write-back (`crm.contact.update`, `crm.company.update`), and
the webhook user's `profile`.

Each takes (portal, params) and returns a `Reply`; `methods.METHODS` names them.
The `make_*` factories build one method per entity.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from .lists import dict_list
from .params import ci_get
from .portal import Portal, Reply
from .query import ApiError, render, select_fields
from .render import _MSK_S as MSK_S
from .render import TYPE_UF, UF_TYPE, portal_midnight


def _card(p: Portal, entity: str, table: str, id_) -> dict:
    try:
        row = p.ds.by_id(table).get(int(id_))
    except (TypeError, ValueError):
        row = None
    if row is None or row.get("is_deleted"):
        raise ApiError("", "Not found")
    return row


def make_get(entity, table, extra=()):
    def method(p, params):
        spec = p.spec(entity)
        with p.ds.lock:
            row = _card(p, entity, table, ci_get(params, "id"))
            fields = select_fields(spec, ["*", "UF_*", *extra], "old")
            return Reply(render([row], fields)[0])

    return method


def deal_contact_items_get(p, params):
    with p.ds.lock:
        deal = _card(p, "deal", "deals", ci_get(params, "id"))
        items = [
            {"CONTACT_ID": cid, "SORT": 10 * (i + 1), "ROLE_ID": 0, "IS_PRIMARY": "Y" if i == 0 else "N"}
            for i, cid in enumerate(deal["contact_ids"])
        ]
    return Reply(items)


def _uf_row(etype: str, name: str, f: dict) -> dict:
    label = f["name"]
    utype = f.get("b24_type") or TYPE_UF.get(f["type"], "string")
    row = {
        "ID": str(f["id"]),
        "ENTITY_ID": "CRM_" + etype.upper(),
        "FIELD_NAME": name,
        "USER_TYPE_ID": utype,
        "XML_ID": f.get("xml_id"),
        "SORT": "100",
        "MULTIPLE": "N",
        "MANDATORY": "N",
        "SHOW_FILTER": "N",
        "SHOW_IN_LIST": "Y",
        "EDIT_IN_LIST": "Y",
        "IS_SEARCHABLE": "N",
        "SETTINGS": {"PRECISION": 2, "DEFAULT_VALUE": None} if utype == "double" else {},
        "EDIT_FORM_LABEL": label,
        "LIST_COLUMN_LABEL": label,
        "LIST_FILTER_LABEL": label,
    }
    if f.get("enums"):
        row["LIST"] = [
            {
                "ID": str(e["id"]),
                "VALUE": e["value"],
                "SORT": str(10 * (i + 1)),
                "DEF": "N",
                "XML_ID": e["value"],
            }
            for i, e in enumerate(f["enums"])
        ]
    return row


def make_userfield_list(etype):
    def method(p, params):
        with p.ds.lock:
            rows = [_uf_row(etype, n, f) for n, f in p.vocab.uf_fields(etype)]
        rows = dict_list(rows, params, None)
        return Reply(rows, len(rows))

    return method


def _label(fields: dict, fallback: str) -> str:
    for key in ("EDIT_FORM_LABEL", "LABEL", "LIST_COLUMN_LABEL"):
        v = fields.get(key)
        if isinstance(v, dict):
            v = v.get("en") or v.get("ru") or next(iter(v.values()), None)
        if v:
            return str(v)
    return fallback


def make_userfield_add(etype):
    def method(p, params):
        fields = ci_get(params, "fields")
        if not isinstance(fields, dict):
            raise ApiError("", "Parameter 'fields' must be array.")
        utype = str(fields.get("USER_TYPE_ID") or "")
        if not utype:
            raise ApiError("", "The 'USER_TYPE_ID' field is not found.")
        raw = str(fields.get("FIELD_NAME") or "").upper()
        # The API always prepends UF_CRM_ (KPI_X and UF_KPI_X both become UF_CRM_KPI_X).
        base = raw[7:] if raw.startswith("UF_CRM_") else raw[3:] if raw.startswith("UF_") else raw
        name = "UF_CRM_" + base
        if not base or not re.fullmatch(r"[A-Z0-9_]+", base) or len(name) > 50:
            raise ApiError(
                "ERROR_CORE",
                "Invalid field name: use A-Z, 0-9 and _ (at most 50 characters with the UF_CRM_ prefix).",
            )
        with p.ds.lock:
            if any(n == name for n, _ in p.vocab.uf_fields(etype)):
                raise ApiError("ERROR_CORE", f"A field with the code {name} already exists.")
            f = p.ds.add_field(
                etype, _label(fields, name), UF_TYPE.get(utype, "text"), code=name, b24_type=utype
            )
        return Reply(f["id"])

    return method


def make_update(etype, table, standard: dict):
    def method(p, params):
        fields = ci_get(params, "fields")
        if not isinstance(fields, dict) or not fields:
            raise ApiError("", "Parameter 'fields' must be array.")
        with p.ds.lock:
            row = _card(p, etype, table, ci_get(params, "id"))
            ufs = dict(p.vocab.uf_fields(etype))
            custom, plain = {}, {}
            for key, value in fields.items():  # validate everything before writing anything
                key = str(key).upper()
                if key in ufs:
                    custom[ufs[key]["id"]] = _uf_value(key, ufs[key], value)
                elif key in standard:
                    plain[standard[key]] = _std_value(standard[key], value)
                # unknown keys are ignored, as the real API does
            if custom:  # one write, one tick: one update of the card, as the portal sees it
                p.ds.write_customs(etype, {row["id"]: custom})
            if plain:
                if "first_name" in plain or "last_name" in plain:
                    plain["name"] = " ".join(
                        filter(
                            None,
                            (
                                plain.get("first_name", row.get("first_name")),
                                plain.get("last_name", row.get("last_name")),
                            ),
                        )
                    )
                p.ds.update(table, row["id"], **plain)
        return Reply(True)

    return method


def _uf_value(name: str, f: dict, value):
    if isinstance(value, list):  # a single-value field given as a one-item list
        value = value[0] if value else None
    if value is None or value == "":
        return None
    if f["type"] == "numeric":
        try:
            v = float(str(value).strip())
        except ValueError:
            raise ApiError("", f"Field '{name}': value must be a number.") from None
        return int(v) if f.get("b24_type") == "integer" else v
    if f["type"] == "date":
        return _uf_date(name, value)
    if f["type"] == "select" and f.get("enums"):
        for e in f["enums"]:  # enumerations are written by enum id
            if str(value) in (str(e["id"]), e["value"]):
                return e["value"]
        raise ApiError("", f"Field '{name}': unknown list value.")
    return str(value)


def _uf_date(name: str, value) -> int:
    """A `date` field's value, kept as the start of its day in the portal's zone (Unix seconds)
    and read back as `2026-11-23T00:00:00+03:00`. Taken: ISO 8601 (`2026-11-23`, or with a time
    and offset) or the portal's own format (`23.11.2026`); anything else is refused."""
    text = str(value).strip()
    m = re.fullmatch(r"(\d{2})\.(\d{2})\.(\d{4})", text)
    if m:
        text = f"{m.group(3)}-{m.group(2)}-{m.group(1)}"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ApiError("", f"Field '{name}': invalid date '{value}'.") from None
    if moment.tzinfo is None:  # a bare date (or time) is the portal's
        moment = moment.replace(tzinfo=timezone(timedelta(seconds=MSK_S)))
    return portal_midnight(int(moment.timestamp()))


def _std_value(col: str, value):
    if col.endswith("_id"):
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ApiError("", f"Invalid value for {col}.") from None
    return str(value)


# ---- misc ---------------------------------------------------------------------------------


def profile(p, params):
    u = p.ds.by_id("users").get(p.user_id) or p.ds.users[0]
    first, _, last = u["name"].partition(" ")
    return Reply(
        {
            "ID": u["id"],
            "ADMIN": True,
            "NAME": first,
            "LAST_NAME": last,
            "PERSONAL_GENDER": "",
            "TIME_ZONE": "Europe/Moscow",
            "TIME_ZONE_OFFSET": 10800,
        }
    )
