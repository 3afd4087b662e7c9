"""The REST methods the Bitrix24 sandbox serves, one small function each.

A method takes (portal, params) and returns a `Reply`, or raises `ApiError`. `portal` is
the server's read view of the dataset (`Portal` below): spec per entity, id vocabulary.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .bitrix24_pages import PageCache
from .bitrix24_params import ci_get
from .bitrix24_query import (PAGE, ApiError, compile_filter, parse_order, parse_start, render,
                             run_list, select_fields)
from .bitrix24_render import (EXTRA_SEMANTICS, LEAD_STATUSES, SEMANTIC,
                              STATUS_SEMANTICS, TYPE_UF, UF_TYPE, Field, Spec, Vocab,
                              build_specs)


@dataclass
class Reply:
    result: object
    total: int | None = None
    next: int | None = None
    page: str | None = None      # "fast" / "counted" list page, for the cost model
    table: int = 0               # rows in the table behind a counted page

    @classmethod
    def listing(cls, result, total: int | None, start: int, table: int, wrap: str | None = None):
        body = {wrap: result} if wrap else result
        if total is None:  # start=-1: counting switched off
            return cls(body, 0, None, "fast", table)
        nxt = start + PAGE if start + PAGE < total else None
        return cls(body, total, nxt, "counted", table)


class Portal:
    """The dataset as the Bitrix24 server renders it."""

    def __init__(self, ds):
        self.ds = ds
        self.vocab = Vocab(ds)
        self.user_id = None          # the webhook's user, set by the server
        self._factories = build_specs(self.vocab)
        self._cache: dict[str, tuple[int, Spec]] = {}
        self._history: dict[str, tuple[int, list]] = {}
        self._selects: dict[tuple, tuple] = {}
        self.pages = PageCache(ds)

    def select(self, spec: Spec, select, names: str, default_all: bool) -> list[tuple]:
        """`select_fields`, remembered: the 50 sub-calls of a batch mostly repeat one select."""
        key = (id(spec), names, default_all, repr(select))
        hit = self._selects.get(key)
        if hit is None or hit[0] is not spec:
            if len(self._selects) > 256:
                self._selects.clear()
            hit = self._selects[key] = (spec, select_fields(spec, select, names, default_all))
        return hit[1]

    def spec(self, entity: str) -> Spec:
        if entity not in ("contact", "company"):
            return self._factories[entity]()
        n = len(self.ds.fields[entity])  # fields are only ever added
        hit = self._cache.get(entity)
        if hit is None or hit[0] != n:
            hit = self._cache[entity] = (n, self._factories[entity]())
        return hit[1]

    def history(self, kind: str) -> list[dict]:
        """Stage history rows for deals or leads (derived, cached per dataset version)."""
        ds = self.ds
        key = "stage_changes" if kind == "deal" else "leads"
        ver = ds.versions[key]
        hit = self._history.get(kind)
        if hit is None or hit[0] != ver:
            rows = _deal_history(ds, self.vocab) if kind == "deal" else _lead_history(ds)
            hit = self._history[kind] = (ver, rows)
        return hit[1]


def _alive(r) -> bool:
    return not r.get("is_deleted")


def _deal_history(ds, v: Vocab) -> list[dict]:
    out = []
    for c in ds.stage_changes:
        pipeline, stage = ds.stage(c["stage_id"])
        prev = c["previous_stage_id"]
        if prev is None:
            type_id = 1
        elif ds.stage(prev)[0]["id"] != pipeline["id"]:
            type_id = 5
        else:
            type_id = 3 if stage["semantics"] != "open" else 2
        out.append({"id": c["id"], "type_id": type_id, "owner_id": c["deal_id"],
                    "at": c["changed_at"], "category_id": v.category(pipeline["id"]),
                    "semantic": SEMANTIC[stage["semantics"]], "stage": v.stage_code[c["stage_id"]]})
    return out


def _lead_history(ds) -> list[dict]:
    """Leads carry no history in the dataset: created, then closed if closed."""
    out = []
    sem = {"open": "P", "converted": "S", "junk": "F"}
    for lead in ds.leads:
        out.append({"id": lead["id"] * 2, "type_id": 1, "owner_id": lead["id"],
                    "at": lead["created_at"], "semantic": "P", "stage": "NEW"})
        if lead["closed_at"] is not None:
            out.append({"id": lead["id"] * 2 + 1, "type_id": 3, "owner_id": lead["id"],
                        "at": lead["closed_at"], "semantic": sem[lead["status"]],
                        "stage": lead["status_code"]})
    return out


# ---- list methods -----------------------------------------------------------------------

def _list(p: Portal, params: dict, entity: str, table: str, *, names="old", typed=False,
          filter_key="filter", order=None, default_order=None, wrap=None, out_camel=False,
          strict=False, rows=None, visible=_alive, select_default_all=True):
    spec = p.spec(entity)
    q = compile_filter(ci_get(params, filter_key), spec, names, strict)
    order_spec = parse_order(order if order is not None else ci_get(params, "order"),
                             spec, names, strict) or default_order or []
    start = parse_start(ci_get(params, "start"))
    ds = p.ds
    with ds.lock:
        src = rows if rows is not None else ds.rows(table)
        page, total = run_list(src, spec, q, order_spec, start, visible,
                               None if rows is not None else ds.by_id(table))
        fields = p.select(spec, ci_get(params, "select"), names, select_default_all)
        if out_camel:
            fields = [(f.new, f) for _, f in fields if f.new]
        if typed and str(ci_get(params, "useOriginalUfNames", "N")).upper() == "Y":
            fields = [(f.old if f.old and f.old.startswith("UF_") else k, f) for k, f in fields]
        out = p.pages.page(entity, page, fields, typed)
    return Reply.listing(out, total, start, len(src), wrap)


def deal_list(p, params):
    return _list(p, params, "deal", "deals")


def lead_list(p, params):
    return _list(p, params, "lead", "leads")


def contact_list(p, params):
    return _list(p, params, "contact", "contacts")


def company_list(p, params):
    return _list(p, params, "company", "companies")


_ITEM_TABLES = {1: ("lead", "leads"), 2: ("deal", "deals"), 3: ("contact", "contacts"),
                4: ("company", "companies")}


def _entity_type(params) -> int:
    try:
        return int(ci_get(params, "entityTypeId"))
    except (TypeError, ValueError):
        raise ApiError("INVALID_ARG_VALUE", "Parameter 'entityTypeId' is required") from None


def item_list(p, params):
    et = _entity_type(params)
    if et not in _ITEM_TABLES:
        raise ApiError("NOT_FOUND", "Smart process not found")
    entity, table = _ITEM_TABLES[et]
    return _list(p, params, entity, table, names="new", typed=True, wrap="items", strict=True)


def task_list(p, params):
    spec = p.spec("task")
    return _list(p, params, "task", "tasks", wrap="tasks", out_camel=True,
                 default_order=[(spec.by_old["ID"], True)], select_default_all=False)


def voximplant_statistic_get(p, params):
    sort = ci_get(params, "SORT")
    order = {sort: ci_get(params, "ORDER", "ASC")} if sort else None
    return _list(p, params, "call", "calls", filter_key="FILTER", order=order or {},
                 visible=None, select_default_all=False)


def activity_list(p, params):
    spec = p.spec("activity")
    return _list(p, params, "activity", "calls", visible=None, select_default_all=False,
                 default_order=[(spec.by_old["START_TIME"], False)])


def stagehistory_list(p, params):
    et = _entity_type(params)
    if et not in (1, 2):
        raise ApiError("ENTITY_TYPE_NOT_SUPPORTED", "Entity type is not supported")
    kind = "deal" if et == 2 else "lead"
    return _list(p, params, "stagehistory_" + kind, "", rows=p.history(kind), visible=None,
                 wrap="items", select_default_all=False)


def user_get(p, params):
    sort = ci_get(params, "sort")
    order = {sort: ci_get(params, "order", "ASC")} if isinstance(sort, str) and sort else {}
    return _list(p, params, "user", "users", filter_key="FILTER", order=order, visible=None,
                 select_default_all=False)


# ---- pipelines and stages -----------------------------------------------------------------

def category_list(p, params):
    et = _entity_type(params)
    cats = []
    if et == 2:
        for pl in p.ds.pipelines:
            cid = p.vocab.category(pl["id"])
            cats.append({"id": cid, "name": pl["name"], "sort": pl["sort"], "entityTypeId": 2,
                         "isDefault": "Y" if cid == 0 else "N", "originId": "",
                         "originatorId": ""})
    return Reply({"categories": cats}, len(cats))


def _status_rows(p: Portal) -> list[dict]:
    rows, n = [], 0
    for pl in p.ds.pipelines:
        cat = p.vocab.category(pl["id"])
        for s in pl["stages"]:
            n += 1
            rows.append(_status_row(n, p.vocab.entity_id(cat), p.vocab.stage_code[s["id"]],
                                    s["name"], s["sort"], cat, s["semantics"]))
    for code, name, sort, sem in LEAD_STATUSES:
        n += 1
        rows.append(_status_row(n, "STATUS", code, name, sort, None, sem))
    return rows


def _status_row(n, entity_id, status_id, name, sort, cat, sem) -> dict:
    color = {"open": "#39A8EF", "won": "#7BD500", "lost": "#FF5752"}[sem]
    return {"ID": str(n), "ENTITY_ID": entity_id, "STATUS_ID": status_id, "NAME": name,
            "NAME_INIT": name if sem != "open" else "", "SORT": str(sort),
            "SYSTEM": "Y" if sem != "open" or status_id.endswith("NEW") else "N",
            "CATEGORY_ID": None if cat is None else str(cat), "COLOR": color,
            "SEMANTICS": STATUS_SEMANTICS[sem],
            "EXTRA": {"SEMANTICS": EXTRA_SEMANTICS[sem], "COLOR": color}}


def _dict_spec(rows: list[dict]) -> Spec:
    keys = list(rows[0]) if rows else ["ID"]
    return Spec([Field(k, None, (lambda r, k=k: r.get(k)), "str") for k in keys])


def _dict_list(rows: list[dict], params, default_sort: str | None):
    """Filter and order small in-memory lists of string rows (statuses, userfields)."""
    spec = _dict_spec(rows)
    flt = ci_get(params, "filter") or {}
    if isinstance(flt, dict):
        flt = {k: v for k, v in flt.items() if str(k).upper() != "LANG"}
    q = compile_filter(flt, spec)
    order = parse_order(ci_get(params, "order"), spec, "old")
    preds = q.preds
    out = [r for r in rows if all(pr(r) for pr in preds)]
    if q.ids is not None:
        out = [r for r in out if int(r["ID"]) in q.ids]
    if not order and default_sort:
        order = [(spec.by_old[default_sort], False)]
    for f, desc in reversed(order):
        numeric = all(str(f.get(r) or "0").lstrip("-").isdigit() for r in out)
        out.sort(key=(lambda r, g=f.get: int(g(r) or 0)) if numeric
                 else (lambda r, g=f.get: str(g(r) or "")), reverse=desc)
    return out


def status_list(p, params):
    rows = _dict_list(_status_rows(p), params, "SORT")
    return Reply(rows, len(rows))


# ---- cards, custom fields, write-back ------------------------------------------------------

def _card(p: Portal, entity: str, table: str, id_) -> dict:
    try:
        row = p.ds.by_id(table).get(int(id_))
    except (TypeError, ValueError):
        row = None
    if row is None or row.get("is_deleted"):
        raise ApiError("", "Not found")
    return row


def _get(entity, table, extra=()):
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
        items = [{"CONTACT_ID": cid, "SORT": 10 * (i + 1), "ROLE_ID": 0,
                  "IS_PRIMARY": "Y" if i == 0 else "N"} for i, cid in enumerate(deal["contact_ids"])]
    return Reply(items)


def _uf_row(etype: str, name: str, f: dict) -> dict:
    label = f["name"]
    utype = f.get("b24_type") or TYPE_UF.get(f["type"], "string")
    row = {"ID": str(f["id"]), "ENTITY_ID": "CRM_" + etype.upper(), "FIELD_NAME": name,
           "USER_TYPE_ID": utype, "XML_ID": f.get("xml_id"), "SORT": "100", "MULTIPLE": "N",
           "MANDATORY": "N", "SHOW_FILTER": "N", "SHOW_IN_LIST": "Y", "EDIT_IN_LIST": "Y",
           "IS_SEARCHABLE": "N",
           "SETTINGS": {"PRECISION": 2, "DEFAULT_VALUE": None} if utype == "double" else {},
           "EDIT_FORM_LABEL": label, "LIST_COLUMN_LABEL": label, "LIST_FILTER_LABEL": label}
    if f.get("enums"):
        row["LIST"] = [{"ID": str(e["id"]), "VALUE": e["value"], "SORT": str(10 * (i + 1)),
                        "DEF": "N", "XML_ID": e["value"]} for i, e in enumerate(f["enums"])]
    return row


def _userfield_list(etype):
    def method(p, params):
        with p.ds.lock:
            rows = [_uf_row(etype, n, f) for n, f in p.vocab.uf_fields(etype)]
        rows = _dict_list(rows, params, None)
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


def _userfield_add(etype):
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
            raise ApiError("ERROR_CORE", "Invalid field name: use A-Z, 0-9 and _ (at most 50 "
                                         "characters with the UF_CRM_ prefix).")
        with p.ds.lock:
            if any(n == name for n, _ in p.vocab.uf_fields(etype)):
                raise ApiError("ERROR_CORE", f"A field with the code {name} already exists.")
            f = p.ds.add_field(etype, _label(fields, name), UF_TYPE.get(utype, "text"),
                               code=name, b24_type=utype)
        return Reply(f["id"])
    return method


def _update(etype, table, standard: dict):
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
            for fid, value in custom.items():
                p.ds.set_custom(etype, row["id"], fid, value)
            if plain:
                if "first_name" in plain or "last_name" in plain:
                    plain["name"] = " ".join(filter(None, (plain.get("first_name", row.get("first_name")),
                                                           plain.get("last_name", row.get("last_name")))))
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
    if f["type"] == "select" and f.get("enums"):
        for e in f["enums"]:  # enumerations are written by enum id
            if str(value) in (str(e["id"]), e["value"]):
                return e["value"]
        raise ApiError("", f"Field '{name}': unknown list value.")
    return str(value)


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
    return Reply({"ID": u["id"], "ADMIN": True, "NAME": first, "LAST_NAME": last,
                  "PERSONAL_GENDER": "", "TIME_ZONE": "Europe/Moscow", "TIME_ZONE_OFFSET": 10800})


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
    "tasks.task.list": task_list,
    "voximplant.statistic.get": voximplant_statistic_get,
    "user.get": user_get,
    "crm.deal.get": _get("deal", "deals"),
    "crm.lead.get": _get("lead", "leads"),
    "crm.contact.get": _get("contact", "contacts", ("PHONE", "EMAIL")),
    "crm.company.get": _get("company", "companies"),
    "crm.contact.userfield.list": _userfield_list("contact"),
    "crm.company.userfield.list": _userfield_list("company"),
    "crm.contact.userfield.add": _userfield_add("contact"),
    "crm.company.userfield.add": _userfield_add("company"),
    "crm.contact.update": _update("contact", "contacts",
                                  {"NAME": "first_name", "LAST_NAME": "last_name",
                                   "ASSIGNED_BY_ID": "responsible_user_id"}),
    "crm.company.update": _update("company", "companies",
                                  {"TITLE": "name", "ASSIGNED_BY_ID": "responsible_user_id"}),
    "profile": profile,
}

# Which webhook/OAuth scope each method needs (None: always allowed).
SCOPE_PREFIXES = (("crm.", "crm"), ("tasks.", "task"), ("task.", "task"), ("user.", "user"),
                  ("voximplant.", "telephony"), ("telephony.", "telephony"))


def scope_of(method: str) -> str | None:
    for prefix, scope in SCOPE_PREFIXES:
        if method.startswith(prefix):
            return scope
    return None

