"""Fast listing: `start=-1` ID windows chained inside `batch`, several windows in parallel.

A list method sorted by ID with `>ID` = the last ID seen and `start=-1` returns the next 50
rows without counting the table (counting costs seconds on big portals). Inside one batch,
command k takes its lower bound from command k-1 (`$result[p{k-1}][49][ID]`), so one request
reads up to 50 pages. A page shorter than 50 ends the window; the server resolves the
references after it to nothing and those commands return empty pages.

Full loads split [0, max ID] into windows read by `workers` threads at once: the request
rate is never the bound (a batch is one request), the per-method operating budget is, and
`Bitrix24Client.reserve` sizes every chain to what the budget still allows and to what fits
in one request's time (a portal cuts a request at 60 s; a chain cut anyway is read again in
smaller batches). `ordered=True`
hands chunks over in ID order (later windows wait in memory), for streams whose bookmark is
the last ID or whose records depend on the row before (stage history); `each` runs per chunk
in the worker thread, so follow-up lookups (a call's activity) run in parallel too.

No request without progress: a page whose rows do not all lie above the `>ID` it was asked
for (a server that ignores the filter serves the same rows again) fails the stream.
"""

from __future__ import annotations

import copy
import math
import queue
import threading
from dataclasses import dataclass, field
from typing import Callable, Iterator

from adapters.bitrix24.answers import RequestCut
from adapters.bitrix24.client import MAX_BATCH, Bitrix24Client, Ref, ref
from adapters.errors import StreamError
from adapters.http import ContextPool
from adapters.values import to_id

PAGE = 50
FILL = 0.8  # the share of a full chain a planned window is expected to fill
LIMIT_CODES = ("OPERATION_TIME_LIMIT", "QUERY_LIMIT_EXCEEDED")


@dataclass(frozen=True)
class ListSpec:
    """How to page one list method by ID."""

    method: str
    params: dict = field(default_factory=dict)  # select, entityTypeId, ...
    filter_key: str = "filter"  # user.get / voximplant use FILTER
    id_key: str = "ID"  # name in filter and order
    row_id: str = "ID"  # name in returned rows (tasks: id)
    wrap: str | None = None  # result.tasks / result.items
    order: dict | None = None  # default {"order": {id_key: "ASC"}}

    def order_params(self, desc: bool = False) -> dict:
        if self.order is not None:
            return {k: ("DESC" if desc and str(v).upper() == "ASC" else v) for k, v in self.order.items()}
        return {"order": {self.id_key: "DESC" if desc else "ASC"}}

    def command(self, lower, hi: int | None, extra: dict | None) -> dict:
        p = copy.deepcopy(self.params)
        flt = dict(p.get(self.filter_key) or {})
        flt.update(extra or {})
        flt[">" + self.id_key] = lower
        if hi is not None:
            flt["<=" + self.id_key] = hi
        p[self.filter_key] = flt
        p.update(self.order_params())
        p["start"] = -1
        return p

    def rows(self, result) -> list[dict]:
        if self.wrap and isinstance(result, dict):
            result = result.get(self.wrap)
        if isinstance(result, dict):  # a PHP array keyed 0..n may come back as an object
            result = list(result.values())
        if not isinstance(result, list):
            raise ValueError("list result is not a list")
        return result

    def id_of(self, row) -> int | None:
        """A row's ID; None for a row that is not an object or whose ID is not an id (junk,
        negative, past 64 bits: the parser skips and reports that item; paging goes on by the
        IDs it can read)."""
        return to_id(row.get(self.row_id)) if isinstance(row, dict) else None

    def ids_of(self, rows) -> list[int]:
        return [i for i in map(self.id_of, rows) if i is not None]

    def last_id(self, rows) -> int:
        """The ID a full page's successor starts after."""
        ids = self.ids_of(rows)
        if not ids:
            raise StreamError(f"{self.method} returned a page without one readable ID")
        return ids[-1]

    def last_ref(self, key: str) -> Ref:
        path = ([self.wrap] if self.wrap else []) + [PAGE - 1, self.row_id]
        return ref(key, *path)


# A companion command read alongside each page (deal -> contact links):
# (lower bound, window top, extra filter) -> (method, params)
CompanionCommand = Callable[[object, "int | None", dict], tuple[str, dict]]


@dataclass
class Chunk:
    """What one batch produced for one window."""

    window: int
    rows: list[dict]
    extra: list = field(default_factory=list)  # companion results, one per page
    lower: int = 0  # the window's progress after this chunk
    done: bool = False
    side: dict = field(default_factory=dict)  # what an `each` hook looked up for these rows


class Pager:
    def __init__(self, client: Bitrix24Client, workers: int = 4):
        self.client = client
        self.workers = max(1, workers)

    def plan(self, spec: ListSpec, max_windows: int, chain: int = MAX_BATCH) -> tuple[list[list], float]:
        """Windows over the whole ID range, and the ID density (rows per ID) to size chains.

        One request reads the 50 lowest and 50 highest IDs: the ends of the range, and from
        their spread how densely IDs are used (portals share ID sequences, leave gaps).
        `chain`: the pages one request may read (25 when each page has a companion).
        """
        p = copy.deepcopy(spec.params)
        p["select"] = [spec.id_key]
        p["start"] = -1
        asc, desc = dict(p, **spec.order_params()), dict(p, **spec.order_params(desc=True))
        res = self.client.batch({"lo": (spec.method, asc), "hi": (spec.method, desc)})
        for err in res.errors.values():
            raise self.client.error(spec.method, err.code, err.description)
        low = spec.ids_of(spec.rows(res.results.get("lo") or []))
        high = spec.ids_of(spec.rows(res.results.get("hi") or []))
        if not low:
            return [], 0.0
        lo, hi = low[0] - 1, max(high[0] if high else low[-1], low[-1])
        if len(low) < PAGE:
            return [[lo, hi]], len(low) / max(1, hi - lo)
        spread = [(PAGE - 1) / max(1, ids[-1] - ids[0]) for ids in (low, sorted(high)) if len(ids) == PAGE]
        density = min(1.0, sum(spread) / len(spread))
        # Each window read by one full batch: requests, not parallel windows, are what the
        # bucket (2 a second past its burst) counts, and a request of 50 list pages is still
        # seconds of server time, far under the request cap (`client.reserve` sizes it anyway).
        # A window is planned to FILL of a chain, as ID density varies along the range: a
        # window denser than planned costs one more request.
        pages = density * (hi - lo) / PAGE
        n = max(1, min(max_windows, math.ceil(pages / max(1.0, FILL * chain))))
        return self.split(lo, hi, n), density

    @staticmethod
    def split(lo: int, hi: int, n: int) -> list[list]:
        """[lo, hi] in n windows of equal ID width."""
        step = max(1, math.ceil((hi - lo) / max(1, n)))
        return [[lo + i * step, min(hi, lo + (i + 1) * step)] for i in range(n) if lo + i * step < hi]

    def run(
        self,
        spec: ListSpec,
        windows: list[list],
        extra: dict | None = None,
        companion: CompanionCommand | None = None,
        first_chain: int = 1,
        density: float | None = None,
        ordered: bool = False,
        each: Callable[[Chunk], Chunk] | None = None,
    ) -> Iterator[Chunk]:
        """Read every window; chunks arrive as batches complete (windows interleave unless
        `ordered`). `each(chunk)` runs in the worker that read the chunk."""
        each = each or (lambda c: c)
        if not windows:  # an empty list (plan found no rows): no pool of zero threads
            return
        if len(windows) == 1 or self.workers == 1:
            for i, (lo, hi) in enumerate(windows):
                for chunk in self._window(i, lo, hi, spec, extra, companion, first_chain, density, None):
                    yield each(chunk)
            return
        chunks = self._parallel(spec, windows, extra, companion, first_chain, density, each)
        yield from in_window_order(chunks) if ordered else chunks

    def _parallel(self, spec, windows, extra, companion, first_chain, density, each) -> Iterator[Chunk]:
        out: queue.Queue = queue.Queue(maxsize=self.workers * 2)
        stop = threading.Event()
        todo: queue.Queue = queue.Queue()
        for i, w in enumerate(windows):
            todo.put((i, *w))

        def worker():
            try:
                while not stop.is_set():
                    try:
                        i, lo, hi = todo.get_nowait()
                    except queue.Empty:
                        return
                    for chunk in self._window(i, lo, hi, spec, extra, companion, first_chain, density, stop):
                        out.put(each(chunk))
            except BaseException as err:  # handed to the consumer, raised there
                out.put(err)
            finally:
                out.put(None)

        n = min(self.workers, len(windows))
        pool = ContextPool(n, thread_name_prefix="b24-window")
        for _ in range(n):
            pool.submit(worker)
        finished = 0
        try:
            while finished < n:
                item = out.get()
                if item is None:
                    finished += 1
                elif isinstance(item, BaseException):
                    raise item
                else:
                    yield item
        finally:
            stop.set()
            while finished < n:  # unblock workers waiting on a full queue
                try:
                    if out.get(timeout=0.1) is None:
                        finished += 1
                except queue.Empty:
                    pass
            pool.shutdown(wait=True)

    def _window(
        self,
        index: int,
        lo: int,
        hi: int | None,
        spec: ListSpec,
        extra: dict | None,
        companion: CompanionCommand | None,
        chain: int,
        density: float | None,
        stop,
    ) -> Iterator[Chunk]:
        per_page = 2 if companion else 1
        max_chain = MAX_BATCH // per_page
        limited = 0
        while stop is None or not stop.is_set():
            want = chain
            if hi is not None and density:
                # Expected pages left (a full last page needs one more): a short page ends the window; the
                # commands chained after it would be wasted server time.
                want = math.ceil((density * (hi - lo) * 1.1 + 1) / PAGE)
            want = max(1, min(want, max_chain))
            methods = {spec.method: want}
            if companion:
                methods[companion(lo, hi, extra or {})[0]] = want
            n, held = self.client.reserve(methods)
            cmds: dict[str, tuple[str, dict]] = {}
            for k in range(n):
                lower = lo if k == 0 else spec.last_ref(f"p{k - 1}")
                cmds[f"p{k}"] = (spec.method, spec.command(lower, hi, extra))
                if companion:
                    cmds[f"q{k}"] = companion(lower, hi, extra or {})
            if len(cmds) == 1:
                self.client.budget.release(held)
                env = self.client.call(spec.method, cmds["p0"][1])
                results, errors = {"p0": env.get("result")}, {}
            else:
                try:
                    # one page and its companion are not linked: a cut pair goes again one by one
                    res = self.client.batch(cmds, held, linked=n > 1)
                except RequestCut:
                    continue  # cut at the time cap: the next batch is smaller (client.reserve)
                results, errors = res.results, res.errors
            rows_all, extras, done, hit_limit = [], [], False, False
            for k in range(n):
                key = f"p{k}"
                err = errors.get(key) or (errors.get(f"q{k}") if companion else None)
                if err is not None:
                    if err.code in LIMIT_CODES:
                        hit_limit = True
                        break
                    raise self.client.error(
                        cmds[key][0] if key in errors else cmds[f"q{k}"][0], err.code, err.description
                    )
                try:
                    rows = spec.rows(results.get(key))
                except ValueError:
                    raise StreamError(
                        f"Bitrix24 source '{self.client.name}': {spec.method} "
                        "returned a page of unexpected shape"
                    ) from None
                self._check_progress(spec, rows, lo)
                rows_all.extend(rows)
                if companion:
                    extras.append(results.get(f"q{k}"))
                if len(rows) < PAGE:
                    done = True
                    break
                lo = spec.last_id(rows)
            if hit_limit:
                limited += 1
                if limited > 20:
                    raise StreamError(
                        f"Bitrix24 source '{self.client.name}': {spec.method} stays "
                        "blocked by the operating-time limit; try again later"
                    )
            else:
                limited = 0
            if rows_all or done:
                yield Chunk(index, rows_all, extras, lo, done)
            if done:
                return
            chain = min(max_chain, chain * 2)

    def _check_progress(self, spec: ListSpec, rows: list, lower) -> None:
        """No request without progress: every row of a page asked for with `>ID` = `lower`
        must lie above it. A server that ignores the filter serves the same rows again, and
        paging on from their last ID would ask for them forever: the stream fails instead."""
        ids = spec.ids_of(rows)
        if ids and isinstance(lower, int) and min(ids) <= lower:
            raise StreamError(
                f"Bitrix24 source '{self.client.name}': {spec.method}: the server served the same "
                f"rows again (IDs from {min(ids)} for a page asked for above ID {lower}: it "
                f"ignores the `>{spec.id_key}` filter); stopped rather than ask again"
            )


def in_window_order(chunks) -> Iterator[Chunk]:
    """Chunks of window 0 first, then window 1, ...; chunks of later windows wait.

    Workers take windows in index order, so what waits is at most the windows in flight
    ahead of the slowest one.
    """
    current, waiting = 0, {}
    for chunk in chunks:
        waiting.setdefault(chunk.window, []).append(chunk)
        while current in waiting:
            queue_ = waiting[current]
            finished = False
            while queue_:
                c = queue_.pop(0)
                yield c
                if c.done:
                    finished = True
                    break
            if not finished:
                break
            del waiting[current]
            current += 1
