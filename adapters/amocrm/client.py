"""Calling amoCRM: pacing, one call with its errors mapped, and paging with prefetch.

`AmoClient.send` makes one call and turns 401 / 403 / other 4xx into the connector's
exceptions (a 200 that is not JSON is retried by the HttpClient like a 502). `AmoClient.pages`
reads a list endpoint: page 1 is fetched alone, so a run with nothing new costs one request
per stream; when it has a `next` link, the following page numbers are prefetched by a small
thread pool and yielded in order, so the rate limiter, not latency, sets the pace (at most
`max_workers` prefetched pages past the last one are wasted, answered 204).
"""

from __future__ import annotations

import collections
import threading
from typing import Iterator

from adapters.amocrm.auth import AmoAuth
from adapters.amocrm.keyset import Stall, hashable
from adapters.amocrm.streams import Request
from adapters.errors import AuthError, BlockedError, StreamError, UnreachableError
from adapters.http import CONNECT_TIMEOUT_S, ContextPool, HttpClient, RateLimiter
from adapters.limits import portal_of
from adapters.redact import redact

WINDOW_MARGIN_S = 0.05
# Shared limits (many worker processes, many threads each): a grant travels farther to the
# wire (a busy worker's GIL, its thread pool) and the jitter measured between a grant in Redis
# and the request's arrival reached 100-300 ms on a loaded host, so the window is widened more.
SHARED_WINDOW_MARGIN_S = 0.25
FIELDS_PAGE = 50  # custom-field lists: at most 50 a page, whatever `limit` asks


def _window(rate: float, margin_s: float) -> tuple[float, float]:
    """(rate, per) for a limiter that lets `rate` requests (whole, at least 1) into a window of
    1 s + `margin_s`: limiters count `int(rate * per)` per window."""
    if rate < 1:
        return rate, 1.0
    per = 1.0 + margin_s
    return (int(rate) + 1e-6) / per, per


class PacedLimiter(RateLimiter):
    """The sliding window, with requests also spaced evenly (`per / rate` apart).

    amoCRM counts requests per second on its side, by arrival time. A burst of 7 arrives
    spread out by the server's own queueing, so the next burst, sent exactly 1 s later, can
    put an 8th request into the server's second: a 429 and a backoff that costs far more than
    pacing does. Even spacing plus a slightly longer window (`WINDOW_MARGIN_S`) avoids that.
    """

    def __init__(self, rate: float, per: float = 1.0):
        super().__init__(rate, per)
        self.gap = self.per / self.limit
        self._next = 0.0
        self._pace_lock = threading.Lock()

    def acquire(self) -> None:
        with self._pace_lock:
            now = self.clock()
            at = max(now, self._next)
            self._next = at + self.gap
        if at > now:
            self.sleep(at - now)
        super().acquire()


class Forbidden(Exception):
    """A 403 on a list the request declares may be forbidden (`Request.skip_on_403`)."""


class AmoClient:
    """HTTP to one amoCRM account: the paced limiter, the token, the calls."""

    def __init__(self, source, tokens, limits=None):
        self.cfg = source
        self.source = source.name
        timeout = float(source.timeout_s or 60)
        rate = source.requests_per_second or 7
        if limits is not None:  # shared by every process (`adapters.limits`): keyed by account
            limiter = limits.rate_limiter(
                "amocrm",
                portal_of(source.base_url),
                *_window(rate, SHARED_WINDOW_MARGIN_S),
            )
        else:
            limiter = PacedLimiter(rate, per=1.0 + WINDOW_MARGIN_S) if rate >= 1 else RateLimiter(rate)
        self.http = HttpClient(
            source.name,
            limiter=limiter,
            timeout=(min(CONNECT_TIMEOUT_S, timeout), timeout),
            verify=source.verify_tls,
        )
        self.auth = AmoAuth(source, tokens, self.http)
        self.http.auth_headers = self.auth.headers
        self.http.on_unauthorized = self.auth.on_unauthorized

    def send(
        self, method: str, path: str, *, params=None, json=None, allow=(), what: str = ""
    ) -> tuple[int, object]:
        """One call: (status, parsed body or None). Maps 401/403/4xx/bad JSON to our errors.

        A 2xx whose body is not JSON (cut short, an HTML page) is retried like a 502 by the
        HttpClient; only when every attempt got one does the call fail."""
        what = what or f"{method} {path}"
        try:
            response = self.http.request(
                method, self.cfg.base_url + path, params=params, json=json, expect_json=True
            )
        except StreamError as err:
            raise StreamError(
                f"amoCRM source '{self.source}', {what}: {str(err).split(': ', 1)[-1]}"
            ) from None
        except UnreachableError as err:
            raise UnreachableError(f"amoCRM {err}") from None
        status = response.status_code
        if status == 204:
            return status, None
        if status == 401:
            raise AuthError(
                f"amoCRM source '{self.source}': access token rejected (401) even after "
                f"a refresh; run `crm-connector auth {self.source} --code CODE`"
            )
        if status == 403 and 403 not in allow:
            raise self._blocked(what)
        if status < 300:
            return status, response.parsed
        body = _error_body(response)
        if status not in allow:
            detail = problem_text(body) if isinstance(body, dict) else None
            raise StreamError(
                f"amoCRM source '{self.source}', {what}: HTTP {status}{': ' + detail if detail else ''}"
            )
        return status, body

    def _blocked(self, what: str) -> BlockedError:
        """amoCRM's 403 is a block (docs/api-notes.md): stop every request to this source."""
        msg = (
            f"amoCRM source '{self.source}': HTTP 403 on {what}: amoCRM blocked the account "
            f"or this IP (request limit exceeded, IP whitelist or rights); all requests to "
            f"this source were stopped. If it persists, contact amoCRM support"
        )
        self.http.block(msg)
        return BlockedError(msg)

    def page(self, req: Request, params: list, no: int, label: str) -> dict | None:
        """Page `no` of a list (None: 204, the end). Raises Forbidden on an allowed 403."""
        what = f"{label}, page {no}"
        allow = (403,) if req.skip_on_403 else ()
        status, data = self.send(
            "GET", req.path, params=params + [("page", no)] if req.paged else params, allow=allow, what=what
        )
        if status == 403:
            raise Forbidden()
        if data is None:
            return None
        items = data.get("_embedded", {}).get(req.embedded) if isinstance(data, dict) else None
        if not isinstance(items, list):
            raise StreamError(
                f"amoCRM source '{self.source}', {what}: unexpected page shape "
                f"(no _embedded.{req.embedded} list)"
            )
        return data

    def pages(self, req: Request, params: list, label: str) -> Iterator[dict]:
        """Every page of a list, in order, following `next` and stopping at a 204. A list
        that repeats itself (pages of rows already read, `keyset.Stall`) raises StreamError."""
        first = self.page(req, params, 1, label)
        if first is None:
            return
        stall = Stall(f"amoCRM source '{self.source}', {label} ({req.path})")
        seen: set = set()
        stall.page(_new_ids(first, req.embedded, seen))
        yield first
        if not req.paged or not _has_next(first):
            return
        workers = max(1, int(self.cfg.max_workers or 1))
        pool = ContextPool(workers, thread_name_prefix=f"amo-{self.source}")
        try:
            pending = collections.deque(
                (n, pool.submit(self.page, req, params, n, label)) for n in range(2, 2 + workers)
            )
            following = 2 + workers
            while pending:
                _, future = pending.popleft()
                data = future.result()
                if data is None:
                    return
                stall.page(_new_ids(data, req.embedded, seen))
                yield data
                if not _has_next(data):
                    return
                pending.append((following, pool.submit(self.page, req, params, following, label)))
                following += 1
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def items(self, path: str, embedded: str) -> Iterator[dict]:
        """Every item of a small collection (custom fields), page by page.

        Custom-field lists return at most 50 items a page whatever `limit` asks, yet step their
        pages by `limit`: ask for 50, or fields 51-250 would never be served."""
        req = Request(path, embedded, limit=FIELDS_PAGE)
        for data in self.pages(req, [("limit", req.limit)], f"stream '{embedded}'"):
            yield from data["_embedded"][embedded]

    def close(self) -> None:
        self.http.close()


def problem_text(body: dict) -> str | None:
    """A short, secret-free summary of an amoCRM problem+json body: each validation error's
    path and detail (`filter.type: ... not a valid choice`), else its detail or title."""
    details = []
    for group in body.get("validation-errors") or []:
        for e in (group.get("errors") or []) if isinstance(group, dict) else []:
            details.append(f"{e.get('path', '?')}: {e.get('detail') or e.get('code')}")
    text = "; ".join(details) or str(body.get("detail") or body.get("title") or "")
    if details and body.get("detail"):
        text = f"{body['detail']} ({text})"
    return redact(text)[:300] or None


def _error_body(response) -> object:
    """A 4xx's problem+json body, or None when it has none or it is not JSON."""
    try:
        return response.json() if response.content else None
    except ValueError:
        return None


def _new_ids(data: dict, embedded: str, seen: set) -> int:
    """How many items of a page were not on an earlier page (`seen` takes them)."""
    keys = [
        hashable(i.get("id")) if isinstance(i, dict) else repr(i)[:80] for i in data["_embedded"][embedded]
    ]
    new = len(set(keys) - seen)
    seen.update(keys)
    return new


def _has_next(data: dict) -> bool:
    return bool((data.get("_links") or {}).get("next"))
