"""The amoCRM (Kommo) adapter: reads the declared streams, one reader per mode, and delegates
the field write-back.

Streams are declarations (`adapters.amocrm.streams.STREAMS`); everything stream-specific comes
from the declaration's `Request`, HTTP from `adapters.amocrm.client`.

- `snapshot` (users, pipelines): the whole list every run; bookmark `{"at": run start}`.
- `changes` (cards, tasks, calls, events): asks for `filter[cursor][from]=since - overlap` and
  `[to]=run start`; rows the CRM stamps after our run start (its clock ahead of ours) wait for
  the next run, and the overlap makes sure that run still sees them. Bookmark
  `{"since": ISO}`, per page for streams sorted by their cursor, else at the end. Where list
  filters are amoCRM's paid add-on (`Request.gated`), the bookmark also remembers
  `api_filter`, so the account is only re-checked on a first or full sync; without the
  add-on the list is paged newest-first and reading stops at the bookmark.
- Records the API let a writer date back (`Request.backdated`): a wider window on a schedule,
  from `reread_hours` before the bookmark every `reread_every_hours`, in full every
  `reconcile_hours` (`adapters.amocrm.reread`); each logs what it cost in requests.
- No row is skipped when rows move or leave the list mid-read: lists sorted by their cursor
  (cards, calls) are read by `adapters.amocrm.keyset`; lists in another fixed order (tasks by
  id, with no `[to]` so an edit keeps its place; events; newest-first cards) by
  `adapters.amocrm.overlap`. Both overlap each page with the one before and check it.
- A stream's `Request.lookup` asks for more beside each page (`ctx.side`, for its parser):
  events check each card an `entity_merged` event names (`GET /api/v4/{entity}/{id}`, 204 =
  gone), as the docs do not say whether the event names the card merged away or the survivor;
  customers' notes read their customers back (contacts, company) to file calls under them.
- `Request.needs` "customers": read only in accounts in Customers mode (`customers_enabled`).

Webhooks: `install_hooks` / `remove_hooks` (`/api/v4/webhooks`, an admin's token),
`parse_hook` (a delivery's form pairs to `Change`s, checked against `account()`:
`adapters.amocrm.hooks`), `read_changes` (the records read back by id, parsed by the streams'
own parsers: `adapters.amocrm.readback`). amoCRM keeps no queue of missed deliveries
(`missed_changes` is None): an incremental sync catches up.
"""

from __future__ import annotations

import logging
import threading
from contextlib import closing
from datetime import datetime
from typing import Iterator

from adapters import bookmarks
from adapters.adapter import Adapter
from adapters.amocrm import CRM, reread
from adapters.amocrm.client import AmoClient, Forbidden
from adapters.amocrm.fields import FieldWriter
from adapters.amocrm.hooks import HOOK_EVENTS, parse_delivery, where_to
from adapters.amocrm.keyset import keyset_pages
from adapters.amocrm.overlap import overlap_pages
from adapters.amocrm.parsers import customer_owner, merged_cards
from adapters.amocrm.readback import read_back
from adapters.amocrm.streams import CUSTOMERS
from adapters.base import Page
from adapters.errors import ScopeError, StreamError
from adapters.hooks import Change
from adapters.streams import Ctx, Stream, records
from adapters.times import from_unix, iso, parse_iso
from adapters.values import to_int

log = logging.getLogger(__name__)

READ_BACK = ("deals", "contacts", "companies", "tasks")  # tables a webhook names
CARD_PATHS = {"deals": "leads", "contacts": "contacts", "companies": "companies"}
CUSTOMERS_MODES = ("segments", "periodicity", "dynamic")  # `customers_mode` with customers on


class AmoCrmAdapter(Adapter):
    crm = CRM

    def __init__(self, source, tokens, limits=None):
        client = AmoClient(source, tokens, limits)
        super().__init__(source, client, FieldWriter(source.name, client.send, client.items))
        self.auth = client.auth
        self.readers = {"snapshot": self._snapshot, "changes": self._changes}
        self._api_filter: bool | None = None
        self._account: dict | None = None
        self._account_lock = threading.Lock()

    # -- account ---------------------------------------------------------------------------

    def account(self) -> dict:
        """The account as `GET /api/v4/account` describes it (`id`, `subdomain`, `name`...):
        asked once per adapter."""
        with self._account_lock:
            if self._account is None:
                _, data = self.client.send("GET", "/api/v4/account", what="account")
                if not (
                    isinstance(data, dict)
                    and to_int(data.get("id")) is not None
                    and isinstance(data.get("subdomain"), str)
                    and data["subdomain"]
                ):
                    raise StreamError(
                        f"amoCRM source '{self.source}': account: the answer has no id or subdomain"
                    )
                self._account = data
            return self._account

    def customers_enabled(self) -> bool:
        """Whether the account is in Customers mode (`customers_mode` segments, periodicity or
        the deprecated dynamic), so calls may be filed under customers."""
        return self.account().get("customers_mode") in CUSTOMERS_MODES

    def check(self) -> str:
        _, data = self.client.send("GET", "/api/v4/account", what="account check")
        if not isinstance(data, dict):
            raise StreamError(f"amoCRM source '{self.source}': account check: empty answer")
        return f"amoCRM account '{data.get('name')}' (subdomain {data.get('subdomain')}, id {data.get('id')})"

    def api_filter_enabled(self) -> bool:
        """Whether list filters work on this account (checked once per adapter)."""
        if self._api_filter is None:
            _, data = self.client.send(
                "GET", "/api/v4/account", params=[("with", "is_api_filter_enabled")], what="account check"
            )
            self._api_filter = bool(isinstance(data, dict) and data.get("is_api_filter_enabled"))
            log.info(
                "amoCRM source '%s': API filtering %s",
                self.source,
                "enabled" if self._api_filter else "not enabled; paging newest-first",
            )
        return self._api_filter

    # -- reading (`Adapter.fetch` hands each stream to the reader of its mode) -------------

    def _snapshot(self, s: Stream, saved: dict, run: datetime) -> Iterator[Page]:
        """The whole (small) list; the bookmark says when it was read."""
        ctx = Ctx(currency=self.cfg.currency)
        with closing(self._pages(s, [("limit", s.request.limit), *s.request.params])) as pages:
            for items in pages:
                yield self._records(s, items, ctx)
        yield Page(bookmark=bookmarks.dump("snapshot", at=iso(run)))

    def _changes(self, s: Stream, saved: dict, run: datetime) -> Iterator[Page]:
        """Rows whose cursor moved since the bookmark (minus the overlap), up to the run start."""
        req = s.request
        if req.needs == "customers" and not self.customers_enabled():
            yield Page()  # no list to read; the bookmark stays, for when customers are turned on
            return
        api_filter = saved.get("api_filter")
        if req.gated and api_filter is None:
            api_filter = self.api_filter_enabled()
        remember = api_filter if req.gated else None
        filtered = not req.gated or api_filter
        window = reread.plan(saved, run, self.cfg, req.backdated)
        start, requests_before = window.start, self.requests
        keep = {k: saved.get(k) for k in ("since", "reread_at", "reconciled_at")}
        params = [("limit", req.limit), *req.params]
        if filtered and req.sorted_by:
            pages = self._keyset(s, params + list(req.order), start, run)
            stop_before = None
        elif filtered:
            pages = self._overlapping(s, params + self._window(s, start, run))
            stop_before = None
        else:  # newest-first: an edit moves a row to the front, a deletion is checked for
            pages = self._overlapping(s, params + [(f"order[{s.cursor}]", "desc")])
            stop_before = int(start.timestamp()) if start else None
        ctx, rows = Ctx(currency=self.cfg.currency), 0
        with closing(pages):
            for items in pages:
                fresh = [
                    i
                    for i in items
                    if stop_before is None or (cursor_of(i, s.cursor) or stop_before) >= stop_before
                ]
                ctx.side = self._side(s, fresh, ctx.memo)
                page = self._records(s, fresh, ctx)
                if req.sorted_by and filtered:
                    page.bookmark = self._page_bookmark(items, req.sorted_by, run, remember, keep)
                rows += page.entities(s.tables[0])
                yield page
                if len(fresh) < len(items):
                    break  # newest-first paging reached the bookmark
        if window.wider:
            log.info(
                "amoCRM source '%s', stream '%s': %s from %s: %d requests, %d %s read",
                self.source,
                s.name,
                window.kind,
                iso(start) if start else "the start",
                self.requests - requests_before,
                rows,
                s.tables[0],
            )
        yield Page(
            bookmark=bookmarks.dump(
                "changes",
                since=iso(run),
                api_filter=remember,
                reread_at=window.reread_at,
                reconciled_at=window.reconciled_at,
            )
        )

    def _keyset(self, s: Stream, params: list, start: datetime | None, run: datetime) -> Iterator[list[dict]]:
        """Pages of a stream sorted by its cursor, each overlapping the one before it and
        prefetched (`adapters.amocrm.keyset`): a card edited mid-read cannot make a row be
        skipped, and the rate limiter, not latency, sets the pace."""
        req, label = s.request, f"stream '{s.name}'"
        rest = [p for p in params if p[0] != "limit"]

        def fetch(window: list, no: int, limit: int) -> dict | None:
            return self.client.page(req, [("limit", limit), *rest, *window], no, label)

        lo = int(start.timestamp()) if start else None
        yield from keyset_pages(
            fetch,
            req.sorted_by,
            lo,
            int(run.timestamp()),
            req.embedded,
            size=req.limit,
            workers=int(self.cfg.max_workers or 1),
            gap=getattr(self.client.http.limiter, "gap", 0.0),
            label=f"amoCRM source '{self.source}', {label} ({req.path})",
        )

    def _overlapping(self, s: Stream, params: list) -> Iterator[list[dict]]:
        """Pages of a list in a fixed order (by id, by time, newest-first), each overlapping
        the one before it and checked (`adapters.amocrm.overlap`): a row deleted or hidden
        mid-read cannot make a later one be skipped. Items of a page in parse order."""
        req, label = s.request, f"stream '{s.name}'"
        rest = [p for p in params if p[0] != "limit"]

        def fetch(no: int, limit: int) -> dict | None:
            return self.client.page(req, [("limit", limit), *rest], no, label)

        pages = overlap_pages(
            fetch,
            s.cursor,
            req.embedded,
            size=req.limit,
            workers=int(self.cfg.max_workers or 1),
            gap=getattr(self.client.http.limiter, "gap", 0.0),
            label=f"amoCRM source '{self.source}', {label} ({req.path})",
        )
        with closing(pages):
            try:
                for items in pages:
                    yield (
                        sorted(items, key=lambda i: cursor_of(i, req.page_order) or 0)
                        if req.page_order
                        else items
                    )
            except Forbidden:
                self._forbidden(s)

    @staticmethod
    def _window(s: Stream, start: datetime | None, run: datetime) -> list:
        """The sort and the `[from]`/`[to]` filter of a filtered incremental read (no `[to]`
        where the request is not `bounded`)."""
        params = list(s.request.order)
        if start:
            params.append((f"filter[{s.cursor}][from]", int(start.timestamp())))
        if s.request.bounded:
            params.append((f"filter[{s.cursor}][to]", int(run.timestamp())))
        return params

    @staticmethod
    def _page_bookmark(items: list, field: str, run: datetime, api_filter, keep: dict) -> str | None:
        """The page's newest `field`, never past the run start (items arrive ascending by it)
        nor, in a wider read, back before the saved bookmark (`keep`, whose wider-read times
        stay until the read completes)."""
        newest = max((cursor_of(i, field) or 0 for i in items), default=0)
        if not newest:
            return None
        at = min(newest, int(run.timestamp()))
        if keep.get("since"):
            at = max(at, int(parse_iso(keep["since"]).timestamp()))
        return bookmarks.dump(
            "changes",
            since=from_unix(at),
            api_filter=api_filter,
            reread_at=keep.get("reread_at"),
            reconciled_at=keep.get("reconciled_at"),
        )

    def _pages(self, s: Stream, params: list) -> Iterator[list[dict]]:
        """Each page's items, in parse order; none when a declared-forbidden list answers 403."""
        req = s.request
        with closing(self.client.pages(req, params, f"stream '{s.name}'")) as pages:
            try:
                for data in pages:
                    items = data["_embedded"][req.embedded]
                    if req.page_order:
                        items = sorted(items, key=lambda i: cursor_of(i, req.page_order) or 0)
                    yield items
            except Forbidden:
                self._forbidden(s)

    def _side(self, s: Stream, items: list, memo: dict) -> dict:
        """What the stream's `Request.lookup` asks for beside a page's items (`ctx.side`);
        `memo` lasts the whole read."""
        if s.request.lookup == "merged_cards":
            return self._merged_cards(items)
        if s.request.lookup == "customers":
            return self._customer_owners(items, memo.setdefault("customer_owners", {}))
        return {}

    def _customer_owners(self, notes: list, known: dict) -> dict:
        """The card each customer of `notes` files its calls under (`parsers.customer_owner`),
        by `("customer", id)`. Customers not in `known` (those read earlier in this read) are
        read back with their contacts and company: one request per 100 customers, plus one per
        customer where list filters are off and the account has more than a page of them."""
        ids = list(dict.fromkeys(i for n in notes if (i := cursor_of(n, "entity_id")) is not None))
        new = [i for i in ids if i not in known]
        if new:
            found, _ = read_back(self.client, CUSTOMERS, new, "customers of call notes")
            known.update(dict.fromkeys(new))
            for item in found:
                known[to_int(item.get("id"))] = customer_owner(item)
        return {("customer", i): known[i] for i in ids if known.get(i) is not None}

    def _merged_cards(self, items: list) -> dict:
        """Whether each card an `entity_merged` event names is alive: `GET /api/v4/{entity}/{id}`
        serves it, or answers 204 (gone). One request per card."""
        side = {}
        for table, card in merged_cards(items):
            _, item = self.client.send(
                "GET", f"/api/v4/{CARD_PATHS[table]}/{card}", what=f"checking merged {table} id {card}"
            )
            side[("alive", table, card)] = item is not None
        return side

    def _forbidden(self, s: Stream) -> None:
        log.warning(
            "amoCRM source '%s': %s answered 403 (%s); %s are not mirrored",
            self.source,
            s.request.path,
            s.request.skip_on_403,
            s.name,
        )

    def _records(self, s: Stream, items: list[dict], ctx: Ctx) -> Page:
        """One page of items parsed in order; a later record wins (`Page.merge`). An item a row
        cannot be made of is skipped and reported; an unexpected error names item and field."""
        try:
            return records(items, s.parse, ctx, s.name)
        except StreamError as err:
            raise StreamError(f"amoCRM source '{self.source}', {err}") from None

    # -- webhooks ---------------------------------------------------------------------------

    def install_hooks(self, url: str) -> str:
        """Subscribe `url` to every lead, contact, company and task change (`HOOK_EVENTS`);
        a webhook already sending to `url` gets these settings. Needs an admin's token."""
        status, data = self.client.send(
            "POST",
            "/api/v4/webhooks",
            json={"destination": url, "settings": list(HOOK_EVENTS)},
            allow=(403,),
            what="installing the webhook",
        )
        if status == 403:
            raise self._not_admin("installing the webhook")
        if not isinstance(data, dict) or data.get("destination") != url:
            raise StreamError(
                f"amoCRM source '{self.source}': installing the webhook: unexpected answer shape"
            )
        missing = [e for e in HOOK_EVENTS if e not in (data.get("settings") or ())]
        text = (
            f"amoCRM webhook {data.get('id')} sends {len(HOOK_EVENTS) - len(missing)} events "
            f"(lead, contact, company and task changes) to {where_to(url)}"
        )
        if missing:
            text += f"; amoCRM left out {', '.join(missing)}"
        if data.get("disabled"):
            text += "; amoCRM has it disabled: enable it in the account's integration settings"
        return text

    def remove_hooks(self, url: str) -> str:
        """Unsubscribe `url` from every event; nothing to remove is no error."""
        status, _ = self.client.send(
            "DELETE",
            "/api/v4/webhooks",
            json={"destination": url},
            allow=(403, 404),
            what="removing the webhook",
        )
        if status == 403:
            raise self._not_admin("removing the webhook")
        if status == 404:
            return f"no amoCRM webhook sends to {where_to(url)}: nothing to remove"
        return f"amoCRM webhook to {where_to(url)} removed"

    def _not_admin(self, what: str) -> ScopeError:
        return ScopeError(
            f"amoCRM source '{self.source}': {what} was refused (403); webhooks need an account admin's token"
        )

    def missed_changes(self) -> None:
        """amoCRM keeps no queue of deliveries nobody received: run an incremental sync."""
        return None

    def parse_hook(self, pairs: list[tuple[str, str]]) -> list[Change]:
        """The changes a delivery names (`adapters.amocrm.hooks.parse_delivery`), refused
        (`HookRefused`) unless it names this account."""
        account = self.account()
        return parse_delivery(pairs, to_int(account["id"]), account["subdomain"])

    def read_changes(self, changes: list[Change]) -> Page:
        """The changed records read back by id, parsed into the rows a sync writes (a deal
        with its contact links...); ids the account no longer serves in `Page.deleted`. One
        request per table and 100 ids, plus one per id an account without the list-filter
        add-on could not answer in it (`adapters.amocrm.readback`). Tables outside the
        source's `streams` are left out."""
        wanted: dict[str, list[int]] = {}
        for change in changes:
            if change.table not in READ_BACK:
                raise ValueError(
                    f"amoCRM records of '{change.table}' cannot be read back (only {', '.join(READ_BACK)})"
                )
            ids = wanted.setdefault(change.table, [])
            if change.id not in ids:
                ids.append(change.id)
        page, ctx = Page(), Ctx(currency=self.cfg.currency)
        for table, ids in wanted.items():
            s = next((s for s in self.streams() if s.mode == "changes" and s.tables[0] == table), None)
            if s is None:
                continue
            items, gone = read_back(self.client, s.request, ids, f"reading back {table}")
            page.merge(self._records(s, items, ctx))
            if gone:
                page.merge(Page(deleted={table: gone}))
        return page

    # -- auth (the field methods are `Adapter`'s, on `FieldWriter`) -------------------------

    def exchange_code(self, code: str) -> str:
        return self.auth.exchange_code(code)


def cursor_of(item, field: str) -> int | None:
    """An item's cursor value; None when the item is no object or the value is junk (its
    parser reports it; paging goes on by the others)."""
    return to_int(item.get(field)) if isinstance(item, dict) else None
