"""filter / order / select / start for Bitrix24 list methods, over id-sorted dataset rows.

The common case (order by ID, `>ID` window, `start=-1`) bisects to the window and stops after
one page, so a 50-page batch stays cheap on a 100k-row table. Anything else scans.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass

from .render import Spec, fmt_dt, parse_dt, to_old

PAGE = 50
_PREFIX = re.compile(r"^(!><|><|>=|<=|!@|!=%|!%=|!%|=%|%=|!=|>|<|@|=|%|!|\?)?(.+)$")


class ApiError(Exception):
    """A Bitrix24 error reply: {"error": code, "error_description": description}."""

    def __init__(self, code: str, description: str, status: int = 400, extra: dict | None = None):
        super().__init__(f"{code or '(empty)'}: {description}")
        self.code, self.description, self.status = code, description, status
        self.extra = extra or {}


def _lookup(spec: Spec, key: str, names: str):
    if names == "new":
        return spec.by_new.get(key)
    return spec.by_old.get(key) or spec.by_old.get(key.upper())


def _coerce(kind: str, value):
    if isinstance(value, (list, tuple)):
        return [_coerce(kind, v) for v in value]
    if value is None or value == "" or value is False:
        return None
    try:
        if kind == "int":
            return int(value)
        if kind in ("money", "float"):
            return float(value)
        if kind == "date":
            return parse_dt(value)
    except (TypeError, ValueError):
        raise ApiError("", f"Invalid filter value: {value!r}") from None
    if kind == "bool":
        return str(value).upper() in ("Y", "TRUE", "1")
    return str(value)


def _predicate(op: str, get, kind: str, val):
    """A row -> bool test for one filter condition."""
    many = isinstance(val, list)
    if op in ("@", "!@") or (op in ("", "=") and many):
        vals = set(val if many else [val])
        if kind == "list":
            inside = lambda r: bool(vals.intersection(get(r) or ()))  # noqa: E731
        else:
            inside = lambda r: get(r) in vals  # noqa: E731
        return inside if op != "!@" else (lambda r: not inside(r))
    if op in ("><", "!><"):
        lo, hi = (val + [None, None])[:2] if many else (val, None)
        between = lambda r: (x := get(r)) is not None and lo <= x <= hi  # noqa: E731
        return between if op == "><" else (lambda r: not between(r))
    if op in ("%", "?", "=%", "%=", "!%", "!=%", "!%="):
        needle = str(val or "").lower().strip("%")
        like = lambda r: needle in str(get(r) or "").lower()  # noqa: E731
        return like if not op.startswith("!") else (lambda r: not like(r))
    if kind == "list":
        has = lambda r: val in (get(r) or ())  # noqa: E731
        return has if op in ("", "=") else (lambda r: not has(r))
    if op in ("", "="):
        if val is None:
            return lambda r: get(r) in (None, 0, "")
        return lambda r: get(r) == val
    if op in ("!", "!="):
        if val is None:
            return lambda r: get(r) not in (None, 0, "")
        return lambda r: get(r) != val
    cmp = {
        ">": lambda x: x > val,
        ">=": lambda x: x >= val,
        "<": lambda x: x < val,
        "<=": lambda x: x <= val,
    }[op]
    return lambda r: (x := get(r)) is not None and val is not None and cmp(x)


@dataclass
class Query:
    preds: list
    lo: tuple | None = None  # ("gt"|"ge", id) lower id bound
    hi: tuple | None = None  # ("lt"|"le", id)
    ids: list | None = None  # `@ID` / `=ID`


def compile_filter(flt, spec: Spec, names: str = "old", strict: bool = False) -> Query:
    """Build predicates; unknown fields are ignored like the old methods do, unless strict."""
    if flt in (None, "", []):
        flt = {}
    if not isinstance(flt, dict):
        raise ApiError("", "Parameter 'filter' must be array.")
    q = Query(preds=[])
    for key, raw in flt.items():
        m = _PREFIX.match(str(key))
        if not m:
            continue
        op, name = m.group(1) or "", m.group(2)
        f = _lookup(spec, name, names)
        if f is None:
            if strict:
                raise ApiError(
                    "INVALID_ARG_VALUE", f"Invalid filter: field '{name}' is not allowed in filter"
                )
            continue
        val = _coerce("str" if f.kind == "list" else f.kind, raw)
        if f is spec.fields[0] and f.kind == "int":  # the id column: index it
            if op == ">" and isinstance(val, int):
                q.lo = max(q.lo or ("ge", val + 1), ("ge", val + 1), key=lambda b: b[1])
            elif op == ">=" and isinstance(val, int):
                q.lo = max(q.lo or ("ge", val), ("ge", val), key=lambda b: b[1])
            elif op == "<" and isinstance(val, int):
                q.hi = min(q.hi or ("le", val - 1), ("le", val - 1), key=lambda b: b[1])
            elif op == "<=" and isinstance(val, int):
                q.hi = min(q.hi or ("le", val), ("le", val), key=lambda b: b[1])
            elif op in ("@", "", "=") and val is not None:
                ids = set(val if isinstance(val, list) else [val])
                q.ids = sorted(ids if q.ids is None else ids.intersection(q.ids))
            else:
                q.preds.append(_predicate(op, f.get, f.kind, val))
            continue
        q.preds.append(_predicate(op, f.get, f.kind, val))
    return q


def _candidates(rows: list[dict], q: Query, by_id: dict | None):
    """Rows in id order that the id bounds allow, as (list, lo, hi) slice bounds."""
    if q.ids is not None:
        if by_id is None:
            by_id = {r["id"]: r for r in rows}
        rows = [by_id[i] for i in q.ids if i in by_id]
    lo = 0 if q.lo is None else bisect.bisect_left(rows, q.lo[1], key=_id)
    hi = len(rows) if q.hi is None else bisect.bisect_right(rows, q.hi[1], key=_id)
    return rows, lo, hi


def _id(r):
    return r["id"]


def parse_order(order, spec: Spec, names: str, strict: bool = False) -> list[tuple]:
    """[(field, descending)]; unknown keys are ignored (old methods) or rejected (strict)."""
    if not order:
        return []
    if isinstance(order, list):  # `order[]=ID` style
        order = {k: "ASC" for k in order}
    if not isinstance(order, dict):
        raise ApiError("", "Parameter 'order' must be array.")
    out = []
    for key, direction in order.items():
        f = _lookup(spec, str(key), names)
        if f is None:
            if strict:
                raise ApiError("INVALID_ARG_VALUE", f"Invalid order: field '{key}'")
            continue
        out.append((f, str(direction).upper() == "DESC"))
    return out


def run_list(
    rows: list[dict],
    spec: Spec,
    q: Query,
    order: list[tuple],
    start: int,
    visible=None,
    by_id: dict | None = None,
) -> tuple[list[dict], int | None]:
    """One page of raw rows, and the total (None when start=-1 skips counting)."""
    rows, lo, hi = _candidates(rows, q, by_id)
    preds = q.preds if visible is None else [visible, *q.preds]
    id_field = spec.fields[0]
    by_id_only = not order or (len(order) == 1 and order[0][0] is id_field)
    desc = bool(order) and order[0][1]
    counting = start >= 0
    offset = max(start, 0)
    if by_id_only:
        it = range(hi - 1, lo - 1, -1) if desc else range(lo, hi)
        page, total = [], 0
        for i in it:
            r = rows[i]
            if all(p(r) for p in preds):
                if offset <= total < offset + PAGE:
                    page.append(r)
                total += 1
                if not counting and len(page) == PAGE:
                    break
        return page, (total if counting else None)
    matched = [rows[i] for i in range(lo, hi) if all(p(rows[i]) for p in preds)]
    for f, d in reversed(order):
        # None sorts first ascending (and last descending), as SQL does.
        matched.sort(key=lambda r, g=f.get: ((x := g(r)) is not None, x if x is not None else 0), reverse=d)
    return matched[offset : offset + PAGE], (len(matched) if counting else None)


def parse_start(value) -> int:
    if value in (None, ""):
        return 0
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ApiError("", "Parameter 'start' must be integer.") from None


def select_fields(spec: Spec, select, names: str, default_all: bool = True) -> list[tuple]:
    """[(output key, Field)] for a select list (`*`, `UF_*`, names)."""
    if isinstance(select, str):
        select = [select]
    if not select:
        select = ["*", "UF_*"] if default_all else ["*"]
    out: dict[str, object] = {}
    id_f = spec.fields[0]
    key_of = (lambda f: f.new) if names == "new" else (lambda f: f.old)
    out[key_of(id_f)] = id_f  # every list method returns the id, whatever was selected
    for s in select:
        s = str(s)
        if s == "*":
            for f in spec.fields:
                k = key_of(f)
                if k and not f.explicit and (names == "new" or not k.startswith("UF_")):
                    out[k] = f
        elif s.upper() == "UF_*":
            for f in spec.fields:
                if f.old and f.old.startswith("UF_") and key_of(f):
                    out[key_of(f)] = f
        else:
            f = _lookup(spec, s, names)
            if f is not None and key_of(f):
                out[key_of(f)] = f
    return list(out.items())


_RENDERERS: dict[tuple, tuple] = {}


def compiled(cache: dict, build, fields: list[tuple], typed: bool):
    """The function `build(fields, typed)` generates for this select, made once and cached."""
    key = (typed, tuple((k, id(f)) for k, f in fields))
    hit = cache.get(key)
    if hit is None:
        if len(cache) > 512:
            cache.clear()
        hit = cache[key] = (build(fields, typed), fields)  # fields pin the ids
    return hit[0]


def render(rows: list[dict], fields: list[tuple], typed: bool = False) -> list[dict]:
    """Rows -> API dicts. The per-select renderer is generated once: batches of list pages
    render thousands of rows per request, and a generic loop was the server's hot spot."""
    return compiled(_RENDERERS, _compile, fields, typed)(rows)


def _compile(fields: list[tuple], typed: bool):
    env = {"_dt": fmt_dt, "_float": lambda v: to_old("float", v)}
    parts = []
    for i, (k, f) in enumerate(fields):
        env[f"g{i}"] = f.get
        v = f"r[{f.key!r}]" if f.key else f"g{i}(r)"
        if f.kind == "date":
            expr = f"_dt({v})"
        elif typed or f.kind not in ("int", "money", "float"):
            expr = v
        elif f.kind == "int":
            expr = f"(None if (x{i} := {v}) is None else str(x{i}))"
        elif f.kind == "money":
            expr = f"(None if (x{i} := {v}) is None else '%.2f' % x{i})"
        else:
            expr = f"_float({v})"
        parts.append(f"{k!r}: {expr}")
    src = "def _render(rows):\n    return [{" + ", ".join(parts) + "} for r in rows]\n"
    exec(compile(src, "<bitrix24-render>", "exec"), env)  # noqa: S102 - our own field table
    return env["_render"]
