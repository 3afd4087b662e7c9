"""How the amoCRM sandbox reads lists: PHP-style params, filters, order, paging, indexes.

Each list endpoint is a `Collection` (field getters, sortable keys, filters, renderer). Rows
are sorted once per (collection, order key, dataset version) and cached, so the common
incremental query (`filter[updated_at][from]` + `order[updated_at]`) bisects instead of scanning.
"""

from __future__ import annotations

import bisect
import collections
import gc
from urllib.parse import urlencode

from sandbox.amocrm.common import EVENT_TYPES, NOTE_TYPES, PLURAL, SINGULAR, ApiError
from sandbox.httpbase import Request, Response


# ---- request parsing ---------------------------------------------------------------------
def php_params(req: Request, prefix: str) -> dict:
    """Nested dict from PHP-style keys: filter[id][]=1&filter[a][from]=2 -> {id: [1], a: {from: 2}}."""
    out: dict = {}
    for key, value in req.pairs:
        if not key.startswith(prefix + "["):
            continue
        parts = [p.rstrip("]") for p in key[len(prefix) + 1 :].split("[")]
        node = out
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if last:
                if part == "":
                    continue
                if isinstance(node, dict):
                    node[part] = value
                continue
            nxt = parts[i + 1]
            if nxt == "" and i + 1 == len(parts) - 1:  # key[] = value
                lst = node.setdefault(part, [])
                if isinstance(lst, list):
                    lst.append(value)
                break
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                break
    return out


def as_ints(spec) -> list[int]:
    """filter[id]=1, filter[id][]=1, filter[id][0]=1 -> [1]."""
    if isinstance(spec, dict):
        spec = list(spec.values())
    if not isinstance(spec, list):
        spec = [spec]
    try:
        return [int(v) for v in spec]
    except (TypeError, ValueError):
        raise ApiError(400, "Invalid filter value") from None


def as_range(spec, single: str) -> tuple[int | None, int | None]:
    """A range filter: {from, to}, or a single value read as `single` ("eq" or "from")."""
    try:
        if isinstance(spec, dict):
            lo, hi = spec.get("from"), spec.get("to")
            return (int(lo) if lo not in (None, "") else None, int(hi) if hi not in (None, "") else None)
        v = int(spec)
    except (TypeError, ValueError):
        raise ApiError(400, "Invalid filter value") from None
    return (v, v) if single == "eq" else (v, None)


class Collection:
    """How one list endpoint reads rows: field getters, sortable keys, filters, rendering."""

    def __init__(
        self,
        name,
        rows,
        version,
        getters,
        sortable,
        filters,
        *,
        render,
        single="from",
        max_limit=250,
        gated=False,
        default_order=("id", False),
        extra_total=False,
        native_key=None,
        over_limit_take=None,
        choices=None,
    ):
        self.name = name  # the key under _embedded
        self.rows = rows  # () -> list of visible rows
        self.version = version  # () -> hashable; changes when rows change
        self.getters = getters  # api field -> (row -> value)
        self.sortable = sortable
        self.filters = filters  # filter name -> "ids" | "strs" | "range" | spec -> pred
        self.render = render  # (row, with set) -> dict
        self.single, self.max_limit, self.gated = single, max_limit, gated
        self.default_order, self.extra_total = default_order, extra_total
        self.native_key = native_key  # rows are tuples already ordered by this key, then id
        # A limit above max_limit: None clamps it; a number N serves N rows a page but steps
        # pages by the limit asked, so rows are skipped, as real amoCRM does (events: 50 rows
        # for a limit over 100; custom fields: 50 whatever is asked).
        self.over_limit_take = over_limit_take
        self.choices = choices or {}  # filter name -> the values the API accepts


class View:
    """rows[lo:hi] read forwards or backwards, without copying."""

    def __init__(self, rows, lo, hi, desc):
        self.rows, self.lo, self.hi, self.desc = rows, lo, max(lo, hi), desc

    def __len__(self):
        return self.hi - self.lo

    def slice(self, start: int, stop: int) -> list:
        n = len(self)
        start, stop = min(start, n), min(stop, n)
        if not self.desc:
            return self.rows[self.lo + start : self.lo + stop]
        return self.rows[self.hi - stop : self.hi - start][::-1]


def strs(spec) -> list[str]:
    """filter[x]=a, filter[x][]=a, filter[x][0]=a -> ["a"]."""
    if isinstance(spec, dict):
        return [str(v) for v in spec.values()]
    return [str(v) for v in spec] if isinstance(spec, list) else [str(spec)]


def check_choices(col: Collection, filters: dict) -> None:
    """amoCRM validates filters: a value outside the documented choices is a 400 with
    `validation-errors`, not an empty or unfiltered list."""
    errors = [
        {
            "code": "NotSupportedChoice",
            "path": f"filter.{name}",
            "detail": "The value you selected is not a valid choice.",
        }
        for name, allowed in col.choices.items()
        if name in filters and any(v not in allowed for v in strs(filters[name]))
    ]
    if errors:
        raise ApiError(
            400, "Request validation failed", **{"validation-errors": [{"request_id": "0", "errors": errors}]}
        )


class AmoQuery:
    """Mixin for AmoSandbox: collections, the response cache, listing and single reads."""

    # ---- collections ---------------------------------------------------------------------
    def _declare(self) -> dict[str, Collection]:
        ds = self.dataset
        g = lambda key: lambda r: r[key]  # noqa: E731
        visible = lambda name, flag=0: (
            lambda: [
                r
                for r in ds.rows(name)  # noqa: E731
                if r["is_deleted"] == flag
            ]
        )
        ver = lambda *names: lambda: tuple(ds.versions[n] for n in names)  # noqa: E731
        base = {
            "id": g("id"),
            "created_at": g("created_at"),
            "updated_at": g("updated_at"),
            "responsible_user_id": g("responsible_user_id"),
        }
        base_filters = {
            "id": "ids",
            "created_at": "range",
            "updated_at": "range",
            "responsible_user_id": "ids",
        }
        lead_get = {
            **base,
            "closed_at": g("closed_at"),
            "pipeline_id": g("pipeline_id"),
            "status_id": lambda r: self._status_id(r["stage_id"]),
        }
        lead_filters = {
            **base_filters,
            "closed_at": "range",
            "pipeline_id": "ids",
            "statuses": self._statuses_filter,
        }
        sortable3 = ("created_at", "updated_at", "id")
        task_get = {
            **base,
            "complete_till": g("due_at"),
            "is_completed": lambda r: int(bool(r["is_completed"])),
            "entity_type": lambda r: PLURAL.get(r["entity_type"]),
            "entity_id": g("entity_id"),
            "task_type": lambda r: 1,
        }
        # Event records are tuples (created_at, seq, type, entity_type, entity_id, src):
        # 350k dicts per 100k deals would make the first events page take seconds.
        event_get = {
            "id": lambda r: r[1],
            "created_at": lambda r: r[0],
            "type": lambda r: r[2],
            "entity": lambda r: r[3],
            "entity_id": lambda r: r[4],
        }
        # The lists of the dataset's entities, one row a list: (key, dataset table, deleted
        # rows or live ones, getters, sortable keys, filters, renderer, options). Each is
        # named under _embedded by its key's first word (leads_deleted: "leads"). The card
        # lists filter only with the API filter (`gated`) and read one range value as equal.
        card = {"single": "eq", "gated": True}
        by_update, by_due = ("updated_at", "id"), ("created_at", "complete_till", "id")
        task_filters = {
            **base_filters,
            "is_completed": "ids",
            "entity_type": "strs",
            "entity_id": "ids",
            "task_type": "ids",
        }
        entities = (
            ("leads", "deals", 0, lead_get, sortable3, lead_filters, self._lead, card),
            ("leads_deleted", "deals", 1, lead_get, sortable3, lead_filters, self._deleted_lead, card),
            ("contacts", "contacts", 0, base, by_update, base_filters, self._contact, card),
            ("companies", "companies", 0, base, by_update, base_filters, self._company, card),
            ("tasks", "tasks", 0, task_get, by_due, task_filters, self._task, {}),
            ("customers", "customers", 0, base, by_update, base_filters, self._customer, card),
        )
        lists = {
            key: Collection(
                key.split("_")[0],
                visible(table, deleted),
                ver(table),
                get,
                sortable,
                filters,
                render=render,
                **opts,
            )
            for key, table, deleted, get, sortable, filters, render, opts in entities
        }
        return {
            **lists,
            "users": Collection(
                "users", lambda: list(ds.users), ver("users"), {"id": g("id")}, ("id",), {}, render=self._user
            ),
            "events": Collection(
                "events",
                self._event_rows,
                ver("stage_changes", "events", "tasks", "activities", "surveys"),
                event_get,
                ("created_at", "id"),
                {
                    "id": self._event_id_filter,
                    "created_at": "range",
                    "type": "strs",
                    "entity": "strs",
                    "entity_id": "ids",
                },
                max_limit=100,
                over_limit_take=50,
                choices={"type": EVENT_TYPES},
                default_order=("created_at", True),
                native_key="created_at",
                render=self._event,
            ),
        }

    def _notes_collection(self, plural: str) -> Collection:
        key = "notes:" + plural
        col = self._collections.get(key)
        if col is None:
            ds, et = self.dataset, SINGULAR[plural]
            # Call notes and SMS notes (live SMS activities) of this entity type.
            col = self._collections[key] = Collection(
                "notes",
                lambda: (
                    [c for c in ds.calls if c["entity_type"] == et]
                    + [
                        a
                        for a in ds.activities
                        if a["channel"] == "sms" and a["entity_type"] == et and not a["is_deleted"]
                    ]
                ),
                lambda: (ds.versions["calls"], ds.versions["activities"]),
                {
                    "id": lambda r: r["id"],
                    "created_at": note_created,
                    "updated_at": note_updated,
                    "entity_id": lambda r: r["entity_id"],
                    "note_type": note_type,
                },
                ("updated_at", "id"),
                {"id": "ids", "entity_id": "ids", "note_type": "strs", "updated_at": "range"},
                choices={"note_type": NOTE_TYPES},
                render=lambda r, w: self._note(r, plural),
            )
        return col

    def _fields_collection(self, plural: str) -> Collection:
        et = SINGULAR[plural]
        fields = self.dataset.fields[et]
        return Collection(
            "custom_fields",
            lambda: self._predefined(et) + list(fields),
            lambda: (len(fields),),
            {
                "id": lambda f: f["id"],
                "sort": lambda f: f.get("sort", 500),
                "type": lambda f: self._amo_type(f),
            },
            ("sort", "id"),
            {"type": "strs", "id": "ids"},
            max_limit=50,
            over_limit_take=50,
            default_order=("sort", False),
            extra_total=True,
            render=lambda f, w: self._field(f, plural),
        )

    def _statuses_filter(self, spec):
        pairs = spec.values() if isinstance(spec, dict) else spec
        try:
            wanted = {(int(p["pipeline_id"]), int(p["status_id"])) for p in pairs}
        except (TypeError, ValueError, KeyError):
            raise ApiError(400, "Invalid filter value") from None
        return lambda r: (r["pipeline_id"], self._status_id(r["stage_id"])) in wanted

    # ---- listing -------------------------------------------------------------------------
    def _cached(self, key, build):
        with self._cache_lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        value = build()
        with self._cache_lock:
            self._cache[key] = value
            while len(self._cache) > 64:
                self._cache.popitem(last=False)
        return value

    def _sorted(self, col: Collection, key: str) -> tuple[list, list]:
        """Visible rows sorted by (key, id) plus the key column for bisect; cached per version."""

        def build():
            # Building 100k+ records would trigger repeated full GC passes over the dataset.
            was_enabled = gc.isenabled()
            gc.disable()
            try:
                with self.dataset.lock:
                    rows = col.rows()
            finally:
                if was_enabled:
                    gc.enable()
            get, gid = col.getters[key], col.getters["id"]
            if key == col.native_key:
                rows.sort()  # tuple order; no per-row key calls
            else:
                rows.sort(key=lambda r: (get(r), gid(r)))
            return rows, [get(r) for r in rows]

        return self._cached((col.name, id(col), key, col.version()), build)

    def _order(self, req: Request, col: Collection) -> tuple[str, bool]:
        for field, direction in php_params(req, "order").items():
            if field in col.sortable and isinstance(direction, str):
                return field, direction.lower() == "desc"
        return col.default_order

    def _select(self, req: Request, col: Collection, key: str, desc: bool) -> View:
        rows, keys = self._sorted(col, key)
        lo, hi = 0, len(rows)
        filters = {} if (col.gated and not self.api_filter) else php_params(req, "filter")
        check_choices(col, filters)
        preds, sig = [], []
        for name, spec in sorted(filters.items()):
            kind = col.filters.get(name)
            if kind is None:
                continue
            get = col.getters.get(name)
            if kind == "range":
                a, b = as_range(spec, col.single)
                if name == key:  # the common incremental query: bisect, no scan
                    lo = bisect.bisect_left(keys, a, lo, hi) if a is not None else lo
                    hi = bisect.bisect_right(keys, b, lo, hi) if b is not None else hi
                    continue
                preds.append(
                    lambda r, get=get, a=a, b=b: (
                        (v := get(r)) is not None and (a is None or v >= a) and (b is None or v <= b)
                    )
                )
            elif kind in ("ids", "strs"):
                vals = as_ints(spec) if kind == "ids" else strs(spec)
                preds.append(lambda r, get=get, s=frozenset(vals): get(r) in s)
            else:
                preds.append(kind(spec))
            sig.append((name, repr(spec)))
        if not preds:
            return View(rows, lo, hi, desc)
        matched = self._cached(
            ("filtered", col.name, id(col), key, col.version(), lo, hi, tuple(sig)),
            lambda: [r for r in rows[lo:hi] if all(p(r) for p in preds)],
        )
        return View(matched, 0, len(matched), desc)

    def _list(self, req: Request, col: Collection) -> Response:
        try:
            limit = int(req.get("limit") or 50)
            page = int(req.get("page") or 1)
        except ValueError:
            raise ApiError(400, "limit and page must be integers") from None
        if limit < 1 or page < 1:
            raise ApiError(400, "limit and page must be positive")
        step = take = min(limit, col.max_limit)
        if col.over_limit_take and limit > col.max_limit:
            step, take = limit, col.over_limit_take  # fewer rows, pages step by `limit`
        key, desc = self._order(req, col)
        repeat = self.repeating.get(req.path.rstrip("/"))
        if repeat is not None:  # the `repeat_list` knob: one page, whatever is asked
            key, desc = col.default_order
            rows = self._sorted(col, key)[0][:repeat]
            view, offset, step, take = [None] * (repeat + 1), 0, repeat, repeat
        else:
            view = self._select(req, col, key, desc)
            offset = (page - 1) * step
            rows = view.slice(offset, offset + take)
        if not rows:
            return Response.empty(204)
        with_ = set(req.get("with", "").split(","))
        items = [col.render(r, with_) for r in rows]
        ids = [i["id"] for i in items]
        if self.malformed:  # the `malform` knob (sandbox.malformed)
            items = self.malformed.serve_page(col.name, ids, items)
        links = {"self": self._page_link(req, page)}
        full = len(rows) == take and self.next_on_full_page
        if len(view) > offset + step or full:
            links["next"] = self._page_link(req, page + 1)
        if page > 1:
            links["first"] = self._page_link(req, 1)
            links["prev"] = self._page_link(req, page - 1)
        body = {"_page": page, "_links": links, "_embedded": {col.name: items}}
        if col.extra_total:
            body = {"_total_items": len(view), **body}
        if col.name == "users":
            body["_page_count"] = -(-len(view) // step)
        response = self._hal(body)
        self._after_page_served(req.path, ids)
        return response

    def _page_link(self, req: Request, page: int) -> dict:
        pairs = [(k, v) for k, v in req.pairs if k != "page"] + [("page", str(page))]
        return self._link(req.path, urlencode(pairs))

    def _one(self, req: Request, plural: str, row_id: int) -> Response:
        ds_name = "deals" if plural == "leads" else plural
        row = self.dataset.by_id(ds_name).get(row_id)
        if row is None or row["is_deleted"]:
            return Response.empty(204)
        col = self._collections[plural]
        return self._hal(col.render(row, set(req.get("with", "").split(","))))

    # ---- link indexes------------------------------------------------------------------
    def _deals_of_contact(self) -> dict:
        ds = self.dataset

        def build():
            idx = collections.defaultdict(list)
            for d in ds.deals:
                if not d["is_deleted"]:
                    for c in d["contact_ids"]:
                        idx[c].append(d["id"])
            return idx

        return self._cached(("deals_of_contact", ds.versions["deals"]), build)

    def _contacts_of_company(self) -> dict:
        ds = self.dataset

        def build():
            idx = collections.defaultdict(list)
            for c in ds.contacts:
                if c["company_id"] and not c["is_deleted"]:
                    idx[c["company_id"]].append(c["id"])
            return idx

        return self._cached(("contacts_of_company", ds.versions["contacts"]), build)


# A notes row is a call (`calls`) or an SMS (`activities`, channel sms).
def note_type(r: dict) -> str:
    return ("sms_" if "channel" in r else "call_") + r["direction"]


def note_created(r: dict) -> int:
    return r["at"] if "channel" in r else r["started_at"]


def note_updated(r: dict) -> int:
    return r["updated_at"] if "channel" in r else r["started_at"]
