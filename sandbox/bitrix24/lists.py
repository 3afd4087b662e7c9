"""The Bitrix24 sandbox's list methods: CRM entities, smart-process items, tasks, calls,
activities (and one activity's bindings), stage history, users, categories and statuses.

Each takes (portal, params) and returns a `Reply`; `methods.METHODS` names them.
"""

from __future__ import annotations

from .activities import OWNER_TYPE, bindings
from .params import ci_get
from .portal import Portal, Reply
from .query import ApiError, compile_filter, parse_order, parse_start, run_list
from .render import EXTRA_SEMANTICS, LEAD_STATUSES, STATUS_SEMANTICS, Field, Spec


def _alive(r) -> bool:
    return not r.get("is_deleted")


# ---- list methods -----------------------------------------------------------------------


def _list(
    p: Portal,
    params: dict,
    entity: str,
    table: str,
    *,
    names="old",
    typed=False,
    filter_key="filter",
    order=None,
    default_order=None,
    wrap=None,
    out_camel=False,
    strict=False,
    rows=None,
    by_id=None,
    visible=_alive,
    select_default_all=True,
):
    spec = p.spec(entity)
    flt = None if entity in p.ignoring_filters else ci_get(params, filter_key)
    q = compile_filter(flt, spec, names, strict)
    order_spec = (
        parse_order(order if order is not None else ci_get(params, "order"), spec, names, strict)
        or default_order
        or []
    )
    start = parse_start(ci_get(params, "start"))
    ds = p.ds
    with ds.lock:
        src = rows if rows is not None else ds.rows(table)
        page, total = run_list(
            src, spec, q, order_spec, start, visible, by_id if rows is not None else ds.by_id(table)
        )
        fields = p.select(spec, ci_get(params, "select"), names, select_default_all)
        if out_camel:
            fields = [(f.new, f) for _, f in fields if f.new]
        if typed and str(ci_get(params, "useOriginalUfNames", "N")).upper() == "Y":
            fields = [(f.old if f.old and f.old.startswith("UF_") else k, f) for k, f in fields]
        out = p.pages.page(entity, page, fields, typed)
        if p.malformed:
            out = p.malformed_page(entity, page, out)
    return Reply.listing(out, total, start, len(src), wrap)


def deal_list(p, params):
    return _list(p, params, "deal", "deals")


def lead_list(p, params):
    return _list(p, params, "lead", "leads")


def contact_list(p, params):
    return _list(p, params, "contact", "contacts")


def company_list(p, params):
    return _list(p, params, "company", "companies")


_ITEM_TABLES = {
    1: ("lead", "leads"),
    2: ("deal", "deals"),
    3: ("contact", "contacts"),
    4: ("company", "companies"),
}


def entity_type(params) -> int:
    try:
        return int(ci_get(params, "entityTypeId"))
    except (TypeError, ValueError):
        raise ApiError("INVALID_ARG_VALUE", "Parameter 'entityTypeId' is required") from None


def item_list(p, params):
    et = entity_type(params)
    if et not in _ITEM_TABLES:
        raise ApiError("NOT_FOUND", "Smart process not found")
    entity, table = _ITEM_TABLES[et]
    return _list(p, params, entity, table, names="new", typed=True, wrap="items", strict=True)


def task_list(p, params):
    spec = p.spec("task")
    return _list(
        p,
        params,
        "task",
        "tasks",
        wrap="tasks",
        out_camel=True,
        default_order=[(spec.by_old["ID"], True)],
        select_default_all=False,
    )


def voximplant_statistic_get(p, params):
    sort = ci_get(params, "SORT")
    order = {sort: ci_get(params, "ORDER", "ASC")} if sort else None
    return _list(
        p,
        params,
        "call",
        "calls",
        filter_key="FILTER",
        order=order or {},
        visible=None,
        select_default_all=False,
    )


def activity_list(p, params):
    spec = p.spec("activity")
    rows, by_id = p.activities()
    return _list(
        p,
        params,
        "activity",
        "activities",
        rows=rows,
        by_id=by_id,
        select_default_all=False,
        default_order=[(spec.by_old["START_TIME"], False)],
    )


def stagehistory_list(p, params):
    et = entity_type(params)
    if et not in (1, 2):
        raise ApiError("ENTITY_TYPE_NOT_SUPPORTED", "Entity type is not supported")
    kind = "deal" if et == 2 else "lead"
    return _list(
        p,
        params,
        "stagehistory_" + kind,
        "",
        rows=p.history(kind),
        visible=None,
        wrap="items",
        select_default_all=False,
    )


def user_get(p, params):
    sort = ci_get(params, "sort")
    order = {sort: ci_get(params, "order", "ASC")} if isinstance(sort, str) and sort else {}
    return _list(
        p, params, "user", "users", filter_key="FILTER", order=order, visible=None, select_default_all=False
    )


# ---- pipelines and stages -----------------------------------------------------------------


def category_list(p, params):
    et = entity_type(params)
    cats = []
    if et == 2:
        for pl in p.ds.pipelines:
            cid = p.vocab.category(pl["id"])
            cats.append(
                {
                    "id": cid,
                    "name": pl["name"],
                    "sort": pl["sort"],
                    "entityTypeId": 2,
                    "isDefault": "Y" if cid == 0 else "N",
                    "originId": "",
                    "originatorId": "",
                }
            )
    return Reply({"categories": cats}, len(cats))


def _status_rows(p: Portal) -> list[dict]:
    rows, n = [], 0
    for pl in p.ds.pipelines:
        cat = p.vocab.category(pl["id"])
        for s in pl["stages"]:
            n += 1
            rows.append(
                _status_row(
                    n,
                    p.vocab.entity_id(cat),
                    p.vocab.stage_code[s["id"]],
                    s["name"],
                    s["sort"],
                    cat,
                    s["semantics"],
                )
            )
    for code, name, sort, sem in LEAD_STATUSES:
        n += 1
        rows.append(_status_row(n, "STATUS", code, name, sort, None, sem))
    return rows


def _status_row(n, entity_id, status_id, name, sort, cat, sem) -> dict:
    color = {"open": "#39A8EF", "won": "#7BD500", "lost": "#FF5752"}[sem]
    return {
        "ID": str(n),
        "ENTITY_ID": entity_id,
        "STATUS_ID": status_id,
        "NAME": name,
        "NAME_INIT": name if sem != "open" else "",
        "SORT": str(sort),
        "SYSTEM": "Y" if sem != "open" or status_id.endswith("NEW") else "N",
        "CATEGORY_ID": None if cat is None else str(cat),
        "COLOR": color,
        "SEMANTICS": STATUS_SEMANTICS[sem],
        "EXTRA": {"SEMANTICS": EXTRA_SEMANTICS[sem], "COLOR": color},
    }


def _dict_spec(rows: list[dict]) -> Spec:
    keys = list(rows[0]) if rows else ["ID"]
    return Spec([Field(k, None, (lambda r, k=k: r.get(k)), "str") for k in keys])


def dict_list(rows: list[dict], params, default_sort: str | None):
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
        out.sort(
            key=(lambda r, g=f.get: int(g(r) or 0)) if numeric else (lambda r, g=f.get: str(g(r) or "")),
            reverse=desc,
        )
    return out


def status_list(p, params):
    rows = dict_list(_status_rows(p), params, "SORT")
    return Reply(rows, len(rows))


def binding_list(p, params):
    """`crm.activity.binding.list`: the records one activity is bound to."""
    raw = ci_get(params, "activityId")
    if raw in (None, ""):
        raise ApiError("100", "Required fields are missing")
    try:
        aid = int(raw)
    except (TypeError, ValueError):
        raise ApiError("NOT_FOUND", "Element not found") from None
    with p.ds.lock:
        _, by_id = p.activities()
        row = by_id.get(aid)
        if row is None or row.get("is_deleted"):
            raise ApiError("NOT_FOUND", "Element not found")
        return Reply([{"entityTypeId": OWNER_TYPE[et], "entityId": eid} for et, eid in bindings(row)])
