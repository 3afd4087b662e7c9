"""Reading an offset-paged list whose order a row keeps while it stays in the list (tasks by
id, events by time, cards newest-first) so that no row is skipped, with pages prefetched.

amoCRM pages by offset (`page=N&limit=L` starts at row (N-1)*L). A row that leaves the list
while it is read (a task or card deleted, an event hidden) moves every later row up one: a
page asked for afterwards starts late and a row is never read. A row entering the list only
pushes later rows down (read twice, never skipped).

So each page is planned to start 1..MAX_OVERLAP rows before the end of what was read (a page
number and limit whose offset lands there, `keyset.fit_page`); the plan needs no answer, so
up to `depth` pages are in flight. A page must start with a row already read: then every row after
that one which stayed in the list was read before or is on this page. If not, rows left
before it: the pages in flight are dropped and the read backs off (one page before the end
read, then four, sixteen... down to page 1, which needs no check) until a page starts with a
row read. Rows read twice are dropped by (id, key); a row that comes back with a new key (an
edit) is yielded again. A list that repeats itself fails the read (`keyset.Stall`).
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Callable, Iterator

from adapters.amocrm.keyset import MAX_OVERLAP, MIN_SHARE, Stall, drop_pending, first_page, fit_page, hashable
from adapters.errors import StreamError
from adapters.http import ContextPool

MAX_BACKOFFS = 50  # failed checks in one read before giving up: the list changes too fast

_UNSEEN = object()
OffsetFetch = Callable[[int, int], "dict | None"]  # (page no, limit) -> HAL page, None on 204


@dataclass(frozen=True)
class Step:
    """One page to ask for; `end`: the row after its last if it comes full. `check`: its
    first row must be one already read (page 1 needs none)."""

    page: int
    limit: int
    check: bool = True

    @property
    def end(self) -> int:
        return self.page * self.limit


def overlap_pages(
    fetch: OffsetFetch,
    key: str,
    embedded: str,
    *,
    size: int = 250,
    workers: int = 1,
    gap: float = 0.0,
    label: str = "list",
) -> Iterator[list[dict]]:
    """Items of each page in list order, none yielded twice for the same `key` value.
    `workers` caps the pages in flight; how many are used follows the first round trip
    measured against the limiter's `gap`. Raises StreamError (starting with `label`) after
    MAX_BACKOFFS failed checks, or when the list repeats itself (`keyset.Stall`)."""
    data, size, depth = first_page(lambda: fetch(1, size), embedded, size, gap, workers)
    if data is None:
        return
    read = _Read(key, embedded, size)
    stall = Stall(label)
    pool = ContextPool(depth, thread_name_prefix="amo-overlap")
    pending: collections.deque = collections.deque()

    def fill() -> None:
        while len(pending) < depth:
            nxt = read.plan(pending[-1][0].end if pending else None)
            if nxt is None:
                return
            pending.append((nxt, pool.submit(fetch, nxt.page, nxt.limit)))

    try:
        fresh, more = read.take(Step(1, size, check=False), data)
        yield fresh  # alone: a reader that stops here asks for no more
        while more:
            fill()
            step, future = pending.popleft()
            fresh, more = read.take(step, future.result())
            stall.page(len(fresh or ()))
            if fresh is None:  # rows left before this page: back off
                drop_pending(pending)
                back = read.back_off(label)
                stall.grace(max(0, read.end - (back.page - 1) * back.limit) // back.limit + 1)
                pending.append((back, pool.submit(fetch, back.page, back.limit)))
                continue
            if more:
                fill()  # in flight while the caller stores this page
            if fresh:
                yield fresh
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


class _Read:
    """What has been read: every row's (id -> key) and where the read ends (`end`, a row
    number in the list as the last accepted page saw it)."""

    def __init__(self, key: str, embedded: str, size: int):
        self.key, self.embedded, self.size = key, embedded, size
        self.seen: dict = {}
        self.end = 0
        self.fails = 0  # failed checks since the last page accepted
        self.failed = 0  # in this read

    def take(self, step: Step, data: dict | None) -> tuple[list | None, bool]:
        """Accept a page: (fresh items, more to read); fresh is None when the check failed."""
        items = data["_embedded"][self.embedded] if data else []
        keys = [_key(i, self.key) for i in items]
        if step.check and (not items or keys[0][0] not in self.seen):
            return None, True
        fresh = []
        for item, (id_, value) in zip(items, keys):
            if self.seen.get(id_, _UNSEEN) != value:
                fresh.append(item)
            self.seen[id_] = value
        self.end, self.fails = (step.page - 1) * step.limit + len(items), 0
        more = bool(items) and bool((data.get("_links") or {}).get("next"))
        return fresh, more

    def plan(self, ahead_end: int | None) -> Step | None:
        """The page after those in flight (`ahead_end`: where the last of them ends), or None
        to wait for them: a limit of 80-100% of a page whose offset lands 1..MAX_OVERLAP rows
        before that end; else, with nothing in flight, any limit that moves on."""
        rows = self.end if ahead_end is None else ahead_end
        fit = fit_page(rows, self.size, int(self.size * MIN_SHARE), MAX_OVERLAP)
        if fit is None and ahead_end is None:
            if self.size < 2:  # one-row pages cannot overlap: page on unchecked
                return Step(rows + 1, 1, check=False)
            fit = fit_page(rows, self.size, 2, self.size)
            if fit is None:  # tiny pages at an end no offset overlaps: unchecked
                return Step(rows // self.size + 1, self.size, check=False)
        if fit is None:
            return None
        page, limit, _ = fit
        return Step(page, limit, check=page > 1)

    def back_off(self, label: str) -> Step:
        """A page further back after a failed check: one page before the end read, then
        four, sixteen...; page 1 (no check) once that reaches the list's start."""
        self.fails += 1
        self.failed += 1
        if self.failed > MAX_BACKOFFS:
            raise StreamError(
                f"{label}: the list kept changing while it was read ({MAX_BACKOFFS} "
                f"pages did not start with a row already read); try again"
            )
        target = self.end - 1 - self.size * 4 ** (self.fails - 1)
        if target < self.size:
            return Step(1, self.size, check=False)
        return Step(target // self.size + 1, self.size)


def _key(item, key: str) -> tuple:
    """(id, key value) of an item, hashable; an item that is no object (its parser reports
    it) is known by its text."""
    if not isinstance(item, dict):
        return repr(item)[:80], None
    return hashable(item.get("id")), hashable(item.get(key))
