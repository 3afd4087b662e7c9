"""Reading what a Bitrix24 request declares: list pages with their companion values and
lookups, batches that must succeed whole, and every ID of a list.

`Lister.pages(request, windows)` yields `Chunk`s whose `side` holds, by item id, what the
parser needs beside the item: the companion list's value (a deal's contact ids), or the row a
lookup found (a call's activity). Lookups run in the worker thread that read the page, so
they run in parallel too; companion values arrive in the same batch as the page.
"""

from __future__ import annotations

import logging
from typing import Iterator

from adapters.bitrix24.client import MAX_BATCH, Bitrix24Client
from adapters.bitrix24.paging import PAGE, Chunk, ListSpec, Pager
from adapters.bitrix24.streams import Companion, ListRequest, Lookup, PerItem
from adapters.errors import StreamError
from adapters.http import ContextPool
from adapters.values import ref_id, to_int

log = logging.getLogger(__name__)
PER_ITEM_SIDE_BY_SIDE = 6  # a chunk's per-item batches in flight at once (per window being read)


class Lister:
    def __init__(self, client: Bitrix24Client, pager: Pager):
        self.client = client
        self.pager = pager

    def pages(
        self,
        req: ListRequest,
        windows: list[list],
        extra: dict | None = None,
        density: float | None = None,
        ordered: bool = False,
        first_chain: int | None = None,
    ) -> Iterator[Chunk]:
        """Chunks of `req`'s list over `windows` (in ID order if `ordered`), each with its side;
        `first_chain`: pages in the first batch of an open window (default `req.first_chain`)."""
        each = (lambda chunk: self.look_up(req, chunk)) if req.lookup or req.per_item else None
        companion = req.companion.command if req.companion else None
        chunks = self.pager.run(
            req.spec,
            windows,
            extra=extra,
            companion=companion,
            first_chain=first_chain or req.first_chain,
            density=density,
            ordered=ordered,
            each=each,
        )
        for chunk in chunks:
            if req.companion:
                chunk.side = self.companion_values(req.companion, req.spec, chunk)
            yield chunk

    def companion_values(self, comp: Companion, spec: ListSpec, chunk: Chunk) -> dict:
        """Item id -> companion value, for every item of the chunk."""
        side = comp.values(chunk.extra)
        missing = [i for i in spec.ids_of(chunk.rows) if i not in side]
        for i in range(0, len(missing), PAGE):  # changed between the two sub-calls: ask by id
            env = self.client.call(*comp.by_ids(missing[i : i + PAGE]))
            side.update(comp.values([env.get("result")]))
        return side

    def look_up(self, req: ListRequest, chunk: Chunk) -> Chunk:
        """Set `chunk.side` to item id -> the row `req.lookup` finds for it (best effort), or
        to what `req.per_item` answers for it."""
        if req.per_item:
            chunk.side = self.per_item(req.per_item, req.spec, chunk.rows)
            return chunk
        lookup: Lookup = req.lookup
        rows = [r for r in chunk.rows if isinstance(r, dict)]  # the parser reports the others
        found = self.by_ids(lookup.spec, [r.get(lookup.key) for r in rows])
        chunk.side = {
            req.spec.id_of(r): found[ref_id(r.get(lookup.key))]
            for r in rows
            if ref_id(r.get(lookup.key)) in found
        }
        return chunk

    def per_item(self, each: PerItem, spec: ListSpec, rows: list) -> dict:
        """Item id -> `each.method`'s result for it, for the wanted items, up to 50 per batch.
        A failed sub-call fails the stream (the page's records would lose what it adds),
        except NOT_FOUND: the item went between the listing and this call."""
        ids = [spec.id_of(r) for r in rows if each.wanted(r)]
        ids = [i for i in dict.fromkeys(ids) if i is not None]
        groups = [ids[i : i + PAGE] for i in range(0, len(ids), PAGE)]
        if len(groups) <= 1:
            return self.per_item_batches(each, groups[0]) if groups else {}
        # A chunk of many full pages needs many batches: they go side by side (the throttle
        # bounds the requests in flight), else a window's batches queue behind one another.
        out: dict = {}
        pool = ContextPool(
            min(len(groups), self.pager.workers, PER_ITEM_SIDE_BY_SIDE), thread_name_prefix="b24-per-item"
        )
        try:
            for future in [pool.submit(self.per_item_batches, each, g) for g in groups]:
                out.update(future.result())
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return out

    def per_item_batches(self, each: PerItem, ids: list[int]) -> dict:
        """`each.method` for up to 50 items, in as few batches as the budget and the request
        cap allow."""
        out: dict = {}
        while ids:
            n, held = self.client.reserve({each.method: len(ids)})
            part, ids = ids[:n], ids[n:]
            res = self.client.batch({f"i{i}": (each.method, {each.param: i}) for i in part}, held)
            for err in res.errors.values():
                if err.code != "NOT_FOUND":
                    raise self.client.error(each.method, err.code, err.description)
            for key, result in res.results.items():
                out[int(key[1:])] = result
        return out

    def by_ids(self, spec: ListSpec, ids) -> dict[int, dict]:
        """Rows of `spec`'s list by ID, 50 per sub-call; {} with a warning when it fails."""
        ids = sorted({i for i in (ref_id(x) for x in ids) if i})
        cmds = [
            (
                spec.method,
                dict(spec.params, **{spec.filter_key: {"@" + spec.id_key: ids[i : i + PAGE]}}, start=-1),
            )
            for i in range(0, len(ids), PAGE)
        ]
        out = {}
        try:
            while cmds:
                # Reserve operating time like the pager does: parallel workers share the budget.
                n, held = self.client.reserve({spec.method: len(cmds)})
                part, cmds = cmds[:n], cmds[n:]
                if len(part) > 1:
                    results = list(self.batch_ok({f"a{k}": c for k, c in enumerate(part)}, held).values())
                else:
                    self.client.budget.release(held)
                    results = [self.client.call(*part[0]).get("result")]
                for rows in results:
                    for row in spec.rows(rows) if rows is not None else []:
                        out[to_int(row.get(spec.row_id))] = row
        except (StreamError, ValueError) as err:  # the parser falls back to the item's own data
            log.warning("Bitrix24 source '%s': %s lookup unavailable: %s", self.client.name, spec.method, err)
        return out

    def plan(self, spec: ListSpec, per_worker: int, companion: bool = False) -> tuple[list[list], float]:
        """ID windows over the whole list (up to `per_worker` per worker) and the ID density;
        `companion`: each page has a companion sub-call, so a batch reads half as many pages."""
        return self.pager.plan(spec, self.pager.workers * per_worker, MAX_BATCH // (2 if companion else 1))

    def batch_ok(self, cmds: dict, held: dict | None = None) -> dict:
        """One batch whose every sub-call must succeed; results by key."""
        res = self.client.batch(cmds, held)
        for key, err in res.errors.items():
            raise self.client.error(cmds[key][0], err.code, err.description)
        return dict(res.results)

    def ids(self, spec: ListSpec) -> list[int] | None:
        """Every ID of a list method: ID only, no counting, 2,500 per request; None when a row
        has no readable ID (the listing cannot tell which rows are gone)."""
        spec = ListSpec(
            spec.method,
            {"select": [spec.id_key]},
            spec.filter_key,
            spec.id_key,
            spec.row_id,
            spec.wrap,
            spec.order,
        )
        windows, density = self.plan(spec, 4)
        ids: list[int] = []
        for chunk in self.pager.run(spec, windows, density=density):
            got = spec.ids_of(chunk.rows)
            if len(got) < len(chunk.rows):
                return None
            ids.extend(got)
        return ids
