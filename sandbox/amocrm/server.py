"""A local amoCRM (Kommo) API v4 server over a sandbox `Dataset`, for tests and benchmarks.

Speaks the real API's shapes: HAL collections (`_embedded`, `_links.next` only when more
rows, HTTP 204 with no body on an empty page), Unix-second timestamps, problem+json errors,
Bearer auth with single-use refresh tokens, a 7 req/s limit (429, then a 403 HTML block),
custom fields at 50 per page, batch PATCH with validation errors, webhooks (registered through
the API, delivered on every change of a deal, contact, company or task: `webhooks`).

Faithful quirks a client must survive:
- Deleted leads/contacts/companies/tasks are in the trash: lists skip them; deletions are
  visible only as events (`lead_deleted`, ...) or with `with=only_deleted` on leads.
- Won/lost statuses are 142/143 in every pipeline; each pipeline also has an (empty)
  "Unsorted" status of type 1.
- Lead/contact/company filters need the API-filter add-on (`api_filter=False` ignores them);
  a single `filter[updated_at]=T` there means "equal to T", on tasks/notes/events "from T".
- Events allow limit <= 100; a larger limit returns 50 rows but pages by the larger limit,
  so rows are skipped; custom fields likewise serve 50. Other lists clamp to 250.
- Tasks cannot be ordered by updated_at (the order is ignored); no task completed_at.
- Stage entries without a previous stage (creation) are `lead_added` events, not
  `lead_status_changed`; they carry a note id, not the stage. Completed tasks give
  `task_completed` events (at completed_at). A merge (`Dataset.merge`) is an `entity_merged`
  event on either card, the one merged away (which leaves the lists: `GET /{entity}/{id}`
  answers 204) or the survivor: the docs do not say which. No `task_restored` type exists.
- Customers (the dataset's `customers`, each with `contact_ids` and a `company_id`) exist only
  in Customers mode. A call the calls API routes to a customer (the contact has no open lead)
  is a call note in `/api/v4/customers/notes`, its `entity_id` the customer's.
- Writes may date themselves, as the API documents: a PATCH item's `created_at` /
  `updated_at` are stored as given (`Dataset.backdate`), so a card written now can sort before
  a reader's bookmark; a call note may likewise be filed with an old moment.
- Filters are validated: `filter[type][]` with an undocumented event type is a 400 with
  `validation-errors`; custom fields and events serve at most 50 rows for a larger `limit`
  yet step pages by that limit, so rows are skipped.
"""

from __future__ import annotations

import collections
import secrets
import threading
import time

from sandbox.amocrm.common import CUSTOMERS_ON, HAL, LOST, PLURAL, TITLES, WON, ApiError, problem
from sandbox.amocrm.query import AmoQuery
from sandbox.amocrm.render import AmoRender
from sandbox.amocrm.webhooks import AmoWebhooks
from sandbox.amocrm.write import AmoWrite
from sandbox.data import Dataset, generate
from sandbox.httpbase import Request, Response, SandboxServer, SlidingWindow
from sandbox.malformed import AMOCRM, Malformer

__all__ = ["AmoSandbox", "WON", "LOST"]

BLOCK_PAGE = (
    b"<html>\r\n<head><title>403 Forbidden</title></head>\r\n<body>\r\n"
    b"<center><h1>403 Forbidden</h1></center>\r\n<hr><center>nginx</center>\r\n"
    b"</body>\r\n</html>\r\n"
)


class AmoSandbox(AmoQuery, AmoRender, AmoWrite, AmoWebhooks, SandboxServer):
    """amoCRM v4 over a Dataset. See the module docstring for the quirks it reproduces.

    Use: `with AmoSandbox(size=300, limits=False) as amo: ...amo.url...`. Knobs:
    `set_limits(on, rate)`, `block_after` (N 429s -> every request 403 HTML until
    `unblock()`), `clock` (replace for deterministic rate-limit tests), `api_filter`,
    `is_admin` (False: /users and POST custom_fields -> 403), `issue_code()`,
    `expire_access_tokens()`, `access_token` (the long-lived token; None refuses it),
    `token_ttl`, `next_on_full_page` (a full last page links to a 204 page, as amoCRM
    sometimes does), `customers_mode` (GET /account's; "segments" or "periodicity" turn the
    customers lists on: `/api/v4/customers`, `/customers/{id}`, `/customers/notes`; otherwise
    they answer 402),
    `edit_during_listing(path, after_page, delete, **changes)` (a user edits or deletes a
    card or task already served while a listing is read, so every later row moves up one),
    `repeat_list(path, rows)` (a list that repeats itself: the same page whatever is asked,
    always with a `next` link),
    plus the httpbase ones (`latency_ms`, `fault_rate`/`faults`, `fail_next(kind)`,
    `request_log`, `https`); `malform(kind, id)` serves an item in one of the malformed
    shapes of `sandbox.malformed`. Webhooks (`sandbox.amocrm.webhooks`): `webhooks`,
    `deliverer` (drop, repeat, delay, forge, pause deliveries; `sent` logs them),
    `hook_pairs(event, id)`, `enable_webhook(destination)`.
    """

    def __init__(
        self,
        dataset: Dataset | None = None,
        *,
        host="127.0.0.1",
        port=0,
        seed=1,
        size=1000,
        latency_ms=0,
        limits=True,
        rate=7.0,
        access_token="sandbox-long-lived-token",
        client_id="sandbox-client",
        client_secret="sandbox-secret",
        redirect_uri="https://example.com/oauth",
        fault_rate=0.0,
        faults=("500",),
        https=False,
        api_filter=True,
        block_after=None,
        token_ttl=86400,
        is_admin=True,
        timeout_hold_s=0.0,
        customers_mode="disabled",
    ):
        super().__init__(
            host=host,
            port=port,
            latency_ms=latency_ms,
            fault_rate=fault_rate,
            faults=faults,
            seed=seed,
            timeout_hold_s=timeout_hold_s,
            https=https,
        )
        self.dataset = dataset if dataset is not None else generate(seed=seed, size=size)
        self.limits, self.rate = limits, rate
        self.block_after, self.violations, self.blocked = block_after, 0, False
        self.clock = time.monotonic
        self._window = SlidingWindow(rate, clock=lambda: self.clock())
        self.access_token = access_token
        self.client_id, self.client_secret = client_id, client_secret
        self.redirect_uri = redirect_uri
        self.api_filter, self.is_admin = api_filter, is_admin
        self.customers_mode = customers_mode  # GET /account `customers_mode`
        self.token_ttl = token_ttl
        # Real amoCRM sometimes links a full last page to an empty (204) one.
        self.next_on_full_page = False
        self._auth_lock = threading.Lock()
        self._codes: set[str] = set()
        self._access: dict[str, float] = {}  # OAuth access token -> expiry (time.time)
        self._refresh: dict[str, bool] = {}  # refresh token -> still usable
        self._cache: collections.OrderedDict = collections.OrderedDict()
        self._cache_lock = threading.Lock()
        self._collections = self._declare()
        self._listing_edits: list[dict] = []
        self.repeating: dict[str, int] = {}  # the `repeat_list` knob: path -> rows served
        self._edits_lock = threading.Lock()
        self.malformed = Malformer(AMOCRM)  # the `malform` knob
        self._init_webhooks()

    def malform(self, kind: str, item_id: int) -> None:
        """Serve the item `item_id` malformed from now on, as `sandbox.malformed.AMOCRM[kind]`
        says (the dataset keeps the true values)."""
        self.malformed.add(kind, item_id)
        with self._cache_lock:
            self._cache.clear()

    def repeat_id(self, item_id: int, entity: str = "leads") -> None:
        """Serve the item `item_id` under the id of the item before it on its page, from now on
        (`sandbox.malformed.Malformer.repeat_id`)."""
        self.malformed.repeat_id(entity, item_id)
        with self._cache_lock:
            self._cache.clear()

    def start(self):
        self.deliverer.open()
        return super().start()

    def stop(self) -> None:
        self.deliverer.close()
        super().stop()

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

    def edit_during_listing(self, path: str, after_page: int = 3, delete: bool = False, **changes) -> None:
        """Once `after_page` pages of `path` (say `/api/v4/leads`) have been served, edit the
        first record the first of those pages served, as a user would mid-read: its
        `updated_at` moves to now, so an offset listing ordered by it shifts (`changes` are
        applied too). `delete`: move it to the trash instead, which shifts every order.
        Fires once; `listing_edits_done` lists the ids edited."""
        with self._edits_lock:
            self._listing_edits.append(
                {"path": path, "after": after_page, "served": [], "changes": changes, "delete": delete}
            )

    def repeat_list(self, path: str, rows: int = 2) -> None:
        """Serve `path` (say `/api/v4/companies`) as a static API sample did: its first
        `rows` rows, unfiltered, in the list's default order, whatever `page`, `limit`,
        `filter[...]` or `order[...]` is asked, and always with a `_links.next` pointing at the
        following page number. A reader that trusts `next` and range filters never ends."""
        self.repeating[path.rstrip("/")] = rows

    @property
    def listing_edits_done(self) -> list[int]:
        return [e["edited"] for e in self._listing_edits if "edited" in e]

    def _after_page_served(self, path: str, ids: list[int]) -> None:
        """Fire the `edit_during_listing` knobs this page completes."""
        with self._edits_lock:
            due = []
            for e in self._listing_edits:
                if e["path"] == path and "edited" not in e:
                    e["served"].append(ids)
                    if len(e["served"]) >= e["after"]:
                        e["edited"] = e["served"][0][0]
                        due.append(e)
        for e in due:
            entity = {"leads": "deals"}.get(path.rstrip("/").split("/")[-1], path.rstrip("/").split("/")[-1])
            if e["delete"]:
                self.dataset.delete(entity, e["edited"])
            else:
                self.dataset.update(entity, e["edited"], **e["changes"])

    # ---- dispatch ------------------------------------------------------------------------
    def fault_response(self) -> Response:
        return problem(500, "Internal Server Error")

    def limit_response(self) -> Response:
        return problem(429, TITLES[429], "Too many requests")

    def handle(self, req: Request) -> Response:
        if self.blocked:
            return Response(403, BLOCK_PAGE, "text/html")
        # counted on arrival (httpbase's module doc) unless a test drives `clock` itself
        at = req.arrived if self.clock is time.monotonic else None
        if self.limits and not self._window.allow(at):
            self.violations += 1
            if self.block_after and self.violations >= self.block_after:
                self.blocked = True
            return self.limit_response()
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
        parts = req.path.rstrip("/").split("/")[3:]  # after /api/v4
        m = req.method
        if parts == ["webhooks"]:
            return self._webhooks_route(req)
        if parts and parts[0] == "customers" and self.customers_mode not in CUSTOMERS_ON:
            # Undocumented for an account without customers: the stricter reading, an error.
            raise ApiError(402, "Customers are not enabled in this account")
        if m == "GET":
            if parts == ["account"]:
                return self._hal(self._account(req))
            if parts == ["leads", "pipelines"]:
                return self._pipelines()
            if len(parts) == 2 and parts[0] in PLURAL.values() and parts[1] == "notes":
                return self._list(req, self._notes_collection(parts[0]))
            if len(parts) == 2 and parts[0] in ("contacts", "companies") and parts[1] == "custom_fields":
                return self._list(req, self._fields_collection(parts[0]))
            if len(parts) == 1 and parts[0] in self._collections:
                if parts[0] == "users" and not self.is_admin:
                    raise ApiError(403, "Insufficient rights")
                if parts[0] == "leads" and "only_deleted" in req.get("with", "").split(","):
                    return self._list(req, self._collections["leads_deleted"])
                return self._list(req, self._collections[parts[0]])
            if (
                len(parts) == 2
                and parts[0] in ("leads", "contacts", "companies", "tasks", "customers")
                and parts[1].isdigit()
            ):
                return self._one(req, parts[0], int(parts[1]))
        elif (
            m == "POST"
            and len(parts) == 2
            and parts[1] == "custom_fields"
            and parts[0] in ("contacts", "companies")
        ):
            return self._create_fields(req, parts[0])
        elif m == "PATCH" and parts and parts[0] in ("contacts", "companies") and len(parts) <= 2:
            return self._patch(req, parts[0], int(parts[1]) if len(parts) == 2 else None)
        raise ApiError(404 if m in ("GET", "POST", "PATCH") else 405, "Not found")

    def _hal(self, obj: dict, status: int = 200) -> Response:
        return Response.json(obj, status, HAL)

    def _link(self, path: str, query: str = "") -> dict:
        return {"href": f"{self.url}{path}" + (f"?{query}" if query else "")}
