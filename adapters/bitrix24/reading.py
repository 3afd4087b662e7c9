"""Reading Bitrix24 streams: one reader per stream mode, driven by the stream's declaration.

Bookmarks (shapes in `adapters.bookmarks`):
- snapshot (users, pipelines): {"at"} the run start, read whole every run (small);
  pipelines add "categories", the pipelines seen, so one batch reads every stage list.
- changes (companies, contacts, leads, deals, tasks): {"since"} the start of the last complete
  pass; the next run reads `>=cursor` from it minus the overlap. Mid-pass pages add "pass" and
  "windows", so a crash resumes the unfinished ID windows instead of starting over, then reads
  what changed since the pass began (rows of the windows read before the crash may have). A first
  (or full) pass lists every ID, which doubles as that table's reconciliation this run.
- append (calls, stage history): {"last_id": {part: id}}. A first load reads several ID
  windows in parallel and hands rows over in ID order, so the bookmark only moves forward and
  a stage change's previous stage is the row before it; later runs read one window.
- reconcile: {"at"} the start of the last ID reconciliation; runs when older than
  `reconcile_hours`.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Iterator

from adapters import bookmarks
from adapters.base import Page
from adapters.bitrix24.listing import Lister
from adapters.bitrix24.paging import PAGE, Chunk, ListSpec
from adapters.bitrix24.streams import ListRequest, PipelinesRequest
from adapters.streams import Ctx, Stream, records
from adapters.times import as_utc, iso, parse_iso
from adapters.values import to_id, to_int


@dataclass
class Listing:
    """What a snapshot read produced: items, their per-item lookups, bookmark fields to keep."""

    items: list
    side: dict = field(default_factory=dict)
    keep: dict = field(default_factory=dict)


class Reader:
    """Pages of one declared stream, by mode (`modes`: mode -> reader(stream, saved bookmark,
    run start)); `listed` remembers tables a full pass listed."""

    def __init__(self, cfg, lister: Lister, declared: dict[str, Stream]):
        self.cfg = cfg
        self.lister = lister
        self.declared = declared
        self.listed: dict[str, datetime] = {}
        self._local = threading.local()  # per thread: streams may be read side by side
        self.modes = {
            "snapshot": self.snapshot,
            "changes": self.changes,
            "append": self.append,
            "reconcile": self.reconcile,
        }

    @property
    def estimate(self) -> int | None:
        """Entities the calling thread's planned read expects, not yet announced."""
        return getattr(self._local, "estimate", None)

    @estimate.setter
    def estimate(self, rows: int | None) -> None:
        self._local.estimate = rows

    def parse(self, s: Stream, items: list, side: dict, memo: dict | None = None) -> Page:
        """One page of items through the stream's parser."""
        ctx = Ctx(self.cfg.currency, {} if memo is None else memo, side)
        return records(items, s.parse, ctx, s.name)

    # ---- snapshot -------------------------------------------------------------------------

    def snapshot(self, s: Stream, state: dict, run_started_at: datetime) -> Iterator[Page]:
        keep: dict = {}
        for listing in s.request.snapshot(self, state):
            keep.update(listing.keep)
            yield self.parse(s, listing.items, listing.side)
        yield Page(bookmark=bookmarks.dump("snapshot", at=iso(run_started_at), **keep))

    def list_all(self, req: ListRequest) -> Iterator[Listing]:
        for chunk in self.lister.pages(req, [[0, None]]):
            yield Listing(chunk.rows, chunk.side)

    def pipelines(self, req: PipelinesRequest, state: dict) -> Iterator[Listing]:
        """Pipelines and every stage list in one batch; one more for pipelines not seen before."""
        cmds = {"cats": req.categories, "lead": req.lead_statuses}
        for cid in [0, *(state.get("categories") or [])]:
            cmds[f"s{cid}"] = req.stages(cid)
        res = self.lister.batch_ok(cmds)
        cats = (res.get("cats") or {}).get("categories") or []
        ids = [to_int(c.get("id")) or 0 for c in cats]
        missing = {f"s{cid}": req.stages(cid) for cid in ids if f"s{cid}" not in cmds}
        if missing:
            res.update(self.lister.batch_ok(missing))
        side = {cid: res.get(f"s{cid}") or [] for cid in ids}
        side[to_int(req.leads["id"])] = res.get("lead") or []
        yield Listing([*cats, req.leads], side, {"categories": [c for c in ids if c]})

    # ---- changes --------------------------------------------------------------------------

    def changes(self, s: Stream, state: dict, run_started_at: datetime) -> Iterator[Page]:
        self.estimate = None  # a read announces only its own estimate
        req: ListRequest = s.request
        since, pass_start = state.get("since"), state.get("pass") or iso(run_started_at)
        windows = [list(w) for w in state["windows"]] if "windows" in state else None
        extra = self.since_filter(s.cursor, since) if since else None
        fresh_full, density = windows is None and extra is None, None
        if windows is None:
            if extra is None:
                windows, density = self.lister.plan(req.spec, 4, companion=req.companion is not None)
                self.expect(windows, density)
            else:
                windows = [[0, None]]
        progress = {i: list(w) for i, w in enumerate(windows)}
        seen: list[int] | None = [] if fresh_full and req.reconciles else None
        for chunk in self.lister.pages(req, windows, extra, density=density):
            page = self.parse(s, chunk.rows, chunk.side)
            page.expected = self.announce()
            if seen is not None:
                seen = listed_ids(page, s.tables[0], seen)
            if chunk.done:
                progress.pop(chunk.window, None)
            else:
                progress[chunk.window][0] = chunk.lower
            if progress:  # ("pass" is a Python keyword, hence the dict)
                page.bookmark = bookmarks.dump(
                    "changes",
                    since=since,
                    windows=sorted(progress.values(), key=lambda w: w[0]),
                    **{"pass": pass_start},
                )
            yield page
        if "windows" in state:
            # A pass an earlier run began: rows of the windows it read before it stopped may
            # have changed since. Read what changed since the pass began; then this run's
            # start is the bookmark, as for a pass read whole.
            catch_up = self.since_filter(s.cursor, pass_start)
            for chunk in self.lister.pages(req, [[0, None]], catch_up):
                yield self.parse(s, chunk.rows, chunk.side)
            pass_start = iso(run_started_at)
        final = Page(bookmark=bookmarks.dump("changes", since=pass_start))
        if seen is not None:  # a complete fresh listing doubles as a reconciliation
            final.present = {s.tables[0]: seen}
            self.listed[s.tables[0]] = run_started_at
        yield final

    def since_filter(self, cursor: str, since: str) -> dict:
        start = parse_iso(since) - timedelta(minutes=self.cfg.overlap_minutes)
        return {">=" + cursor: start.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S+00:00")}

    # ---- append ---------------------------------------------------------------------------

    def append(self, s: Stream, state: dict, run_started_at: datetime) -> Iterator[Page]:
        self.estimate = None  # a read announces only its own estimate
        parts: dict[str, ListRequest] = s.request.parts
        last = {part: (state.get("last_id") or {}).get(part) or 0 for part in parts}
        first = self.first_pages(parts, last) if len(parts) > 1 else {}
        memo: dict = {}
        for part, req in parts.items():
            for chunk in self.after(req, last[part], first.get(part)):
                page = self.parse(s, chunk.rows, chunk.side, memo)
                page.expected = self.announce()
                last[part] = max([last[part]] + req.spec.ids_of(chunk.rows))
                page.bookmark = bookmarks.dump("append", last_id=dict(last))
                yield page
        yield Page(bookmark=bookmarks.dump("append", last_id=last))

    def first_pages(self, parts: dict[str, ListRequest], last: dict) -> dict[str, list]:
        """The first page after the bookmark of every part, in one request."""
        res = self.lister.batch_ok(
            {part: (req.spec.method, req.spec.command(last[part], None, None)) for part, req in parts.items()}
        )
        return {part: req.spec.rows(res.get(part) or []) for part, req in parts.items()}

    def after(self, req: ListRequest, last: int, first: list | None) -> Iterator[Chunk]:
        """Chunks of rows after ID `last` in ID order; `first`: the first page, read already."""
        if first is not None:
            chunk = Chunk(0, first, done=len(first) < PAGE)
            yield self.lister.look_up(req, chunk) if req.lookup else chunk
            if chunk.done:
                return
            start = req.spec.last_id(first)
            windows, density, chain = self.append_windows(req.spec, last)
            windows = [[max(lo, start), hi] for lo, hi in windows if hi is None or hi > start]
        else:
            windows, density, chain = self.append_windows(req.spec, last)
        yield from self.lister.pages(req, windows, density=density, ordered=True, first_chain=chain)

    def append_windows(self, spec: ListSpec, last: int) -> tuple[list[list], float | None, int | None]:
        """ID windows above `last`: a full load (or a long gap) is split like deals; a nightly
        run reads one window from `last`. Also the pages the open last window's first batch
        reads: the plan's estimate for it (without one, chains grow from one page)."""
        if last:
            return [[last, None]], None, None
        windows, density = self.lister.plan(spec, 8)
        self.expect(windows, density)
        chain = None
        if windows:
            lo, hi = windows[-1]
            chain = math.ceil((density * (hi - lo) * 1.1 + 1) / PAGE)
            windows[-1][1] = None  # rows added while we read land in the last window
        return windows, density, chain

    # ---- progress -------------------------------------------------------------------------

    def expect(self, windows: list[list], density: float) -> None:
        """Remember how many rows a planned read should bring: the plan's ID range times its
        ID density. Lists are read with start=-1, which turns the API's `total` off (counting
        costs seconds on big portals), so this estimate is the total the progress shows."""
        rows = round(density * sum(hi - lo for lo, hi in windows if hi is not None))
        self.estimate = (self.estimate or 0) + rows

    def announce(self) -> int | None:
        """The estimate not yet handed to a page (for `Page.expected`), once."""
        out, self.estimate = self.estimate, None
        return out

    # ---- deletions ------------------------------------------------------------------------
    # An item skipped for a bad value is still in the CRM: its id counts as listed. One whose
    # id we cannot read could be any row, so that table is not reconciled this run.

    def reconcile(self, s: Stream, state: dict, run_started_at: datetime) -> Iterator[Page]:
        if state and as_utc(run_started_at) - parse_iso(state["at"]) < timedelta(
            hours=self.cfg.reconcile_hours
        ):
            yield Page(bookmark=bookmarks.dump("reconcile", **state))
            return
        for name in s.request.streams:
            if self.cfg.streams and name not in self.cfg.streams:
                continue
            listed = self.declared[name]
            if self.listed.get(listed.tables[0]) == run_started_at:
                continue  # a full pass of that stream listed every ID a moment ago
            ids = self.lister.ids(listed.request.spec)
            if ids is None:
                yield Page(problems=[unreadable(listed.tables[0])])
            else:
                yield Page(present={listed.tables[0]: ids})
        self.listed.clear()
        yield Page(bookmark=bookmarks.dump("reconcile", at=iso(run_started_at)))


def listed_ids(page: Page, table: str, seen: list[int]) -> list[int] | None:
    """`seen` plus the ids a page of a full listing showed, skipped items included; None when
    one of them has no readable id."""
    skipped = [to_id(p.get("item")) for p in page.problems if p.get("skipped")]
    if None in skipped:
        return None
    return seen + [r["id"] for r in page.rows.get(table, [])] + skipped


def unreadable(table: str) -> dict:
    return {
        "item": None,
        "field": None,
        "value": None,
        "skipped": False,
        "why": f"a listed item has no readable ID: deletions in {table} are not reconciled this run",
    }
