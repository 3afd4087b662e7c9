"""Reading a list sorted ascending by a moving field (`updated_at`) so that no row is skipped,
with pages prefetched so that the rate limiter, not latency, sets the pace.

amoCRM pages by offset (`page=N&limit=L` starts at row (N-1)*L). When a user edits (or
deletes) a card already served, it leaves its place and every later row moves up: a page
asked for afterwards starts late and rows are never read.

So each page is planned to repeat at least one row of the page before it (its predecessor):
it is asked for from an anchor value `w` already read (`filter[field][from]=w`), at a page
number and limit whose offset lands 1..MAX_OVERLAP rows before the predecessor's end. The
plan needs no answer, so up to `depth` pages are in flight. When a page arrives, its first
row must be a row of its predecessor; then every row between them was read (rows only leave
the list or re-enter it at its end, so what is left keeps its order). If not (rows moved),
the pages in flight are dropped and reading restarts from the newest value read (page 1,
inclusive): rows after it cannot move before it. A bulk instant (hundreds of rows sharing one
value) is paged through the same way, checked at every page, so it needs no second read.

Rows repeated by an overlap or a restart are dropped by (id, value); an edited row that comes
back with a new value is yielded again. Pages come in list order, so each page's newest value
is a safe bookmark: every row before it was read.

No request without progress (`Stall`): a server that ignores the range filter and the page
number (a static sample serving one page with a `next` link) would be asked forever. After
MAX_IDLE pages in a row that bring no new row (pages a restart re-reads on purpose aside), the
stream fails with one line naming the endpoint and what the server did; so does a read whose
checks fail MAX_RESTARTS times.
"""

from __future__ import annotations

import collections
import math
import time
from dataclasses import dataclass
from typing import Callable, Iterator

from adapters.errors import StreamError
from adapters.http import ContextPool
from adapters.values import to_int

MAX_OVERLAP = 8  # rows a planned page may repeat of its predecessor
MIN_SHARE = 0.8  # smallest page a plan asks for, as a share of a full page
MAX_IDLE = 4  # pages in a row without a new row before a read gives up: the list repeats
MAX_RESTARTS = 50  # failed checks in one read before giving up: the list changes too fast

Fetch = Callable[[list, int, int], "dict | None"]  # (window params, page no, limit) -> HAL page


@dataclass(frozen=True)
class Plan:
    """One page to ask for: `filter[field][from]=lo`, `page`, `limit`. `new`: rows it brings
    past its predecessor if nothing moved. `check`: its first row must be the predecessor's."""

    lo: int | None
    page: int
    limit: int
    new: int
    check: bool = True


class Stall:
    """Counts pages in a row that brought no new row; past MAX_IDLE, raises StreamError
    starting with `label` (which names the endpoint): the server repeats its list."""

    def __init__(self, label: str):
        self.label, self.idle, self.pages = label, 0, 0

    def grace(self, pages: int) -> None:
        """A read that goes back on purpose (a restart, a back-off) re-reads `pages` pages of
        rows already read before it brings new ones: they do not count as idle."""
        self.idle = min(self.idle, 0) - pages

    def page(self, new_rows: int) -> None:
        self.pages += 1
        self.idle = 0 if new_rows else self.idle + 1
        if self.idle >= MAX_IDLE:
            raise StreamError(
                f"{self.label}: the server served the same rows again for {self.idle} pages in a "
                f"row while linking a next page (it ignores the page number and filters); "
                f"stopped after {self.pages} pages"
            )


def keyset_pages(
    fetch: Fetch,
    field: str,
    start: int | None,
    end: int,
    embedded: str,
    *,
    size: int = 250,
    workers: int = 1,
    gap: float = 0.0,
    label: str = "list",
) -> Iterator[list[dict]]:
    """Items of each page in list order, none yielded twice. `start`..`end` is the read's
    window (`start` None: from the first row). `workers` caps the pages in flight; how many
    are used follows the first round trip measured against the limiter's `gap`. Raises
    StreamError (starting with `label`) when MAX_IDLE pages in a row bring no new row."""
    data, size, depth = first_page(
        lambda: fetch(_window(field, start, end), 1, size), embedded, size, gap, workers
    )
    if data is None:
        return
    chain = _Chain(field, embedded, size)
    stall, restarts = Stall(label), 0
    pool = ContextPool(depth, thread_name_prefix="amo-keyset")
    pending: collections.deque = collections.deque()
    try:
        plan = Plan(start, 1, size, size, check=False)
        while True:
            fresh, more = chain.take(plan, data)
            stall.page(len(fresh or ()))
            if fresh is None:  # rows moved under us: drop what is in flight, restart
                drop_pending(pending)
                restarts += 1
                if restarts > MAX_RESTARTS:
                    raise StreamError(
                        f"{label}: the list kept changing while it was read "
                        f"({MAX_RESTARTS} pages did not start with a row already "
                        f"read); try again"
                    )
                nxt = chain.restart()
                stall.grace(math.ceil(chain.run / max(1, nxt.limit)) + 1)
                pending.append((nxt, pool.submit(fetch, _window(field, nxt.lo, end), nxt.page, nxt.limit)))
            elif not more:
                yield fresh
                return
            while more and len(pending) < depth:
                nxt = chain.plan(sum(p.new for p, _ in pending))
                if nxt is None:
                    break
                pending.append((nxt, pool.submit(fetch, _window(field, nxt.lo, end), nxt.page, nxt.limit)))
            if fresh:
                yield fresh
            plan, future = pending.popleft()
            data = future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


class _Chain:
    """What has been read: the last page (for checks and plans) and the rows at the newest
    value (`seen` to drop repeats; `run`: how many of them this pass covers, for offsets)."""

    def __init__(self, field: str, embedded: str, size: int):
        self.field, self.embedded, self.size = field, embedded, size
        self.last: list[tuple] = []  # (id, value) of the last accepted page, in order
        self.before: int | None = None  # the value of the row before that page's first new row
        self.newest: int | None = None
        self.seen: set = set()  # (id, value) read at `newest`
        self.run = 0  # rows at `newest` from its first row to the last page's end

    def take(self, plan: Plan, data: dict | None) -> tuple[list | None, bool]:
        """Accept a page: (fresh items, more to read); fresh is None when the check failed."""
        items = data["_embedded"][self.embedded] if data else []
        keys = _keys(items, self.field)
        prev = set(self.last)
        if plan.check and (not keys or (keys[0] not in prev and keys[0] not in self.seen)):
            return None, True
        fresh = [i for i, k in zip(items, keys) if k not in prev and k not in self.seen]
        if keys:
            top = keys[-1][1]
            at_top = [k for k in keys if k[1] == top]
            if top != self.newest or not plan.check:  # a new value, or read from its first row
                self.run = len(at_top)
            else:
                self.run += sum(1 for k in at_top if k not in prev)
            if top != self.newest:
                self.newest, self.seen = top, set()
            self.seen.update(at_top)
            self.before = self.last[-1][1] if self.last and plan.check else None
            self.last = keys
        more = bool(items) and bool((data.get("_links") or {}).get("next"))
        return fresh, more

    def plan(self, ahead: int) -> Plan | None:
        """The next page after those in flight (`ahead`: rows they should bring), or None to
        wait for them. Anchors: the newest value (its rows covered so far), and every value
        that starts inside the last page (rows from its first row on)."""
        anchors = [(self.newest, self.run + ahead)]
        values = [v for _, v in self.last]
        for n, v in enumerate(values):
            if (self.before is None or v > self.before) and (n == 0 or values[n - 1] != v):
                anchors.append((v, len(values) - n + ahead))
        best = None
        for lo, rows in anchors:
            fit = fit_page(rows, self.size, int(self.size * MIN_SHARE), MAX_OVERLAP)
            if fit and (best is None or fit[2] > best.new):
                best = Plan(lo, *fit)
        if best is None and not ahead:  # nothing fits well: any page that moves on
            if self.run < self.size or self.size < 2:
                return self.restart()
            best = Plan(self.newest, *fit_page(self.run, self.size, 2, self.size))
        if best is not None and best.page == 1:
            best = Plan(best.lo, 1, best.limit, best.new, check=False)  # a restart
        return best

    def restart(self) -> Plan:
        """Page 1 from the newest value read, inclusive: needs no check, as rows after it
        cannot move before it (a bulk instant is read again from its first row). Pages of
        one row cannot overlap: there, a bulk instant is paged on unchecked."""
        if self.size < 2 and self.run >= 1:
            return Plan(self.newest, self.run + 1, 1, 1, check=False)
        return Plan(self.newest, 1, self.size, max(0, self.size - self.run), check=False)


def fit_page(rows: int, size: int, low: int, max_overlap: int) -> tuple[int, int, int] | None:
    """(page, limit, new rows) whose offset lands 1..max_overlap rows before row `rows` of an
    anchor's list (and leaves a new row), the most new rows first; None if no limit from
    `low` to `size` does."""
    best = None
    for limit in range(size, max(2, low) - 1, -1):
        if best and limit <= best[2]:
            break
        k = (rows - 1) // limit
        overlap = rows - k * limit
        if 1 <= overlap <= min(max_overlap, limit - 1) and (best is None or limit - overlap > best[2]):
            best = (k + 1, limit, limit - overlap)
    return best


def first_page(
    fetch_first: Callable[[], dict | None], embedded: str, size: int, gap: float, workers: int
) -> tuple[dict | None, int, int]:
    """(the first page, the page size the list really serves, pages to keep in flight): a
    list that serves smaller pages than asked for sets the size; the first round trip,
    against the limiter's gap, sets the depth."""
    t0 = time.monotonic()
    data = fetch_first()
    if data is None:
        return None, size, 1
    first = data["_embedded"][embedded]
    if (data.get("_links") or {}).get("next") and 0 < len(first) < size:
        size = len(first)
    return data, size, pages_in_flight(time.monotonic() - t0, gap, workers)


def pages_in_flight(rtt: float, gap: float, workers: int) -> int:
    """Pages in flight so that the limiter's gap, not the round trip, sets the pace."""
    if workers <= 1:
        return 1
    need = math.ceil(1.2 * rtt / gap) if gap > 0 else workers
    return max(2, min(workers, need))


def drop_pending(pending: collections.deque) -> None:
    """Forget pages in flight (their answers are not read; a running request still ends)."""
    while pending:
        pending.popleft()[1].cancel()


def _window(field: str, lo: int | None, hi: int) -> list:
    lower = [] if lo is None else [(f"filter[{field}][from]", lo)]
    return lower + [(f"filter[{field}][to]", hi)]


def _keys(items: list, field: str) -> list[tuple]:
    """(id, sort value) of each item. An item that is no object, or whose value is junk (the
    parser reports it), takes the value of its neighbour before it (or after it, first on
    the page): its own lies between them, so windows stay lower bounds."""
    ids = [hashable(i.get("id")) if isinstance(i, dict) else repr(i)[:80] for i in items]
    values = [to_int(i.get(field)) if isinstance(i, dict) else None for i in items]
    known = [v for v in values if v is not None]
    last = known[0] if known else 0
    for n, v in enumerate(values):
        values[n] = last = v if v is not None else last
    return list(zip(ids, values))


def hashable(v):
    """A value usable as a key: junk (a list, an object) is known by its text."""
    return v if isinstance(v, (int, str, float, type(None))) else repr(v)[:80]
