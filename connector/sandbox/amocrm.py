"""A local amoCRM (Kommo) API v4 server over a sandbox `Dataset`, for tests and benchmarks.

Speaks the real shapes from /work/shared/api/amocrm.md: HAL collections (`_embedded`,
`_links.next` only when more rows, HTTP 204 with no body on an empty page), Unix-second
timestamps, problem+json errors, Bearer auth with single-use refresh tokens, a 7 req/s limit
(429, then a 403 HTML block), custom fields at 50 per page, batch PATCH with validation errors.

Faithful quirks a client must survive:
- Deleted leads/contacts/companies/tasks are in the trash: lists skip them; deletions are
  visible only as events (`lead_deleted`, ...) or with `with=only_deleted` on leads.
- Won/lost statuses are 142/143 in every pipeline; each pipeline also has an (empty)
  "Unsorted" status of type 1.
- Lead/contact/company filters need the API-filter add-on (`api_filter=False` ignores them);
  a single `filter[updated_at]=T` there means "equal to T", on tasks/notes/events "from T".
- Events allow limit <= 100; a larger limit returns 50 rows but pages by the larger limit,
  so rows are skipped (KRUKOV #76). Other lists clamp limit to 250, custom fields to 50.
- Tasks cannot be ordered by updated_at (the order is ignored); no task completed_at.
- Stage entries without a previous stage (creation) are `lead_added` events, not
  `lead_status_changed`. Completed tasks give `task_completed` events (at completed_at).
"""

from __future__ import annotations

import bisect
import collections
import gc
import secrets
import threading
import time
from urllib.parse import urlencode

from connector.sandbox.data import Dataset, generate
from connector.sandbox.httpbase import Request, Response, SandboxServer, SlidingWindow

__all__ = ["AmoSandbox", "WON", "LOST"]

WON, LOST = 142, 143
HAL = "application/hal+json"
PROBLEM = "application/problem+json"
ACCOUNT_ID = 31_000_001
PHONE_FIELD, EMAIL_FIELD = 899_001, 899_002     # contacts' predefined multitext fields
CALL_STATUS = {"answered": 4, "missed": 6, "failed": 5}
PLURAL = {"deal": "leads", "contact": "contacts", "company": "companies"}
SINGULAR = {v: k for k, v in PLURAL.items()}
FIELD_TYPES = {"text", "numeric", "checkbox", "select", "multiselect", "date", "date_time",
               "url", "textarea", "radiobutton", "streetaddress", "birthday", "monetary"}
BLOCK_PAGE = (b"<html>\r\n<head><title>403 Forbidden</title></head>\r\n<body>\r\n"
              b"<center><h1>403 Forbidden</h1></center>\r\n<hr><center>nginx</center>\r\n"
              b"</body>\r\n</html>\r\n")


class ApiError(Exception):
    def __init__(self, status: int, detail: str, **extra):
        super().__init__(detail)
        self.status, self.detail, self.extra = status, detail, extra


def problem(status: int, title: str, detail: str | None = None, **extra) -> Response:
    body = {"title": title, "type": f"https://httpstatus.es/{status}", "status": status}
    if detail:
        body["detail"] = detail
    body.update(extra)
    return Response.json(body, status, PROBLEM)


TITLES = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
          405: "Method Not Allowed", 429: "Too Many Requests"}


# ---- request parsing ---------------------------------------------------------------------
def php_params(req: Request, prefix: str) -> dict:
    """Nested dict from PHP-style keys: filter[id][]=1&filter[a][from]=2 -> {id: [1], a: {from: 2}}."""
    out: dict = {}
    for key, value in req.pairs:
        if not key.startswith(prefix + "["):
            continue
        parts = [p.rstrip("]") for p in key[len(prefix) + 1:].split("[")]
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
            if nxt == "" and i + 1 == len(parts) - 1:     # key[] = value
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
            return (int(lo) if lo not in (None, "") else None,
                    int(hi) if hi not in (None, "") else None)
        v = int(spec)
    except (TypeError, ValueError):
        raise ApiError(400, "Invalid filter value") from None
    return (v, v) if single == "eq" else (v, None)


class Collection:
    """How one list endpoint reads rows: field getters, sortable keys, filters, rendering."""

    def __init__(self, name, rows, version, getters, sortable, filters, *, render,
                 single="from", max_limit=250, gated=False, default_order=("id", False),
                 extra_total=False, native_key=None):
        self.name = name                # the key under _embedded
        self.rows = rows                # () -> list of visible rows
        self.version = version          # () -> hashable; changes when rows change
        self.getters = getters          # api field -> (row -> value)
        self.sortable = sortable
        self.filters = filters          # filter name -> "ids" | "strs" | "range" | spec -> pred
        self.render = render            # (row, with set) -> dict
        self.single, self.max_limit, self.gated = single, max_limit, gated
        self.default_order, self.extra_total = default_order, extra_total
        self.native_key = native_key    # rows are tuples already ordered by this key, then id


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
            return self.rows[self.lo + start:self.lo + stop]
        return self.rows[self.hi - stop:self.hi - start][::-1]


class AmoSandbox(SandboxServer):
    """amoCRM v4 over a Dataset. See the module docstring for the quirks it reproduces.

    Use: `with AmoSandbox(size=300, limits=False) as amo: ...amo.url...`. Knobs:
    `set_limits(on, rate)`, `block_after` (N 429s -> every request 403 HTML until
    `unblock()`), `clock` (replace for deterministic rate-limit tests), `api_filter`,
    `is_admin` (False: /users and POST custom_fields -> 403), `issue_code()`,
    `expire_access_tokens()`, `revoke_long_lived()`, `token_ttl`, `next_on_full_page`
    (a full last page links to a 204 page, as amoCRM sometimes does), plus the httpbase ones
    (`latency_ms`, `fault_rate`/`faults`, `fail_next(kind)`, `request_log`, `https`).
    """

    def __init__(self, dataset: Dataset | None = None, *, host="127.0.0.1", port=0, seed=1,
                 size=1000, latency_ms=0, limits=True, rate=7.0,
                 access_token="sandbox-long-lived-token", client_id="sandbox-client",
                 client_secret="sandbox-secret", redirect_uri="https://example.com/oauth",
                 fault_rate=0.0, faults=("500",), https=False, api_filter=True,
                 block_after=None, token_ttl=86400, is_admin=True, timeout_hold_s=0.0):
        super().__init__(host=host, port=port, latency_ms=latency_ms, fault_rate=fault_rate,
                         faults=faults, seed=seed, timeout_hold_s=timeout_hold_s, https=https)
        self.dataset = dataset if dataset is not None else generate(seed=seed, size=size)
        self.limits, self.rate = limits, rate
        self.block_after, self.violations, self.blocked = block_after, 0, False
        self.clock = time.monotonic
        self._window = SlidingWindow(rate, clock=lambda: self.clock())
        self.access_token = access_token
        self.client_id, self.client_secret = client_id, client_secret
        self.redirect_uri = redirect_uri
        self.api_filter, self.is_admin = api_filter, is_admin
        self.token_ttl = token_ttl
        # Real amoCRM sometimes links a full last page to an empty (204) one (PHP #193).
        self.next_on_full_page = False
        self._auth_lock = threading.Lock()
        self._codes: set[str] = set()
        self._access: dict[str, float] = {}      # OAuth access token -> expiry (time.time)
        self._refresh: dict[str, bool] = {}      # refresh token -> still usable
        self._cache: collections.OrderedDict = collections.OrderedDict()
        self._cache_lock = threading.Lock()
        self._collections = self._declare()

    # ---- knobs ---------------------------------------------------------------------------
    def set_limits(self, on: bool, rate: float | None = None) -> None:
        self.limits = on
        if rate is not None:
            self.rate = self._window.rate = rate

    def unblock(self) -> None:
        """What amoCRM support does on request: lift the 403 block."""
        self.blocked, self.violations = False, 0

    def issue_code(self) -> str:
        """A single-use authorization code, as the OAuth redirect would carry."""
        code = "def50200" + secrets.token_hex(32)
        with self._auth_lock:
            self._codes.add(code)
        return code

    def expire_access_tokens(self) -> None:
        """Make every OAuth-issued access token expired (the next call gets 401)."""
        with self._auth_lock:
            for tok in self._access:
                self._access[tok] = 0.0

    def revoke_long_lived(self) -> None:
        self.access_token = None

    # ---- dispatch ------------------------------------------------------------------------
    def fault_response(self) -> Response:
        return problem(500, "Internal Server Error")

    def handle(self, req: Request) -> Response:
        if self.blocked:
            return Response(403, BLOCK_PAGE, "text/html")
        if self.limits and not self._window.allow():
            self.violations += 1
            if self.block_after and self.violations >= self.block_after:
                self.blocked = True
            return problem(429, TITLES[429], "Too many requests")
        try:
            if req.path == "/oauth2/access_token":
                if req.method != "POST":
                    raise ApiError(405, "Method not allowed")
                return self._oauth(req)
            if not req.path.startswith("/api/"):
                raise ApiError(404, "Not found")
            if not self._authorised(req):
                return problem(401, TITLES[401], "Неверный логин или пароль")
            return self._route(req)
        except ApiError as e:
            return problem(e.status, TITLES.get(e.status, "Error"), e.detail, **e.extra)

    def _route(self, req: Request) -> Response:
        parts = req.path.rstrip("/").split("/")[3:]      # after /api/v4
        m = req.method
        if m == "GET":
            if parts == ["account"]:
                return self._hal(self._account(req))
            if parts == ["leads", "pipelines"]:
                return self._pipelines()
            if len(parts) == 2 and parts[0] in PLURAL.values() and parts[1] == "notes":
                return self._list(req, self._notes_collection(parts[0]))
            if len(parts) == 2 and parts[0] in ("contacts", "companies") \
                    and parts[1] == "custom_fields":
                return self._list(req, self._fields_collection(parts[0]))
            if len(parts) == 1 and parts[0] in self._collections:
                if parts[0] == "users" and not self.is_admin:
                    raise ApiError(403, "Insufficient rights")
                if parts[0] == "leads" and "only_deleted" in req.get("with", "").split(","):
                    return self._list(req, self._collections["leads_deleted"])
                return self._list(req, self._collections[parts[0]])
            if len(parts) == 2 and parts[0] in ("leads", "contacts", "companies", "tasks") \
                    and parts[1].isdigit():
                return self._one(req, parts[0], int(parts[1]))
        elif m == "POST" and len(parts) == 2 and parts[1] == "custom_fields" \
                and parts[0] in ("contacts", "companies"):
            return self._create_fields(req, parts[0])
        elif m == "PATCH" and parts and parts[0] in ("contacts", "companies") and len(parts) <= 2:
            return self._patch(req, parts[0], int(parts[1]) if len(parts) == 2 else None)
        raise ApiError(404 if m in ("GET", "POST", "PATCH") else 405, "Not found")

    def _hal(self, obj: dict, status: int = 200) -> Response:
        return Response.json(obj, status, HAL)

    def _link(self, path: str, query: str = "") -> dict:
        return {"href": f"{self.url}{path}" + (f"?{query}" if query else "")}

    # ---- auth ----------------------------------------------------------------------------
    def _authorised(self, req: Request) -> bool:
        header = req.headers.get("authorization", "")
        if not header.startswith("Bearer "):
            return False
        token = header[7:].strip()
        if self.access_token and secrets.compare_digest(token, self.access_token):
            return True
        with self._auth_lock:
            return self._access.get(token, 0.0) > time.time()

    def _oauth(self, req: Request) -> Response:
        try:
            body = req.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise ApiError(400, "Request body must be JSON")

        def oauth_error(status, hint):
            return Response.json({"hint": hint, "title": "Некорректный запрос",
                                  "type": "https://developers.amocrm.ru/v3/errors/OAuthProblemJson",
                                  "status": status, "detail": "В запросе отсутствует ряд параметров"
                                  " или параметры невалидны"}, status, PROBLEM)

        if body.get("client_id") != self.client_id or \
                body.get("client_secret") != self.client_secret:
            return oauth_error(401, "Client authentication failed")
        if body.get("redirect_uri") != self.redirect_uri:
            return oauth_error(400, "Redirect URI mismatch")
        grant = body.get("grant_type")
        with self._auth_lock:
            if grant == "authorization_code":
                code = body.get("code")
                if code not in self._codes:
                    return oauth_error(400, "Authorization code has been revoked")
                self._codes.discard(code)
            elif grant == "refresh_token":
                rt = body.get("refresh_token")
                if not self._refresh.get(rt):
                    return oauth_error(401, "Token has been revoked")
                self._refresh[rt] = False       # single use: the old one stops working
            else:
                return oauth_error(400, "Unsupported grant type")
            access = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9." + secrets.token_urlsafe(48)
            refresh = "def50200" + secrets.token_hex(48)
            self._access[access] = time.time() + self.token_ttl
            self._refresh[refresh] = True
        return Response.json({"token_type": "Bearer", "expires_in": self.token_ttl,
                              "server_time": int(time.time()), "access_token": access,
                              "refresh_token": refresh})

    # ---- collections ---------------------------------------------------------------------
    def _declare(self) -> dict[str, Collection]:
        ds = self.dataset
        g = lambda key: (lambda r: r[key])  # noqa: E731
        visible = lambda name, flag=0: (lambda: [r for r in ds.rows(name)  # noqa: E731
                                                 if r["is_deleted"] == flag])
        ver = lambda *names: (lambda: tuple(ds.versions[n] for n in names))  # noqa: E731
        base = {"id": g("id"), "created_at": g("created_at"), "updated_at": g("updated_at"),
                "responsible_user_id": g("responsible_user_id")}
        base_filters = {"id": "ids", "created_at": "range", "updated_at": "range",
                        "responsible_user_id": "ids"}
        lead_get = {**base, "closed_at": g("closed_at"), "pipeline_id": g("pipeline_id"),
                    "status_id": lambda r: self._status_id(r["stage_id"])}
        lead_filters = {**base_filters, "closed_at": "range", "pipeline_id": "ids",
                        "statuses": self._statuses_filter}
        sortable3 = ("created_at", "updated_at", "id")
        task_get = {**base, "complete_till": g("due_at"),
                    "is_completed": lambda r: int(bool(r["is_completed"])),
                    "entity_type": lambda r: PLURAL.get(r["entity_type"]),
                    "entity_id": g("entity_id"), "task_type": lambda r: 1}
        # Event records are tuples (created_at, seq, type, entity_type, entity_id, src):
        # 350k dicts per 100k deals would make the first events page take seconds.
        event_get = {"id": lambda r: r[1], "created_at": lambda r: r[0],
                     "type": lambda r: r[2], "entity": lambda r: r[3],
                     "entity_id": lambda r: r[4]}
        return {
            "leads": Collection("leads", visible("deals"), ver("deals"), lead_get, sortable3,
                                lead_filters, single="eq", gated=True, render=self._lead),
            "leads_deleted": Collection("leads", visible("deals", 1), ver("deals"), lead_get,
                                        sortable3, lead_filters, single="eq", gated=True,
                                        render=self._deleted_lead),
            "contacts": Collection("contacts", visible("contacts"), ver("contacts"), base,
                                   ("updated_at", "id"), base_filters, single="eq",
                                   gated=True, render=self._contact),
            "companies": Collection("companies", visible("companies"), ver("companies"), base,
                                    ("updated_at", "id"), base_filters, single="eq",
                                    gated=True, render=self._company),
            "tasks": Collection("tasks", visible("tasks"), ver("tasks"), task_get,
                                ("created_at", "complete_till", "id"),
                                {**base_filters, "is_completed": "ids", "entity_type": "strs",
                                 "entity_id": "ids", "task_type": "ids"}, render=self._task),
            "users": Collection("users", lambda: list(ds.users), ver("users"), {"id": g("id")},
                                ("id",), {}, render=self._user),
            "events": Collection("events", self._event_rows, ver("stage_changes", "events", "tasks"),
                                 event_get, ("created_at", "id"),
                                 {"id": self._event_id_filter, "created_at": "range",
                                  "type": "strs",
                                  "entity": "strs", "entity_id": "ids"},
                                 max_limit=100, default_order=("created_at", True),
                                 native_key="created_at",
                                 render=self._event),
        }

    def _notes_collection(self, plural: str) -> Collection:
        key = "notes:" + plural
        col = self._collections.get(key)
        if col is None:
            ds, et = self.dataset, SINGULAR[plural]
            col = self._collections[key] = Collection(
                "notes", lambda: [c for c in ds.calls if c["entity_type"] == et],
                lambda: (ds.versions["calls"],),
                {"id": lambda r: r["id"], "created_at": lambda r: r["started_at"],
                 "updated_at": lambda r: r["started_at"], "entity_id": lambda r: r["entity_id"],
                 "note_type": lambda r: "call_" + r["direction"]},
                ("updated_at", "id"),
                {"id": "ids", "entity_id": "ids", "note_type": "strs", "updated_at": "range"},
                render=lambda r, w: self._note(r, plural))
        return col

    def _fields_collection(self, plural: str) -> Collection:
        et = SINGULAR[plural]
        fields = self.dataset.fields[et]
        return Collection(
            "custom_fields", lambda: self._predefined(et) + list(fields),
            lambda: (len(fields),), {"id": lambda f: f["id"], "sort": lambda f: f.get("sort", 500),
                                     "type": lambda f: self._amo_type(f)},
            ("sort", "id"), {"type": "strs", "id": "ids"}, max_limit=50,
            default_order=("sort", False), extra_total=True,
            render=lambda f, w: self._field(f, plural))

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
                rows.sort()             # tuple order; no per-row key calls
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
        preds, sig = [], []
        for name, spec in sorted(filters.items()):
            kind = col.filters.get(name)
            if kind is None:
                continue
            get = col.getters.get(name)
            if kind == "range":
                a, b = as_range(spec, col.single)
                if name == key:         # the common incremental query: bisect, no scan
                    lo = bisect.bisect_left(keys, a, lo, hi) if a is not None else lo
                    hi = bisect.bisect_right(keys, b, lo, hi) if b is not None else hi
                    continue
                preds.append(lambda r, get=get, a=a, b=b: (v := get(r)) is not None
                             and (a is None or v >= a) and (b is None or v <= b))
            elif kind in ("ids", "strs"):
                vals = as_ints(spec) if kind == "ids" else _strs(spec)
                preds.append(lambda r, get=get, s=frozenset(vals): get(r) in s)
            else:
                preds.append(kind(spec))
            sig.append((name, repr(spec)))
        if not preds:
            return View(rows, lo, hi, desc)
        matched = self._cached(
            ("filtered", col.name, id(col), key, col.version(), lo, hi, tuple(sig)),
            lambda: [r for r in rows[lo:hi] if all(p(r) for p in preds)])
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
        if col.name == "events" and limit > col.max_limit:
            step, take = limit, 50      # the real bug: 50 rows, but pages step by `limit`
        key, desc = self._order(req, col)
        view = self._select(req, col, key, desc)
        offset = (page - 1) * step
        rows = view.slice(offset, offset + take)
        if not rows:
            return Response.empty(204)
        with_ = set(req.get("with", "").split(","))
        items = [col.render(r, with_) for r in rows]
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
        return self._hal(body)

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

    # ---- rendering -----------------------------------------------------------------------
    def _status_id(self, stage_id: int) -> int:
        sem = self.dataset.stage(stage_id)[1]["semantics"]
        return WON if sem == "won" else LOST if sem == "lost" else stage_id

    def _self(self, path: str) -> dict:
        return {"self": {"href": f"{self.url}{path}"}}

    def _lead(self, d: dict, with_: set) -> dict:
        emb = {"tags": [], "companies": [{"id": d["company_id"],
                                          "_links": self._self(f"/api/v4/companies/{d['company_id']}")}]
               if d["company_id"] else []}
        if "contacts" in with_:
            emb["contacts"] = [{"id": c, "is_main": i == 0,
                                "_links": self._self(f"/api/v4/contacts/{c}")}
                               for i, c in enumerate(d["contact_ids"])]
        return {"id": d["id"], "name": d["name"], "price": int(round(d["amount"])),
                "responsible_user_id": d["responsible_user_id"], "group_id": 0,
                "status_id": self._status_id(d["stage_id"]), "pipeline_id": d["pipeline_id"],
                "loss_reason_id": None, "created_by": 0, "updated_by": 0,
                "created_at": d["created_at"], "updated_at": d["updated_at"],
                "closed_at": d["closed_at"], "closest_task_at": None,
                "is_deleted": bool(d["is_deleted"]), "custom_fields_values": None, "score": None,
                "account_id": ACCOUNT_ID, "labor_cost": None,
                "_links": self._self(f"/api/v4/leads/{d['id']}"), "_embedded": emb}

    def _deleted_lead(self, d: dict, with_: set) -> dict:
        return {"id": d["id"], "updated_at": d["updated_at"], "updated_by": 0,
                "is_deleted": True, "_links": self._self(f"/api/v4/leads/{d['id']}")}

    def _contact(self, c: dict, with_: set) -> dict:
        emb = {"tags": [], "companies": [{"id": c["company_id"],
                                          "_links": self._self(f"/api/v4/companies/{c['company_id']}")}]
               if c["company_id"] else []}
        if "leads" in with_:
            emb["leads"] = [{"id": i, "_links": self._self(f"/api/v4/leads/{i}")}
                            for i in self._deals_of_contact().get(c["id"], ())]
        return {"id": c["id"], "name": c["name"], "first_name": c["first_name"],
                "last_name": c["last_name"], "responsible_user_id": c["responsible_user_id"],
                "group_id": 0, "created_by": 0, "updated_by": 0, "created_at": c["created_at"],
                "updated_at": c["updated_at"], "closest_task_at": None,
                "is_deleted": bool(c["is_deleted"]), "is_unsorted": False,
                "custom_fields_values": self._values("contact", c), "account_id": ACCOUNT_ID,
                "_links": self._self(f"/api/v4/contacts/{c['id']}"), "_embedded": emb}

    def _company(self, c: dict, with_: set) -> dict:
        emb = {"tags": []}
        if "contacts" in with_:
            emb["contacts"] = [{"id": i, "_links": self._self(f"/api/v4/contacts/{i}")}
                               for i in self._contacts_of_company().get(c["id"], ())]
        return {"id": c["id"], "name": c["name"], "responsible_user_id": c["responsible_user_id"],
                "group_id": 0, "created_by": 0, "updated_by": 0, "created_at": c["created_at"],
                "updated_at": c["updated_at"], "closest_task_at": None,
                "is_deleted": bool(c["is_deleted"]),
                "custom_fields_values": self._values("company", c), "account_id": ACCOUNT_ID,
                "_links": self._self(f"/api/v4/companies/{c['id']}"), "_embedded": emb}

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

    def _values(self, et: str, row: dict) -> list | None:
        """custom_fields_values in amoCRM's read shape, or None when the card has none."""
        out = []
        if et == "contact":
            for fid, name, code, v in ((PHONE_FIELD, "Телефон", "PHONE", row.get("phone")),
                                       (EMAIL_FIELD, "Email", "EMAIL", row.get("email"))):
                if v:
                    out.append({"field_id": fid, "field_name": name, "field_code": code,
                                "field_type": "multitext",
                                "values": [{"value": v, "enum_id": 1, "enum_code": "WORK"}]})
        fmap = self._field_map(et)
        for fid, v in row["custom"].items():
            f = fmap.get(fid)
            if f is None:
                continue
            value = {"value": _num_str(v) if f["type"] == "numeric" else str(v)}
            for e in f.get("enums") or ():
                if e["value"] == v:
                    value["enum_id"] = e["id"]
            out.append({"field_id": fid, "field_name": f["name"], "field_code": f["code"],
                        "field_type": self._amo_type(f), "values": [value]})
        return out or None

    def _field_map(self, et: str) -> dict:
        fields = self.dataset.fields[et]
        return self._cached(("fields", et, len(fields)), lambda: {f["id"]: f for f in fields})

    @staticmethod
    def _amo_type(f: dict) -> str:
        return f["type"]        # the neutral names are amoCRM's own (text, numeric, select)

    def _predefined(self, et: str) -> list[dict]:
        if et != "contact":
            return []
        return [{"id": PHONE_FIELD, "name": "Телефон", "code": "PHONE", "type": "multitext",
                 "sort": 4, "predefined": True},
                {"id": EMAIL_FIELD, "name": "Email", "code": "EMAIL", "type": "multitext",
                 "sort": 6, "predefined": True}]

    def _field(self, f: dict, plural: str) -> dict:
        pre = bool(f.get("predefined"))
        enums = ([{"id": i, "value": v, "sort": 2 * i} for i, v in
                  enumerate(("WORK", "WORKDD", "MOB", "FAX", "HOME", "OTHER"), 1)] if pre
                 else [{"id": e["id"], "value": e["value"], "sort": 500 + i}
                       for i, e in enumerate(f.get("enums") or ())] or None)
        return {"id": f["id"], "name": f["name"], "type": self._amo_type(f),
                "account_id": ACCOUNT_ID, "code": f["code"], "sort": f.get("sort", 500),
                "is_api_only": bool(f.get("is_api_only")), "enums": enums, "group_id": None,
                "required_statuses": [], "is_deletable": not pre, "is_predefined": pre,
                "entity_type": plural, "remind": None,
                "_links": self._self(f"/api/v4/{plural}/custom_fields/{f['id']}")}

    def _task(self, t: dict, with_: set) -> dict:
        return {"id": t["id"], "created_by": 0, "updated_by": 0, "created_at": t["created_at"],
                "updated_at": t["updated_at"], "responsible_user_id": t["responsible_user_id"],
                "group_id": 0, "entity_id": t["entity_id"],
                "entity_type": PLURAL.get(t["entity_type"]),
                "is_completed": bool(t["is_completed"]), "task_type_id": 1, "text": t["text"],
                "duration": 0, "complete_till": t["due_at"],
                "result": {"text": "Done"} if t["is_completed"] else [],
                "account_id": ACCOUNT_ID, "_links": self._self(f"/api/v4/tasks/{t['id']}")}

    def _note(self, c: dict, plural: str) -> dict:
        answered = c["status"] == "answered"
        return {"id": c["id"], "entity_id": c["entity_id"], "created_by": 0, "updated_by": 0,
                "created_at": c["started_at"], "updated_at": c["started_at"],
                "responsible_user_id": c["responsible_user_id"], "group_id": 0,
                "note_type": "call_" + c["direction"],
                "params": {"uniq": f"sbx-{c['id']}", "duration": c["duration_s"],
                           "source": "Sandbox PBX",
                           "link": f"https://pbx.example/rec/{c['id']}.mp3" if answered else "",
                           "phone": c["phone"], "call_responsible": c["responsible_user_id"],
                           "call_status": CALL_STATUS[c["status"]]},
                "account_id": ACCOUNT_ID,
                "_links": self._self(f"/api/v4/{plural}/{c['entity_id']}/notes/{c['id']}")}

    def _user(self, u: dict, with_: set) -> dict:
        return {"id": u["id"], "name": u["name"], "email": u["email"], "lang": "ru",
                "rights": {"is_admin": u is self.dataset.users[0], "is_free": False,
                           "is_active": bool(u["is_active"]), "group_id": None,
                           "role_id": None},
                "_links": self._self(f"/api/v4/users/{u['id']}")}

    # ---- events --------------------------------------------------------------------------
    def _event_rows(self) -> list[tuple]:
        """Stage changes, deletions/restores and task completions as amoCRM event records.

        Rendered lazily; `seq` (unique, a multiple of 3 plus the source) breaks time ties.
        """
        ds, out = self.dataset, []
        kinds = {"deal": "lead", "contact": "contact", "company": "company", "task": "task"}
        for sc in ds.stage_changes:
            out.append((sc["changed_at"], sc["id"] * 3,
                        "lead_status_changed" if sc["previous_stage_id"] else "lead_added",
                        "lead", sc["deal_id"], sc))
        for ev in ds.events:
            kind = kinds[ev["entity"]]
            out.append((ev["at"], ev["id"] * 3 + 1, f"{kind}_{ev['type']}", kind,
                        ev["entity_id"], ev))
        for t in ds.tasks:
            # Tasks in the trash keep their completion hidden here (real amoCRM may still
            # list it); a client must not invent task rows from these events anyway.
            if t["is_completed"] and t["completed_at"] and not t["is_deleted"]:
                out.append((t["completed_at"], t["id"] * 3 + 2, "task_completed", "task",
                            t["id"], t))
        return out

    @staticmethod
    def _string_id(e: tuple) -> str:
        return _event_id(e[0], "set"[e[1] % 3], e[1] // 3)

    def _event_id_filter(self, spec):
        wanted = frozenset(_strs(spec))
        return lambda e: self._string_id(e) in wanted

    def _event(self, e: tuple, with_: set) -> dict:
        created_at, _, etype, entity_type, entity_id, src = e
        before = after = []
        if etype == "lead_status_changed":
            prev_pipe = self.dataset.stage(src["previous_stage_id"])[0]["id"]
            before = [{"lead_status": {"id": self._status_id(src["previous_stage_id"]),
                                       "pipeline_id": prev_pipe}}]
            after = [{"lead_status": {"id": self._status_id(src["stage_id"]),
                                      "pipeline_id": src["pipeline_id"]}}]
        plural = PLURAL.get({"lead": "deal"}.get(entity_type, entity_type), "tasks")
        eid = self._string_id(e)
        return {"id": eid, "type": etype, "entity_id": entity_id, "entity_type": entity_type,
                "created_by": 0, "created_at": created_at, "value_after": after,
                "value_before": before, "account_id": ACCOUNT_ID,
                "_links": self._self(f"/api/v4/events/{eid}"),
                "_embedded": {"entity": {"id": entity_id, "_links": self._self(
                    f"/api/v4/{plural}/{entity_id}")}}}

    # ---- account, pipelines --------------------------------------------------------------
    def _account(self, req: Request) -> dict:
        ds = self.dataset
        with_ = set(req.get("with", "").split(","))
        out = {"id": ACCOUNT_ID, "name": "Sandbox", "subdomain": "sandbox",
               "created_at": ds.now - 3 * 365 * 86400, "created_by": 0,
               "updated_at": ds.now - 86400, "updated_by": 0,
               "current_user_id": ds.users[0]["id"], "country": "RU", "currency": "RUB",
               "currency_symbol": "₽", "customers_mode": "disabled", "is_unsorted_on": True,
               "is_loss_reason_enabled": True, "is_helpbot_enabled": False,
               "is_technical_account": False, "contact_name_display_order": 1,
               "_links": self._self("/api/v4/account")}
        emb = {}
        if "is_api_filter_enabled" in with_:
            out["is_api_filter_enabled"] = self.api_filter
        if "version" in with_:
            out["version"] = 42
        if "datetime_settings" in with_:
            emb["datetime_settings"] = {"date_pattern": "d.m.Y H:i", "short_date_pattern": "d.m.Y",
                                        "timezone": "Europe/Moscow", "timezone_offset": "+03:00"}
        if "task_types" in with_:
            emb["task_types"] = [{"id": 1, "name": "Связаться", "color": None, "icon_id": None,
                                  "code": "FOLLOW_UP"},
                                 {"id": 2, "name": "Встреча", "color": None, "icon_id": None,
                                  "code": "MEETING"}]
        if "users_groups" in with_:
            emb["users_groups"] = [{"id": 0, "name": "Отдел продаж", "uuid": None}]
        if emb:
            out["_embedded"] = emb
        return out

    def _pipelines(self) -> Response:
        items = []
        for p in self.dataset.pipelines:
            pid = p["id"]
            statuses = [{"id": pid * 1000 + 999, "name": "Неразобранное", "sort": 10,
                         "is_editable": False, "pipeline_id": pid, "color": "#c1c1c1",
                         "type": 1, "account_id": ACCOUNT_ID}]
            for s in p["stages"]:
                sid = self._status_id(s["id"])
                statuses.append({"id": sid, "name": s["name"], "sort": s["sort"] + 10,
                                 "is_editable": sid not in (WON, LOST), "pipeline_id": pid,
                                 "color": "#99ccff", "type": 0, "account_id": ACCOUNT_ID})
            for st in statuses:
                st["_links"] = self._self(f"/api/v4/leads/pipelines/{pid}/statuses/{st['id']}")
            items.append({"id": pid, "name": p["name"], "sort": p["sort"],
                          "is_main": bool(p["is_default"]), "is_unsorted_on": True,
                          "is_archive": False, "account_id": ACCOUNT_ID,
                          "_links": self._self(f"/api/v4/leads/pipelines/{pid}"),
                          "_embedded": {"statuses": statuses}})
        return self._hal({"_total_items": len(items), "_links": self._self("/api/v4/leads/pipelines"),
                          "_embedded": {"pipelines": items}})

    # ---- writes --------------------------------------------------------------------------
    def _body_list(self, req: Request) -> list:
        try:
            body = req.json()
        except ValueError:
            raise ApiError(400, "Request body is not valid JSON") from None
        if isinstance(body, dict):
            body = [body]
        if not isinstance(body, list) or not body or not all(isinstance(i, dict) for i in body):
            raise ApiError(400, "Request body must be a non-empty JSON array of objects")
        return body

    def _create_fields(self, req: Request, plural: str) -> Response:
        if not self.is_admin:
            raise ApiError(403, "Insufficient rights")
        items, et = self._body_list(req), SINGULAR[plural]
        codes = {f["code"] for f in self._predefined(et) + self.dataset.fields[et] if f["code"]}
        errors = []
        for i, item in enumerate(items):
            errs = []
            if item.get("type") not in FIELD_TYPES:
                errs.append(_err("NotSupportedChoice", "type",
                                 "The value you selected is not a valid choice."))
            if not isinstance(item.get("name"), str) or not item["name"].strip():
                errs.append(_err("NotBlank", "name", "This value should not be blank."))
            code = item.get("code")
            if code is not None and (not isinstance(code, str) or code in codes):
                errs.append(_err("NotUnique", "code", "This value is already used."))
            codes.add(code)
            if errs:
                errors.append({"request_id": str(item.get("request_id", i)), "errors": errs})
        if errors:
            return _validation(errors)
        created = []
        for i, item in enumerate(items):
            extra = {"sort": int(item.get("sort") or 500),
                     "is_api_only": bool(item.get("is_api_only"))}
            if item.get("enums"):
                extra["enums"] = [{"id": 810_000 + len(self.dataset.fields[et]) * 100 + j,
                                   "value": str(e.get("value"))}
                                  for j, e in enumerate(item["enums"])]
            f = self.dataset.add_field(et, item["name"], item["type"], code=item.get("code"),
                                       **extra)
            created.append({**self._field(f, plural), "request_id": str(item.get("request_id", i))})
        return self._hal({"_total_items": len(created),
                          "_embedded": {"custom_fields": created}}, 201)

    def _patch(self, req: Request, plural: str, one_id: int | None) -> Response:
        items = self._body_list(req)
        if one_id is not None:
            items = [{**items[0], "id": one_id}]
        if len(items) > 50:
            raise ApiError(400, "Too many entities in one request (max 50)")
        ds, et = self.dataset, SINGULAR[plural]
        rows = ds.by_id(plural)
        fmap = {f["id"]: f for f in self._predefined(et) + ds.fields[et]}
        by_code = {f["code"]: f for f in fmap.values() if f["code"]}
        errors, changes = [], []
        for i, item in enumerate(items):
            errs, values = [], {}
            rid = item.get("id")
            row = rows.get(rid) if isinstance(rid, int) else None
            if row is None or row["is_deleted"]:
                errs.append(_err("NotFound", "id", "Entity not found"))
            cfv = item.get("custom_fields_values") or []
            if not isinstance(cfv, list):
                errs.append(_err("InvalidType", "custom_fields_values",
                                 "This value should be of type array."))
                cfv = []
            for j, cf in enumerate(cfv):
                path = f"custom_fields_values.{j}"
                f = (fmap.get(cf.get("field_id")) or by_code.get(cf.get("field_code"))
                     if isinstance(cf, dict) else None)
                if f is None:
                    errs.append(_err("NotSupportedChoice", f"{path}.field_id",
                                     "The value you selected is not a valid choice."))
                    continue
                ok, value = _parse_value(f, cf.get("values"))
                if not ok:
                    errs.append(_err("InvalidType", f"{path}.values.0.value", value))
                else:
                    values[f["id"]] = value
            if errs:
                errors.append({"request_id": str(i), "errors": errs})
            else:
                changes.append((i, rid, values))
        if errors:     # amoCRM rejects the whole batch
            return _validation(errors)
        with ds.lock:
            customs = {}
            for _, rid, values in changes:
                row = rows[rid]
                for special, key in ((PHONE_FIELD, "phone"), (EMAIL_FIELD, "email")):
                    if special in values:
                        row[key] = values.pop(special)
                customs.setdefault(rid, {}).update(values)
            t = ds.write_customs(et, customs)
        out = [{"id": rid, "name": rows[rid]["name"], "updated_at": t, "request_id": str(i),
                "_links": self._self(f"/api/v4/{plural}/{rid}")} for i, rid, _ in changes]
        return self._hal({"_links": self._self(req.path), "_embedded": {plural: out}})


# ---- helpers -------------------------------------------------------------------------------
def _strs(spec) -> list[str]:
    if isinstance(spec, dict):
        return [str(v) for v in spec.values()]
    return [str(v) for v in spec] if isinstance(spec, list) else [str(spec)]


def _num_str(v) -> str:
    """Numbers as amoCRM returns them: strings, no trailing .0."""
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return str(v)


_B36 = "0123456789abcdefghijklmnopqrstuvwxyz"


def _b36(n: int, width: int) -> str:
    out = ""
    while n:
        n, r = divmod(n, 36)
        out = _B36[r] + out
    return out.rjust(width, "0")


def _event_id(at: int, kind: str, n: int) -> str:
    """A 26-char string id like amoCRM's ("01pz58t6p04ymgsgfbmfyfy1mf"), time-ordered."""
    return "01" + _b36(at, 8) + kind + _b36(n * 7919 + 104_729, 15)


def _err(code: str, path: str, detail: str) -> dict:
    return {"code": code, "path": path, "detail": detail}


def _validation(errors: list) -> Response:
    return problem(400, "Bad Request", "Request validation failed",
                   **{"validation-errors": errors})


def _parse_value(field: dict, values) -> tuple[bool, object]:
    """(ok, value or None to clear) from a PATCH `values`; (False, detail) when invalid."""
    if values is None:
        return True, None
    if not isinstance(values, list) or not values or not isinstance(values[0], dict):
        return False, "This value should be of type array."
    raw = values[0].get("value")
    if field["type"] == "numeric":
        try:
            x = float(str(raw).strip())
        except ValueError:
            return False, "This value should be of type numeric."
        if x != x or x in (float("inf"), float("-inf")) or isinstance(raw, bool):
            return False, "This value should be of type numeric."
        return True, int(x) if x.is_integer() else x
    if field.get("enums") and field["type"] in ("select", "radiobutton", "multiselect"):
        by_id = {e["id"]: e["value"] for e in field["enums"]}
        if values[0].get("enum_id") in by_id:
            return True, by_id[values[0]["enum_id"]]
        if raw in by_id.values():
            return True, raw
        return False, "The value you selected is not a valid choice."
    if raw is None:
        return False, "This value should not be blank."
    return True, str(raw)
