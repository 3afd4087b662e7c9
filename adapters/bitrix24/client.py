"""Calling Bitrix24: auth (webhook, or OAuth via `auth.OAuthTokens`), single calls, `batch`,
errors, limits.

`Bitrix24Client.call(method, params)` returns the response envelope; `batch(cmds)` sends up
to 50 sub-calls in one request and returns a `BatchResult` whose sections are parsed
defensively (dict- or list-shaped; an empty error code with a description is an error).
Every call passes the leaky bucket, the per-method operating budget and the throttle (how
many requests are in flight, `adapters.bitrix24.throttle`), and feeds the budget, the throttle
and the request cap (how many sub-calls fit in one request, `adapters.bitrix24.duration`) with
the server's `time` reports. `reserve(counts)` sizes a batch by the budget and the cap. A batch
that fails the way a request cut at 60 s does is not sent again the same way (`batch`). Errors
become the connector's exceptions with a message the admin can act on (`answers` reads what an
error answer says); secrets never reach a message.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit

import requests
from requests.adapters import HTTPAdapter

from adapters import redact as redaction
from adapters.bitrix24.answers import (
    STOP_CODES,
    RequestCut,
    admin_only,
    cut_like,
    error_code,
    retryable,
)
from adapters.bitrix24.auth import OAuthTokens
from adapters.bitrix24.duration import CAP_S, RequestCap, durations
from adapters.bitrix24.limits import LeakyBucket, OperatingBudget, parse_reset
from adapters.bitrix24.throttle import Answer, Throttle
from adapters.errors import (
    AuthError,
    BlockedError,
    NotPermitted,
    ScopeError,
    StreamError,
    UnreachableError,
)
from adapters.http import CONNECT_TIMEOUT_S, HttpClient, interruptible
from adapters.limits import portal_of
from adapters.redact import redact

MAX_BATCH = 50
SCOPES = (
    ("crm.", "crm"),
    ("tasks.", "task"),
    ("task.", "task"),
    ("user.", "user"),
    ("voximplant.", "telephony"),
    ("telephony.", "telephony"),
)
AUTH_CODES = {
    "NO_AUTH_FOUND": "the webhook URL or access token is wrong or was revoked; create a new "
    "incoming webhook (or re-authorize the app) and update the config",
    "INVALID_TOKEN": "the access token is not recognised; run `crm-connector auth {name}`",
    "INVALID_CREDENTIALS": "the webhook user lacks CRM permissions; grant them in Bitrix24",
    "ACCESS_DENIED": "access denied ({desc}); check the plan allows REST and the user's permissions",
    "USER_ACCESS_ERROR": "the webhook user has no access; use an active employee account",
    "PAYMENT_REQUIRED": "the portal's plan does not include REST access",
    "NOT_INSTALLED": "the app is not installed on the portal; install it, then run "
    "`crm-connector auth {name}`",
    "INVALID_REQUEST": "the portal refused the request ({desc}); use an https:// URL",
    "WRONG_AUTH_TYPE": "this method needs another kind of authorization ({desc})",
}


def scope_of(method: str) -> str:
    for prefix, scope in SCOPES:
        if method.startswith(prefix):
            return scope
    return method.split(".", 1)[0]


class Ref(str):
    """A `$result[key][...]` reference: goes into a batch command unencoded."""


def ref(key: str, *path) -> Ref:
    return Ref(f"$result[{key}]" + "".join(f"[{p}]" for p in path))


def encode(params: dict) -> str:
    """PHP-style query (`filter[>ID]=5&select[0]=ID`) for a batch command string.

    Values are URL-encoded (a `+` in a datetime offset must arrive as `+`); `Ref`s are not,
    so the server can substitute them.
    """
    pairs: list[str] = []

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}[{k}]" if prefix else str(k), v)
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                walk(f"{prefix}[{i}]", v)
        else:
            key = quote(prefix, safe="[]")
            if value is None:
                value = ""
            elif isinstance(value, bool):
                value = "Y" if value else "N"
            text = str(value) if isinstance(value, Ref) else quote(str(value), safe="")
            pairs.append(f"{key}={text}")

    walk("", params)
    return "&".join(pairs)


@dataclass
class ApiError:
    code: str
    description: str


@dataclass
class BatchResult:
    results: dict[str, object] = field(default_factory=dict)
    errors: dict[str, ApiError] = field(default_factory=dict)
    totals: dict[str, object] = field(default_factory=dict)
    times: dict[str, dict] = field(default_factory=dict)


def _envelope(response: requests.Response) -> dict | None:
    """The JSON object a reply carries (already parsed for a 2xx), or None when it has none."""
    if 200 <= response.status_code < 300:
        body = response.parsed
    else:
        try:
            body = response.json()
        except ValueError:
            return None
    return body if isinstance(body, dict) else None


def _section(value, keys: list[str], only: list[str] | None = None) -> dict:
    """A batch section as a dict; list-shaped ones map by position (onto `only` if given)."""
    if isinstance(value, dict):
        return {str(k): v for k, v in value.items()}
    if isinstance(value, list):
        names = only if only is not None and len(value) == len(only) else keys
        return {names[i]: v for i, v in enumerate(value) if i < len(names)}
    return {}


def parse_batch(body: dict, keys: list[str]) -> BatchResult:
    """Parse `{"result": {"result", "result_error", "result_total", "result_time"}}`."""
    outer = body.get("result")
    if not isinstance(outer, dict):
        raise ValueError("batch reply has no result object")
    res = _section(outer.get("result"), keys)
    missing = [k for k in keys if k not in res]
    raw_errors = _section(outer.get("result_error"), keys, missing)
    errors = {}
    for k, e in raw_errors.items():
        if isinstance(e, dict):
            code, desc = str(e.get("error") or ""), str(e.get("error_description") or "")
        else:
            code, desc = "", str(e or "")
        if code or desc:
            errors[k] = ApiError(code.upper() if code.isascii() else code, desc)
    return BatchResult(
        results=res,
        errors=errors,
        totals=_section(outer.get("result_total"), keys),
        times={k: v for k, v in _section(outer.get("result_time"), keys).items() if isinstance(v, dict)},
    )


class Bitrix24Client:
    """One portal: webhook or OAuth auth, limiter, budget, and the error policy."""

    def __init__(self, source, tokens=None, http: HttpClient | None = None, limits=None):
        self.cfg = source
        self.name = source.name
        if source.webhook_url:  # the config registers these too; an adapter built in code may not
            redaction.register(source.webhook_url)
            parts = [p for p in urlsplit(source.webhook_url).path.split("/") if p]
            if len(parts) >= 3:
                redaction.register(parts[2])
        redaction.register(source.client_secret)
        if limits is not None:  # shared by every process (`adapters.limits`): keyed by portal
            portal = portal_of(source.webhook_url or source.portal_url)
            self.bucket = limits.leaky_bucket(
                "bitrix24", portal, source.bucket_size, source.requests_per_second or 2.0
            )
            self.budget = limits.operating_budget("bitrix24", portal, source.operating_budget_s)
        else:
            self.bucket = LeakyBucket(source.bucket_size, source.requests_per_second or 2.0)
            self.budget = OperatingBudget(source.operating_budget_s)
        # Requests in flight: up to max_workers (the admin's ceiling), never past the burst.
        self.throttle = Throttle(min(int(source.max_workers or 1), int(self.bucket.capacity)))
        self.http = http or HttpClient(
            source.name,
            limiter=self.bucket,
            verify=source.verify_tls,
            timeout=(min(CONNECT_TIMEOUT_S, source.timeout_s), source.timeout_s),
        )
        pooled = HTTPAdapter(pool_connections=1, pool_maxsize=self.throttle.ceiling)
        for prefix in ("https://", "http://"):  # a kept connection per request in flight
            self.http.session.mount(prefix, pooled)
        # 429 (OPERATION_TIME_LIMIT) waits for the method's reset time, not a generic backoff.
        self.http.retry_statuses = retryable
        self.http.session.hooks["response"].append(self._count_limits)
        self.limit_errors = 0
        self.cap = RequestCap()
        self.cuts = 0  # batches cut at the time cap (benchmarks print it)
        self.oauth = OAuthTokens(source, tokens, self.http)
        self.sleep = time.sleep

    @property
    def requests(self) -> int:
        return self.http.requests

    def _count_limits(self, response, *args, **kwargs):
        """A limit answer slows this source down: 429 (OPERATION_TIME_LIMIT), and a 503 only
        when Bitrix24 says QUERY_LIMIT_EXCEEDED. Another 503 (a proxy's page, an overload
        block) says nothing of the request rate: taken for one, it held every later request of
        the sync to the bucket's drain of 2 a second."""
        if response.status_code == 429:
            self.limit_errors += 1
            self.throttle.congested()
        elif response.status_code == 503 and error_code(response) == "QUERY_LIMIT_EXCEEDED":
            self.limit_errors += 1
            self.throttle.congested()
            self.bucket.penalise()

    # ---- auth ----------------------------------------------------------------------------

    @property
    def uses_webhook(self) -> bool:
        return bool(self.cfg.webhook_url)

    def _url(self, method: str) -> str:
        if self.uses_webhook:
            return f"{self.cfg.webhook_url}{method}"
        # the REST address the token answer gave, which may differ from the configured portal's
        return f"{self.oauth.endpoint() or self.cfg.portal_url + '/rest/'}{method}"

    def exchange_code(self, code: str) -> str:
        """Trade an authorization code for the first token pair and store it."""
        if self.uses_webhook:
            return f"source '{self.name}' uses an incoming webhook; nothing to authorize"
        return self.oauth.exchange_code(code)

    # ---- calls ---------------------------------------------------------------------------

    def reserve(self, counts: dict[str, int]) -> tuple[int, dict[str, float]]:
        """How many sub-calls of each method (at most its count) the next batch may hold, under
        the request cap and the operating budget; and the budget reservation to hand `batch`."""
        room = self.cap.room(counts)
        return self.budget.take({m: min(c, room) for m, c in counts.items()})

    def call(self, method: str, params: dict | None = None) -> dict:
        """One method call; returns the envelope ({"result", "total", "time", ...})."""
        n, held = self.budget.take({method: 1})
        try:
            with self.throttle.slot((method,)):
                body = self._post(method, dict(params or {}), charge=method)
                self.throttle.answered(self._answers({"c": (method, params or {})}, {"c": body.get("time")}))
        finally:
            self.budget.release(held)
        self.budget.observe(method, body.get("time"))
        self.cap.observe(durations({"c": (method, params)}, {"c": body.get("time")}))
        return body

    def batch(
        self, cmds: dict[str, tuple[str, dict]], held: dict | None = None, linked: bool = False
    ) -> BatchResult:
        """Run up to 50 sub-calls in one request (halt=0). `held`: a budget reservation.

        Independent sub-calls expected to take longer than the request cap allows go in halves
        at once; a request that failed as one cut at the time cap does is not sent again the
        same way: independent sub-calls go again in two halves; `linked` ones (a chain whose
        commands read `$result[...]` of earlier ones) raise RequestCut, for the caller to
        re-plan."""
        counts: dict[str, int] = {}
        for m, _ in cmds.values():
            counts[m] = counts.get(m, 0) + 1
        if linked or len(cmds) == 1 or self.cap.seconds(counts) <= self.cap.target_s:
            try:
                return self._batch(cmds, held)
            except RequestCut:
                if linked:
                    raise
        elif held:  # planned past the cap by a caller that did not ask `reserve`: split now
            self.budget.release(held)
        keys = list(cmds)
        out = BatchResult()
        for part in (keys[: len(keys) // 2], keys[len(keys) // 2 :]):
            res = self.batch({k: cmds[k] for k in part})
            out.results.update(res.results)
            out.errors.update(res.errors)
            out.totals.update(res.totals)
            out.times.update(res.times)
        return out

    def _batch(self, cmds: dict[str, tuple[str, dict]], held: dict | None) -> BatchResult:
        if len(cmds) > MAX_BATCH:
            raise ValueError("at most 50 commands per batch")
        cmd = {k: f"{m}?{encode(p)}" for k, (m, p) in cmds.items()}
        with self.throttle.slot(m for m, _ in cmds.values()):
            try:
                body = self._post("batch", {"halt": 0, "cmd": cmd}, charge=None, subcalls=len(cmds))
            except RequestCut:
                self.cuts += 1
                self.cap.cut([m for m, _ in cmds.values()])
                self.throttle.congested()  # the portal is slower than we planned for
                raise
            finally:
                if held:
                    self.budget.release(held)
            try:
                result = parse_batch(body, list(cmds))
            except ValueError:
                raise StreamError(f"Bitrix24 source '{self.name}': unexpected batch reply shape") from None
            self.cap.observe(durations(cmds, result.times))
            for k, t in result.times.items():
                if k in cmds:
                    self.budget.observe(cmds[k][0], t)
            for k, err in result.errors.items():
                if err.code == "OPERATION_TIME_LIMIT" and k in cmds:
                    self.limit_errors += 1
                    self.budget.block(cmds[k][0], None)
                    self.throttle.congested()
            self.throttle.answered(self._answers(cmds, result.times))
        return result

    def _answers(self, cmds: dict[str, tuple[str, dict]], times: dict) -> list[Answer]:
        """Per method of a request: its sub-calls' server time and the budget left after."""
        out: dict[str, Answer] = {}
        for key, (method, params) in cmds.items():
            a = out.setdefault(method, Answer(method, calls=0, kind=f"{method} {params.get('select')}"))
            t = times.get(key)
            if not isinstance(t, dict):
                continue
            try:
                a.seconds = (a.seconds or 0.0) + float(t.get("duration", t.get("processing")))
                a.calls += 1
            except (TypeError, ValueError):
                pass
            try:  # the later sub-call reports the larger total
                left = self.budget.budget - self.budget.safety - float(t["operating"])
                a.left = left if a.left is None else min(a.left, left)
            except (KeyError, TypeError, ValueError):
                pass
        return list(out.values())

    def _post(
        self, method: str, params: dict, charge: str | None, attempts: int = 6, subcalls: int = 1
    ) -> dict:
        """POST with auth; handles expired tokens and operating-time blocks. A 2xx that is not
        JSON (an HTML page, a cut body) is retried by the HttpClient like a 5xx. A request of
        several sub-calls that fails as a cut one does is not retried: RequestCut."""
        refreshed = False
        for _ in range(attempts):
            token = None
            if not self.uses_webhook:
                token = self.oauth.access_token()
                params["auth"] = token
            response = self._send(method, params, subcalls)
            body = _envelope(response)
            if body is None:
                if response.status_code != 429:
                    raise StreamError(
                        f"Bitrix24 source '{self.name}': {method} answered HTTP "
                        f"{response.status_code} with a body that is not a JSON object"
                    )
                body = {}
            code = str(body.get("error") or "").upper()
            if response.status_code < 400 and not code:
                return body
            desc = str(body.get("error_description") or "")
            # invalid_token too (the official JS SDK refreshes on both; docs/api-notes.md): a
            # refresh whose reply was lost killed the access token it was issued with, and only
            # the refresh can say the pair is spent
            if code in ("EXPIRED_TOKEN", "INVALID_TOKEN") and token and not refreshed:
                self.oauth.refresh(token)
                refreshed = True
                continue
            if code == "OPERATION_TIME_LIMIT" or response.status_code == 429:
                self.throttle.congested()
                self._wait_out(charge, body)
                continue
            if code in STOP_CODES:
                message = f"Bitrix24 source '{self.name}': {STOP_CODES[code]}"
                self.http.block(message)  # every later request of this source: refused unsent
                raise BlockedError(message)
            err = self.error(method, code, desc, response.status_code)
            if isinstance(err, NotPermitted) and method.endswith(".userfield.add"):
                raise NotPermitted(admin_only(self.name, method, params.get("fields"))) from None
            raise err
        raise StreamError(
            f"Bitrix24 source '{self.name}': {method} still limited or expired after {attempts} attempts"
        )

    def _send(self, method: str, params: dict, subcalls: int = 1) -> requests.Response:
        cut: list[BaseException] = []

        def retry(exc: BaseException) -> bool:
            # the same sub-calls again would be cut again: smaller batches, the caller's part
            if subcalls > 1 and cut_like(exc):
                cut.append(exc)
                return False
            return True

        try:
            return self.http.request("POST", self._url(method), json=params, expect_json=True, retry=retry)
        except StreamError as err:
            if cut:
                raise RequestCut(
                    f"Bitrix24 source '{self.name}': a {method} of {subcalls} sub-calls failed as "
                    f"a request cut at the {CAP_S:g}-second limit does "
                    f"({str(err).rpartition(': ')[2]}); sent again in smaller batches"
                ) from None
            raise StreamError(
                f"Bitrix24 source '{self.name}': {method} failed {str(err).partition(' failed ')[2]}"
            ) from None
        except UnreachableError as err:
            raise UnreachableError(f"Bitrix24 {err}") from None

    def _wait_out(self, charge: str | None, body: dict) -> None:
        """An operating-time block or 429: wait for the method's reset time."""
        until = parse_reset((body.get("time") or {}).get("operating_reset_at"))
        if charge:
            self.budget.block(charge, until)
            _, held = self.budget.take({charge: 1})  # waits out the block
            self.budget.release(held)
        else:
            self.sleep(min(60.0, max(1.0, (until or 0) - time.time())))

    def error(self, method: str, code: str, desc: str, status: int | None = None) -> Exception:
        """Map a Bitrix24 error to AuthError / ScopeError / StreamError with advice."""
        desc = redact(desc)[:300]
        who = f"Bitrix24 source '{self.name}'"
        if code == "INSUFFICIENT_SCOPE":
            scope = scope_of(method)
            return ScopeError(
                f"{who}: {method} needs the '{scope}' scope, which the "
                f"{'webhook' if self.uses_webhook else 'app'} lacks; add it in "
                "Bitrix24 (or drop the stream from the config)"
            )
        if code == "ACCESS_DENIED" and scope_of(method) not in ("crm",):
            return ScopeError(
                f"{who}: access to {method} denied ({desc}); give the user the "
                f"'{scope_of(method)}' permissions, or drop the stream"
            )
        if code == "EXPIRED_TOKEN":
            return AuthError(
                f"{who}: the access token expired and could not be refreshed; run "
                f"`crm-connector auth {self.name} --code CODE`"
            )
        if code in AUTH_CODES:
            return AuthError(f"{who}: " + AUTH_CODES[code].format(name=self.name, desc=desc))
        if not code and "access denied" in (line.strip(" .!").lower() for line in desc.splitlines()):
            # CRM methods refuse a user's missing right this way (HTTP 400, no code)
            return NotPermitted(f"{who}: {method} refused: {'; '.join(desc.splitlines())}")
        return StreamError(
            f"{who}: {method} failed: {code or 'error'}: {desc}" + (f" (HTTP {status})" if status else "")
        )

    def host(self) -> str:
        return urlsplit(self.cfg.webhook_url or self.cfg.portal_url or "").hostname or "?"

    def watch(self, stop) -> None:
        """Obey `stop` in the waits of its own: the operating budget's, a 429's and the wait
        for a free slot among the requests in flight."""
        self.throttle.stop = stop
        pause = interruptible(stop)
        if hasattr(self.budget, "sleep"):
            self.budget.sleep = pause
        self.sleep = pause

    def close(self) -> None:
        self.http.close()
