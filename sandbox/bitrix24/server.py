"""A local Bitrix24 portal for tests and benchmarks: REST over HTTP on 127.0.0.1.

    with Bitrix24Sandbox(size=300, limits=False) as b24:
        requests.post(b24.webhook_url + "crm.deal.list", json={"start": -1}).json()

Serves the methods in `methods.METHODS` plus `batch`, through an incoming webhook
(`/rest/{user}/{secret}/{method}[.json]`) or OAuth (`{client_endpoint}{method}` with `auth`,
tokens from `/oauth/token/`). Shapes, errors and limits follow the real REST API's:
the leaky bucket (503 QUERY_LIMIT_EXCEEDED), with `cost_model=True` server time per list page
charged to a per-method operating budget (429 OPERATION_TIME_LIMIT), and the 60-second cap
on one request, a batch's sub-calls included (`request_cap_s`).
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import threading
import time
from urllib.parse import quote

from sandbox.httpbase import LeakyBucket, Request, Response, SandboxServer

from .auth import MEMBER_ID, OAuthServer, OperatingBudget
from .delivery import Deliverer
from .events import APP_ONLY, EventHub
from .methods import METHODS, Portal, Reply, scope_of
from .pages import Page, dumps, plain
from .params import ci_get, parse_body, parse_query
from .query import ApiError
from .render import fmt_dt

__all__ = ["Bitrix24Sandbox"]

MAX_BATCH = 50
_REF = re.compile(r"\$(result|result_next|result_total)\[([^\]]*)\]((?:\[[^\]]*\])*)")
_SECRET_KEYS = {"auth", "client_secret", "refresh_token", "code", "access_token"}


class Bitrix24Sandbox(SandboxServer):
    """A fake Bitrix24 portal backed by a sandbox `Dataset` (see the module docstring).

    Knobs: `latency_ms`, `fault_rate`/`faults` (see httpbase), `limits` (leaky bucket
    `bucket_size` burst, `drain_rate`/s), `cost_model` (sleep `page_cost_s` per list page,
    plus `count_cost_s` per matching row when the page counts `total`: the docs measured
    49.9 s for 2.39M rows), `operating_budget_s` per `operating_window_s` per method. Requests
    are served concurrently (a thread each), the sub-calls of a batch one after another.
    `time_scale`: real seconds slept per second of the cost model's server time, so a test can
    model minute-long requests in milliseconds (the `time` objects report server seconds).
    `request_cap_s` (60, the cloud's limit): a request whose server time passes it is cut; the
    sub-calls run so far stay done (and charged), the client gets the front end's 504 page
    (an HTML page, no JSON), at `request_cap_s * time_scale` real seconds; `cut_requests` counts
    them. (The docs say only that such a request is cut off by timeout; a gateway timeout is
    the model.)
    OAuth: `/oauth/authorize/` redirects to `oauth.redirect_uri` (set it) with a 30-second
    code; `oauth.advance(seconds)` moves the OAuth clock on. Token answers carry
    `client_endpoint`, the REST address of the portal (`{url}{rest_base}`); OAuth calls to any
    other address are refused as a portal refuses another portal's token (401 invalid_token).
    `admin` (True): whether the webhook's or app's user is a CRM administrator; only one may
    add custom fields (`crm.*.userfield.add` otherwise answers 400 "Access denied").
    Whole-portal answers: `portal_deleted = True` makes every REST call answer HTTP 500
    PORTAL_DELETED; `rest_blocked = True` every REST call 503 OVERLOAD_LIMIT (the manual block
    only Bitrix24's support lifts). `malform(kind, id)` serves an item
    in one of the malformed shapes of `sandbox.malformed`; `ignore_list_filters(entity)` makes
    a list method answer as if no filter were given (a list that repeats itself). Observability: `request_log`,
    `limit_errors`, `limit_counts`, `oauth.refreshes`.

    Events (`events`, see `sandbox.bitrix24.events`): the app binds handlers with `event.bind`
    (OAuth only: through the incoming webhook the event methods answer 403 WRONG_AUTH_TYPE);
    every change of the dataset's deals, leads, contacts, companies, activities (calls
    included) and tasks then goes to the online handlers, with the app's `application_token`
    (an attribute), and into the offline queue. `add_outgoing_webhook(url, events)` stands for
    an outgoing webhook configured in the UI and returns its token. Deliveries go out from the
    queue server's thread, `deliveries` (`delivery.Deliverer`): its `sent` log and knobs
    (`drop_next`, `repeat_next`, `delay_s`, `pause`/`resume`, `forge`, `wait_idle`).
    """

    def __init__(
        self,
        dataset=None,
        *,
        host="127.0.0.1",
        port=0,
        seed=1,
        size=1000,
        latency_ms=0,
        limits=True,
        bucket_size=50,
        drain_rate=2.0,
        cost_model=False,
        page_cost_s=0.1,
        count_cost_s=2e-5,
        operating_budget_s=480.0,
        operating_window_s=600.0,
        webhook_user=1,
        webhook_secret="sandboxsecret123",
        client_id="sandbox.app",
        client_secret="sandbox-secret",
        scopes=("crm", "task", "user", "telephony"),
        fault_rate=0.0,
        faults=("500",),
        https=False,
        timeout_hold_s=1.0,
        access_ttl_s=3600,
        time_scale=1.0,
        request_cap_s=60.0,
        rest_base="/rest/",
        admin=True,
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
        if dataset is None:
            from sandbox.data import generate

            dataset = generate(seed=seed, size=size)
        self.dataset = dataset
        self.portal = Portal(dataset)
        self.portal.user_id = webhook_user
        self.limits, self.cost_model, self.page_cost_s = limits, cost_model, page_cost_s
        self.count_cost_s = count_cost_s
        self.time_scale, self.request_cap_s = time_scale, request_cap_s
        self.cut_requests = 0
        if not (rest_base.startswith("/") and rest_base.endswith("/rest/")):
            raise ValueError("rest_base must look like /rest/ or /PATH/rest/")
        self.rest_base = rest_base
        self.portal.admin = admin
        self.portal_deleted = False  # every REST call: 500 PORTAL_DELETED
        self.rest_blocked = False  # every REST call: 503 OVERLOAD_LIMIT
        self.bucket_size, self.drain_rate = bucket_size, drain_rate
        self._buckets: dict[str, LeakyBucket] = {}
        self.operating = OperatingBudget(operating_budget_s, operating_window_s)
        self.webhook_user, self.webhook_secret = str(webhook_user), webhook_secret
        self.scopes = tuple(scopes)
        self.oauth = OAuthServer(client_id, client_secret, access_ttl_s)
        self.limit_errors = 0
        self.limit_counts = {"QUERY_LIMIT_EXCEEDED": 0, "OPERATION_TIME_LIMIT": 0}
        self._count_lock = threading.Lock()
        self.application_token = secrets.token_hex(16)  # the app's, sent with its events
        self.deliveries = Deliverer()
        self.events = EventHub(dataset, self.deliveries, self._event_auth)
        self.portal.events = self.events
        dataset.listen(self.events.on_change)

    # ---- addresses and knobs ------------------------------------------------------------
    @property
    def webhook_url(self) -> str:
        return f"{self.url}/rest/{self.webhook_user}/{self.webhook_secret}/"

    @property
    def oauth_url(self) -> str:
        return f"{self.url}/oauth/token/"

    @property
    def client_endpoint(self) -> str:
        return f"{self.url}{self.rest_base}"

    @property
    def admin(self) -> bool:
        """Whether the webhook's (and the app's) user is a CRM administrator."""
        return self.portal.admin

    @admin.setter
    def admin(self, value: bool) -> None:
        self.portal.admin = bool(value)

    def issue_code(self) -> str:
        """An OAuth authorization code (valid 30 s, single use), as the redirect would bring."""
        return self.oauth.issue_code()

    def malform(self, kind: str, item_id: int) -> None:
        """Serve the item `item_id` malformed from now on, as `sandbox.malformed.BITRIX24[kind]`
        says (the dataset keeps the true values)."""
        self.portal.malformed.add(kind, item_id)

    def repeat_id(self, item_id: int, entity: str = "deal") -> None:
        """Serve the item `item_id` under the id of the item before it on its page, from now on
        (`sandbox.malformed.Malformer.repeat_id`)."""
        self.portal.malformed.repeat_id(entity, item_id)

    def ignore_list_filters(self, entity: str) -> None:
        """The list of `entity` (say "company": crm.company.list) answers as if no `filter`
        were given, as a misconfigured proxy or a mock portal serving one canned answer does:
        `>ID` and `>=DATE_MODIFY` are dropped, so the same first 50 rows come back for every
        page and a reader that pages by the last ID it read never gets further."""
        self.portal.ignoring_filters.add(entity)

    def add_outgoing_webhook(self, url: str, events) -> str:
        """An outgoing webhook as an admin configures it in the UI (Developer resources):
        `events` (names like ONCRMDEALUPDATE) go to `url`; returns the webhook's token."""
        return self.events.add_outgoing_webhook(url, events)

    def _event_auth(self) -> dict:
        """The `auth[...]` values of the app's event deliveries."""
        return {
            "domain": f"{self.host}:{self.port}",
            "client_endpoint": self.client_endpoint,
            "server_endpoint": f"{self.url}/oauth/rest/",
            "member_id": MEMBER_ID,
            "application_token": self.application_token,
        }

    def stop(self) -> None:
        self.deliveries.stop()
        super().stop()

    def expire_access_tokens(self) -> None:
        """Every access token issued so far answers 401 expired_token from now on."""
        self.oauth.expire_all()

    # ---- HTTP entry -----------------------------------------------------------------------
    def handle(self, req: Request) -> Response:
        path = req.path
        try:
            params = parse_query(req.query)
            if req.body:
                params.update(parse_body(req.headers.get("content-type", ""), req.body))
        except ValueError:
            return _error(ApiError("INVALID_REQUEST", "Request body is not valid JSON", 400))
        if path.rstrip("/") == "/oauth/token":
            return self._token(params)
        if path.rstrip("/") == "/oauth/authorize":
            return self._authorize(params)
        m = re.fullmatch(
            r"(/(?:[A-Za-z0-9_.-]+/)*?rest/)(?:(\d+)/([^/]+)/)?([A-Za-z0-9_.]+?)(?:\.json)?/?", path
        )
        if not m or (m.group(2) is not None and m.group(1) != "/rest/"):
            return Response.json({"error": "NOT_FOUND", "error_description": "Not found"}, 404)
        base, user, secret, method = m.group(1), m.group(2), m.group(3), m.group(4).lower()
        t0 = time.time()
        if self.portal_deleted:
            # Documented as HTTP 500 (and, in a later version of the page, 403): a client must
            # go by the code, and a 500 is the answer it would be tempted to retry.
            return _error(ApiError("PORTAL_DELETED", "Portal was deleted", 500))
        if self.rest_blocked:
            return _error(ApiError("OVERLOAD_LIMIT", "REST API is blocked due to overload", 503))
        if self.limits and not self._bucket(req).allow():
            self._count("QUERY_LIMIT_EXCEEDED")
            return self.limit_response()
        try:
            if user is not None:
                if user != self.webhook_user or secret != self.webhook_secret:
                    raise ApiError("NO_AUTH_FOUND", "Wrong authorization data", 401)
            else:
                self.oauth.check(params.get("auth"))
                if base != self.rest_base:  # another address than the token's client_endpoint
                    raise ApiError("invalid_token", "Unable to get application by token", 401)
            params.pop("auth", None)
            app = user is None  # OAuth: the application's context
            if method == "batch":
                return Response(200, dumps(self._batch(params, app)))
            return Response(200, dumps(self._call(method, params, app)))
        except ApiError as e:
            return _error(e, self._time_for(e))
        except _Cut:
            return self._cut(t0)

    def _bucket(self, req: Request) -> LeakyBucket:
        # Bitrix24 counts per portal and source IP; every sandbox client is local, so a
        # proxy-style header lets a test simulate a second machine.
        ip = req.headers.get("x-forwarded-for", "127.0.0.1")
        b = self._buckets.get(ip)
        if b is None:
            b = self._buckets.setdefault(ip, LeakyBucket(self.bucket_size, self.drain_rate))
        return b

    def _count(self, code: str) -> None:
        with self._count_lock:
            self.limit_errors += 1
            self.limit_counts[code] += 1

    def _token(self, params: dict) -> Response:
        try:
            out = self.oauth.token(params)
        except ApiError as e:
            return _error(e)
        out.update(
            {
                "client_endpoint": self.client_endpoint,
                "server_endpoint": f"{self.url}/oauth/rest/",
                "domain": f"{self.host}:{self.port}",
                "member_id": MEMBER_ID,
                "scope": ",".join(self.scopes),
                "status": "L",
                "user_id": int(self.webhook_user),
            }
        )
        return Response.json(out)

    def _authorize(self, params: dict) -> Response:
        try:
            to = self.oauth.authorize(
                {**params, "_domain": f"{self.host}:{self.port}", "_scope": ",".join(self.scopes)}
            )
        except ApiError as e:
            return _error(e)
        return Response(302, b"", "", {"Location": to})

    # ---- one method call ------------------------------------------------------------------
    def _call(self, method: str, params: dict, app: bool = False) -> dict:
        """Run one method; returns the envelope. Raises ApiError."""
        reply, tm = self._run(method, params, app)
        self._check_cap(tm["duration"])
        out = {"result": reply.result}
        if reply.total is not None:
            out["total"] = reply.total
        if reply.next is not None:
            out["next"] = reply.next
        out["time"] = tm
        return out

    def _run(self, method: str, params: dict, app: bool = False) -> tuple[Reply, dict]:
        fn = METHODS.get(method)
        if fn is None:
            raise ApiError("ERROR_METHOD_NOT_FOUND", "Method not found!", 404)
        if method in APP_ONLY and not app:
            raise ApiError("WRONG_AUTH_TYPE", "Application context required", 403)
        scope = scope_of(method)
        if scope and scope not in self.scopes:
            raise ApiError(
                "insufficient_scope",
                "The request requires higher privileges than provided by the webhook token",
                403,
            )
        if self.operating.blocked(method):
            self._count("OPERATION_TIME_LIMIT")
            raise ApiError(
                "OPERATION_TIME_LIMIT",
                "Method is blocked due to operation time limit.",
                429,
                {"method": method},
            )
        t0, cpu0 = time.time(), time.thread_time()
        with self.events.call(ci_get(params, "auth_connector")):  # one event per object
            reply = fn(self.portal, params)
        spent = None
        if self.cost_model:
            # A portal runs concurrent requests on separate workers: charge this call's own
            # work, not the time it waited for the sandbox's other threads (one Python process).
            spent = time.thread_time() - cpu0 + self._cost(reply)
            time.sleep(self._cost(reply) * self.time_scale)
        t1 = time.time()
        spent = t1 - t0 if spent is None else spent
        self.operating.charge(method, spent)
        return reply, self._time(t0, t1, method, spent)

    def _check_cap(self, spent: float) -> None:
        if self.request_cap_s is not None and spent > self.request_cap_s:
            raise _Cut()

    def _cut(self, t0: float) -> Response:
        """The front end's answer to a request cut at the cap: sent when the cap ran out."""
        with self._count_lock:
            self.cut_requests += 1
        time.sleep(max(0.0, t0 + self.request_cap_s * self.time_scale - time.time()))
        return Response(
            504,
            b"<html><head><title>504 Gateway Time-out</title></head><body><center><h1>504 "
            b"Gateway Time-out</h1></center><hr><center>nginx</center></body></html>",
            "text/html",
        )

    def _cost(self, reply: Reply) -> float:
        """Server seconds a call takes: counting `total` costs more the more rows match."""
        if reply.page == "counted":
            return self.page_cost_s + self.count_cost_s * (reply.total or 0)
        if reply.page == "fast":
            return self.page_cost_s
        return self.page_cost_s / 2

    def _time(self, t0: float, t1: float, method: str | None, spent: float | None = None) -> dict:
        used, reset = self.operating.used(method) if method else (0.0, int(t1))
        spent = t1 - t0 if spent is None else spent
        return {
            "start": t0,
            "finish": t1,
            "duration": spent,
            "processing": spent,
            "date_start": fmt_dt(int(t0)),
            "date_finish": fmt_dt(int(t1)),
            "operating_reset_at": reset,
            "operating": round(used, 6),
        }

    def _time_for(self, e: ApiError) -> dict | None:
        if e.code != "OPERATION_TIME_LIMIT":
            return None
        now = time.time()
        return self._time(now, now, e.extra.get("method"))

    # ---- batch ----------------------------------------------------------------------------
    def _batch(self, params: dict, app: bool = False) -> dict:
        t0 = time.time()
        cmd = ci_get(params, "cmd")
        if isinstance(cmd, list):
            items = [(str(i), c) for i, c in enumerate(cmd)]
        elif isinstance(cmd, dict):
            items = [(str(k), c) for k, c in cmd.items()]
        else:
            raise ApiError("INVALID_ARG_VALUE", "Parameter 'cmd' must be array.", 400)
        if len(items) > MAX_BATCH:
            raise ApiError("ERROR_BATCH_LENGTH_EXCEEDED", "Max batch length exceeded", 400)
        halt = str(ci_get(params, "halt", "0")).lower() in ("1", "true", "y")
        spent = 0.0  # server seconds of the sub-calls so far: the request's time
        sec = {"result": {}, "result_error": {}, "result_total": {}, "result_next": {}, "result_time": {}}
        for key, text in items:
            try:
                method, _, query = _resolve(str(text), sec).partition("?")
                method = method.strip().lower().removesuffix(".json")
                if method == "batch":
                    raise ApiError(
                        "ERROR_BATCH_METHOD_NOT_ALLOWED", "Method is not allowed for batch usage", 405
                    )
                reply, tm = self._run(method, parse_query(query), app)
                spent += tm["duration"]
                self._check_cap(spent)
            except ApiError as e:
                sec["result_error"][key] = {"error": e.code, "error_description": e.description}
                if halt:
                    break
                continue
            sec["result"][key] = reply.result
            if reply.total is not None:
                sec["result_total"][key] = reply.total
            if reply.next is not None:
                sec["result_next"][key] = reply.next
            sec["result_time"][key] = tm
        t1 = time.time()
        # The outer batch is not charged to any method's operating budget.
        return {"result": {k: _php_array(v) for k, v in sec.items()}, "time": self._time(t0, t1, None)}

    # ---- HTTPS ----------------------------------------------------------------------------
    def _wrap_socket(self, httpd) -> None:
        if self.https and shutil.which("openssl") is None:
            raise RuntimeError("https=True needs the `openssl` command-line tool on PATH")
        super()._wrap_socket(httpd)  # self-signed cert for 127.0.0.1; see `cert_path`

    # ---- plumbing overrides -----------------------------------------------------------------
    def fault_response(self) -> Response:
        # Real portals answer 5xx with an HTML page from the web server, not JSON.
        return Response(
            500,
            b"<html><head><title>500 Internal Server Error</title></head>"
            b"<body><h1>Internal Server Error</h1></body></html>",
            "text/html",
        )

    def limit_response(self) -> Response:
        return _error(ApiError("QUERY_LIMIT_EXCEEDED", "Too many requests", 503))

    def _log(self, req: Request, status, fault) -> None:
        """Log body parameters too, with the webhook secret and tokens masked."""
        try:
            params = parse_query(req.query)
            if req.body:
                params.update(parse_body(req.headers.get("content-type", ""), req.body))
        except ValueError:
            params = {}
        for k in _SECRET_KEYS & set(params):
            params[k] = "***"
        path = req.path.replace(f"/{self.webhook_secret}/", "/***/")
        with self._log_lock:
            self.request_log.append(
                {
                    "method": req.method,
                    "path": path,
                    "params": params,
                    "status": status,
                    "fault": fault,
                    "at": time.time(),
                }
            )


class _Cut(Exception):
    """The request's server time passed `request_cap_s`: it is cut off."""


def _error(e: ApiError, tm: dict | None = None) -> Response:
    body = {"error": e.code, "error_description": e.description}
    if tm:
        body["time"] = tm
    return Response.json(body, e.status)


def _php_array(d: dict):
    """PHP's json_encode: an empty or 0..n-1-keyed array is a JSON list, else an object."""
    if not d:
        return []
    if list(d) == [str(i) for i in range(len(d))]:
        return list(d.values())
    return d


def _resolve(text: str, sec: dict) -> str:
    """Substitute `$result[key][0][ID]`-style references with earlier sub-call results."""

    def sub(m):
        node = sec.get(m.group(1), {}).get(m.group(2))
        for part in re.findall(r"\[([^\]]*)\]", m.group(3)):
            if (
                isinstance(node, (list, Page))
                and part.lstrip("-").isdigit()
                and -len(node) <= int(part) < len(node)
            ):
                node = node[int(part)]
            elif isinstance(node, dict) and part in node:
                node = node[part]
            else:
                node = None
                break
        if node is None:
            return ""
        if isinstance(node, bool):
            node = int(node)
        if isinstance(node, (dict, list, Page)):
            return quote(json.dumps(plain(node)), safe="")
        return quote(str(node), safe="")

    return _REF.sub(sub, text)
