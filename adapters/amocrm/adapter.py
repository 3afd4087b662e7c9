"""The amoCRM (Kommo) adapter: runs the declared streams and the field write-back.

One paging loop serves every stream (see `adapters.amocrm.streams`). Page 1 is fetched alone,
so a run with nothing new costs one request per stream; when it has a `next` link, the
following page numbers are prefetched by a small thread pool and yielded in order, so the
rate limiter, not latency, sets the pace (at most `max_workers` prefetched pages past the last
one are wasted, answered 204).

Incremental reads ask for `filter[updated_at][from]=bookmark - overlap` and `[to]=run start`;
rows the CRM stamps after our run start (its clock ahead of ours) wait for the next run, and
the overlap makes sure that run still sees them.

Bookmarks: ISO UTC text; for deals, contacts and companies a JSON object
`{"since": ISO, "api_filter": bool}` that also remembers whether the account has API filtering
(a paid add-on, facts §1.2), so the account is only re-checked on a first or full sync.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import Iterator

from adapters.amocrm.auth import AmoAuth
from adapters.amocrm.fields import FieldWriter
from adapters.amocrm.streams import STREAMS, Ctx, Stream, sort_events
from adapters.base import CrmField, FieldWrite, Page, WriteResult
from adapters.errors import AuthError, BlockedError, StreamError
from adapters.http import HttpClient, RateLimiter
from adapters.redact import redact

log = logging.getLogger(__name__)
WINDOW_MARGIN_S = 0.05


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


class _Forbidden(Exception):
    """A 403 the caller asked to handle itself (non-admin token on /users)."""


def iso(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)


class AmoCrmAdapter:
    kind = "amocrm"

    def __init__(self, source, tokens):
        self.cfg = source
        self.source = source.name
        timeout = float(source.timeout_s or 60)
        rate = source.requests_per_second or 7
        limiter = PacedLimiter(rate, per=1.0 + WINDOW_MARGIN_S) if rate >= 1 else RateLimiter(rate)
        self.http = HttpClient(source.name, limiter=limiter,
                               timeout=(min(10.0, timeout), timeout), verify=source.verify_tls)
        self.auth = AmoAuth(source, tokens, self.http)
        self.http.auth_headers = self.auth.headers
        self.http.on_unauthorized = self.auth.on_unauthorized
        self.ctx = Ctx(currency=source.currency)
        self.fields = FieldWriter(source.name, self._send, self._items)
        self._api_filter: bool | None = None

    @property
    def requests(self) -> int:
        return self.http.requests

    def stream_names(self) -> list[str]:
        wanted = self.cfg.streams
        return [n for n in STREAMS if not wanted or n in wanted]

    # -- HTTP ------------------------------------------------------------------------------

    def _send(self, method: str, path: str, *, params=None, json=None, allow=(),
              what: str = "") -> tuple[int, object]:
        """One call: (status, parsed body or None). Maps 401/403/4xx/bad JSON to our errors."""
        what = what or f"{method} {path}"
        try:
            response = self.http.request(method, self.cfg.base_url + path, params=params, json=json)
        except StreamError as err:
            raise StreamError(f"amoCRM source '{self.source}', {what}: "
                              f"{str(err).split(': ', 1)[-1]}") from None
        status = response.status_code
        if status == 204:
            return status, None
        if status == 401:
            raise AuthError(f"amoCRM source '{self.source}': access token rejected (401) even after "
                            f"a refresh; run `crm-connector auth {self.source} --code CODE`")
        if status == 403 and 403 not in allow:
            msg = (f"amoCRM source '{self.source}': HTTP 403 on {what}: amoCRM blocked the account "
                   f"or this IP (request limit exceeded, IP whitelist or rights); all requests to "
                   f"this source were stopped. If it persists, contact amoCRM support")
            self.http.block(msg)
            raise BlockedError(msg)
        try:
            body = response.json() if response.content else None
        except ValueError:
            body = ValueError
        if status >= 400 and status not in allow:
            detail = body.get("detail") or body.get("title") if isinstance(body, dict) else None
            raise StreamError(redact(f"amoCRM source '{self.source}', {what}: HTTP {status}"
                                     f"{': ' + str(detail)[:200] if detail else ''}"))
        if body is ValueError:
            if status >= 400:
                return status, None
            raise StreamError(f"amoCRM source '{self.source}', {what}: malformed JSON in the "
                              f"answer (HTTP {status}, {len(response.content)} bytes)")
        return status, body

    def _page(self, s: Stream, params: list, no: int) -> dict | None:
        what = f"stream '{s.name}', page {no}"
        allow = (403,) if s.name == "users" else ()
        status, data = self._send("GET", s.path, params=params + [("page", no)] if s.paged
                                  else params, allow=allow, what=what)
        if status == 403:
            raise _Forbidden()
        if data is None:
            return None
        items = data.get("_embedded", {}).get(s.embedded) if isinstance(data, dict) else None
        if not isinstance(items, list):
            raise StreamError(f"amoCRM source '{self.source}', {what}: unexpected page shape "
                              f"(no _embedded.{s.embedded} list)")
        return data

    def _pages(self, s: Stream, params: list) -> Iterator[tuple[int, dict]]:
        first = self._page(s, params, 1)
        if first is None:
            return
        yield 1, first
        if not s.paged or not _has_next(first):
            return
        workers = max(1, int(self.cfg.max_workers or 1))
        pool = ThreadPoolExecutor(workers, thread_name_prefix=f"amo-{self.source}")
        try:
            pending = collections.deque((n, pool.submit(self._page, s, params, n))
                                        for n in range(2, 2 + workers))
            following = 2 + workers
            while pending:
                no, future = pending.popleft()
                data = future.result()
                if data is None:
                    return
                yield no, data
                if not _has_next(data):
                    return
                pending.append((following, pool.submit(self._page, s, params, following)))
                following += 1
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _items(self, path: str, embedded: str) -> Iterator[dict]:
        """Every item of a small collection (custom fields), page by page."""
        s = Stream(name=embedded, path=path, embedded=embedded, parse=lambda *a: None)
        for _, data in self._pages(s, [("limit", 250)]):
            yield from data["_embedded"][embedded]

    # -- reading ---------------------------------------------------------------------------

    def check(self) -> str:
        _, data = self._send("GET", "/api/v4/account", what="account check")
        if not isinstance(data, dict):
            raise StreamError(f"amoCRM source '{self.source}': account check: empty answer")
        return (f"amoCRM account '{data.get('name')}' (subdomain {data.get('subdomain')}, "
                f"id {data.get('id')})")

    def api_filter_enabled(self) -> bool:
        """Whether list filters work on this account (checked once per adapter)."""
        if self._api_filter is None:
            _, data = self._send("GET", "/api/v4/account",
                                 params=[("with", "is_api_filter_enabled")], what="account check")
            self._api_filter = bool(isinstance(data, dict) and data.get("is_api_filter_enabled"))
            log.info("amoCRM source '%s': API filtering %s", self.source,
                     "enabled" if self._api_filter else "not enabled; paging newest-first")
        return self._api_filter

    def fetch(self, stream: str, bookmark: str | None, run_started_at: datetime,
              full: bool = False) -> Iterator[Page]:
        s = STREAMS.get(stream)
        if s is None:
            raise ValueError(f"unknown amoCRM stream '{stream}' (known: {', '.join(STREAMS)})")
        run = _utc(run_started_at)
        since, api_filter = (None, None) if full else _read_bookmark(bookmark)
        if s.gated and api_filter is None:
            api_filter = self.api_filter_enabled()
        filtered = api_filter is not False
        final = _write_bookmark(run, api_filter if s.gated else None)

        params = [("limit", s.limit), *s.params]
        stop_before = None
        if s.cursor and filtered:
            params += list(s.order)
            if since:
                start = since - timedelta(minutes=self.cfg.overlap_minutes)
                params.append((f"filter[{s.cursor}][from]", int(start.timestamp())))
            params.append((f"filter[{s.cursor}][to]", int(run.timestamp())))
        elif s.cursor:
            params.append(("order[updated_at]", "desc"))
            if since:
                stop_before = int((since - timedelta(minutes=self.cfg.overlap_minutes)).timestamp())

        ctx = dataclasses.replace(self.ctx, latest={})
        pages = self._pages(s, params)
        try:
            for _, data in pages:
                page, older = self._to_page(s, data["_embedded"][s.embedded], stop_before, ctx)
                if s.sorted_by and filtered and s.cursor:
                    newest = max((int(i.get(s.sorted_by) or 0) for i in
                                  data["_embedded"][s.embedded]), default=0)
                    if newest:
                        at = min(datetime.fromtimestamp(newest, timezone.utc), run)
                        page.bookmark = _write_bookmark(at, api_filter if s.gated else None)
                yield page
                if older:
                    break
        except _Forbidden:
            log.warning("amoCRM source '%s': /api/v4/users answered 403 (the token is not an "
                        "admin's); users are not mirrored", self.source)
        finally:
            pages.close()
        yield Page(bookmark=final)

    def _to_page(self, s: Stream, items: list, stop_before: int | None,
                 ctx: Ctx) -> tuple[Page, bool]:
        page, older = Page(), False
        if s.name == "events":
            items = sort_events(items)
        for item in items:
            if stop_before is not None and int(item.get("updated_at") or 0) < stop_before:
                older = True  # newest-first paging reached the bookmark
                continue
            try:
                s.parse(page, item, ctx)
            except (KeyError, TypeError, ValueError) as err:
                raise StreamError(f"amoCRM source '{self.source}', stream '{s.name}': cannot read "
                                  f"item {str(item.get('id'))[:40]}: {type(err).__name__} "
                                  f"{str(err)[:80]}") from None
        return page, older

    # -- auth and write-back -----------------------------------------------------------------

    def exchange_code(self, code: str) -> str:
        return self.auth.exchange_code(code)

    def list_fields(self, entity_type: str) -> list[CrmField]:
        return self.fields.list_fields(entity_type)

    def create_field(self, entity_type: str, code: str, label: str) -> CrmField:
        return self.fields.create_field(entity_type, code, label)

    def write_values(self, entity_type: str, writes: list[FieldWrite]) -> list[WriteResult]:
        return self.fields.write_values(entity_type, writes)

    def close(self) -> None:
        self.http.close()


def _has_next(data: dict) -> bool:
    return bool((data.get("_links") or {}).get("next"))


def _utc(dt: datetime) -> datetime:
    return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt.astimezone(timezone.utc)


def _read_bookmark(bookmark: str | None) -> tuple[datetime | None, bool | None]:
    """(since, api_filter) from a bookmark; an unreadable one means a full read."""
    if not bookmark:
        return None, None
    try:
        if bookmark.startswith("{"):
            data = json.loads(bookmark)
            since = parse_iso(data["since"]) if data.get("since") else None
            flag = data.get("api_filter")
            return since, flag if isinstance(flag, bool) else None
        return parse_iso(bookmark), None
    except (ValueError, KeyError, TypeError, AttributeError):
        log.warning("amoCRM: unreadable bookmark %r; reading the stream in full", bookmark[:60])
        return None, None


def _write_bookmark(at: datetime, api_filter: bool | None) -> str:
    if api_filter is None:
        return iso(at)
    return json.dumps({"since": iso(at), "api_filter": api_filter}, separators=(",", ":"))
