"""Reading a list sorted ascending by a moving field (`updated_at`) so that no row is skipped.

amoCRM pages by offset (`page=N`). When a user edits a card already served, it leaves its
place and every later row moves up one: page N+1 would start one row late and that row is
never read. So every request restarts from the newest value seen, inclusive
(`filter[field][from]=u`, page 1), and drops the ids already yielded at `u`: rows after `u`
cannot move before it, so a shift behind us changes nothing ahead.

When a whole page shares one value (a bulk import), restarting would return the same page, so
that instant is paged on by number (page 2, 3 ... of the same query). Only there can a shift
still skip a row, so once such a tie group has been read it is re-read (`[from]=[to]=u`)
until a pass brings no id not yet yielded.

Each request depends on the previous answer, so there is no prefetch of page numbers; the next
request is sent from a background thread as soon as the previous page arrives, while the
caller stores that page, which keeps the rate limiter, not latency, setting the pace.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator

MAX_TIE_PASSES = 3


def keyset_pages(fetch: Callable[[list, int], dict | None], field: str, start: int | None,
                 end: int, embedded: str) -> Iterator[list[dict]]:
    """Items of each page, none yielded twice. `fetch(window_params, page_no)` returns a HAL
    page or None (204); `start`..`end` is the read's window (`start` None: from the first)."""
    seen: set = set()                  # ids yielded whose `field` equals `u`
    u, page_no, tie_pages = start, 1, 0
    pool = ThreadPoolExecutor(1, thread_name_prefix="amo-keyset")
    try:
        future = pool.submit(fetch, _window(field, u, end), page_no)
        while True:
            data = future.result()
            if data is None:
                break
            items = data["_embedded"][embedded]
            fresh = [i for i in items if not (_value(i, field) == u and i.get("id") in seen)]
            newest = max((_value(i, field) for i in items), default=u)
            left = None                # a tie group just left behind: (its value, ids held)
            if newest != u:
                left = (u, seen) if tie_pages else None
                seen, u, page_no, tie_pages = set(), newest, 1, 0
            else:                      # the whole page at one instant: page on within it
                page_no, tie_pages = page_no + 1, tie_pages + 1
            seen.update(i.get("id") for i in items if _value(i, field) == u)
            more = bool(items) and bool((data.get("_links") or {}).get("next"))
            if more:                   # ask for the next page while the caller stores this one
                future = pool.submit(fetch, _window(field, u, end), page_no)
            yield fresh
            if left:
                yield from _reread_tie(fetch, field, *left, embedded)
            if not more:
                if tie_pages:
                    yield from _reread_tie(fetch, field, u, seen, embedded)
                break
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _reread_tie(fetch, field: str, u: int, held: set, embedded: str) -> Iterator[list[dict]]:
    """Re-read the rows stamped exactly `u` until a pass brings no id not in `held`."""
    for _ in range(MAX_TIE_PASSES):
        new, page_no = [], 1
        while True:
            data = fetch(_window(field, u, u), page_no)
            if data is None:
                break
            items = data["_embedded"][embedded]
            new += [i for i in items if i.get("id") not in held]
            held.update(i.get("id") for i in items)
            if not items or not (data.get("_links") or {}).get("next"):
                break
            page_no += 1
        if not new:
            return
        yield new


def _window(field: str, lo: int | None, hi: int) -> list:
    lower = [] if lo is None else [(f"filter[{field}][from]", lo)]
    return lower + [(f"filter[{field}][to]", hi)]


def _value(item: dict, field: str) -> int:
    return int(item.get(field) or 0)
