"""The Bitrix24 adapter: streams into the mirror, custom fields, write-back.

Bookmarks (opaque to the sync engine):
- change streams (companies, contacts, leads, deals, tasks): the ISO UTC start of the last
  complete pass; the next run reads `>=DATE_MODIFY` (tasks `CHANGED_DATE`) from it minus the
  overlap. Mid-pass pages carry JSON {"since", "pass", "windows"} so a crash resumes the
  unfinished ID windows instead of starting over.
- users, pipelines: read whole every run (small); bookmark = run start.
- calls: the last call ID; stage_history: JSON {"deal": last ID, "lead": last ID}. A first
  full load of these append-only streams reads several ID windows in parallel and hands rows
  over in ID order, so the bookmark still only moves forward; later runs read one window.
- reconcile: the start of the last ID reconciliation; runs when older than `reconcile_hours`.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta, timezone
from typing import Iterator

from adapters.bitrix24 import fields as uf
from adapters.bitrix24 import streams as st
from adapters.base import CrmField, FieldWrite, Page, WriteResult
from adapters.bitrix24.client import Bitrix24Client
from adapters.bitrix24.paging import PAGE, Chunk, ListSpec, Pager
from adapters.errors import StreamError

log = logging.getLogger(__name__)
RECONCILE = {"companies": st.COMPANIES, "contacts": st.CONTACTS, "leads": st.LEADS,
             "deals": st.DEALS}


def iso(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _chain(*iterables):
    for it in iterables:
        yield from it


def _json(bookmark: str | None) -> dict | None:
    if bookmark and bookmark.startswith("{"):
        try:
            return json.loads(bookmark)
        except ValueError:
            return None
    return None


class Bitrix24Adapter:
    kind = "bitrix24"

    def __init__(self, source, tokens=None, client: Bitrix24Client | None = None):
        self.cfg = source
        self.source = source.name
        self.client = client or Bitrix24Client(source, tokens)
        self.pager = Pager(self.client, source.max_workers)
        self._listed: dict[str, datetime] = {}  # tables fully listed by a full pass this run

    @property
    def requests(self) -> int:
        return self.client.requests

    def stream_names(self) -> list[str]:
        names = list(st.ORDER)
        if self.cfg.streams:
            names = [n for n in names if n in self.cfg.streams]
        return names

    def check(self) -> str:
        r = self.client.call("profile").get("result") or {}
        who = " ".join(p for p in (r.get("NAME"), r.get("LAST_NAME")) if p) or "?"
        how = "webhook" if self.client.uses_webhook else "OAuth"
        return (f"Bitrix24 portal {self.client.host()} via {how}, user {who} (id {r.get('ID')}"
                f"{', admin' if r.get('ADMIN') else ''})")

    def exchange_code(self, code: str) -> str:
        return self.client.exchange_code(code)

    def close(self) -> None:
        self.client.close()

    # ---- fetch ---------------------------------------------------------------------------

    def fetch(self, stream: str, bookmark: str | None, run_started_at: datetime,
              full: bool = False) -> Iterator[Page]:
        if full:
            bookmark = None
        if stream == "pipelines":
            yield from self._pipelines(bookmark, run_started_at)
        elif stream == "calls":
            yield from self._calls(bookmark)
        elif stream == "stage_history":
            yield from self._stage_history(bookmark)
        elif stream == "reconcile":
            yield from self._reconcile(bookmark, run_started_at, full)
        elif stream == "users":
            yield from self._snapshot(st.USERS, run_started_at)
        elif stream in st.CHANGE_STREAMS:
            yield from self._changes(st.CHANGE_STREAMS[stream], bookmark, run_started_at)
        else:
            raise StreamError(f"Bitrix24 source '{self.source}': unknown stream '{stream}'")

    def _snapshot(self, s: st.Stream, run_started_at: datetime) -> Iterator[Page]:
        for chunk in self.pager.run(s.spec, [[0, None]], first_chain=4):
            yield Page(rows={s.table: [s.parse(r) for r in chunk.rows]})
        yield Page(bookmark=iso(run_started_at))

    def _since_filter(self, s: st.Stream, since: str) -> dict:
        start = parse_iso(since) - timedelta(minutes=self.cfg.overlap_minutes)
        return {">=" + s.cursor: start.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S+00:00")}

    def _changes(self, s: st.Stream, bookmark: str | None, run_started_at: datetime) -> Iterator[Page]:
        state = _json(bookmark)
        if state:  # resuming an interrupted pass
            since, pass_start = state.get("since"), state.get("pass") or iso(run_started_at)
            windows = [list(w) for w in state.get("windows") or []]
        else:
            since, pass_start, windows = bookmark, iso(run_started_at), None
        extra = self._since_filter(s, since) if since else None
        fresh_full = windows is None and extra is None
        density = None
        if windows is None:
            if extra is None:
                windows, density = self.pager.plan(s.spec, self.pager.workers * 4)
            else:
                windows = [[0, None]]
        progress = {i: list(w) for i, w in enumerate(windows)}
        seen: list[int] | None = [] if fresh_full and s.reconcile else None
        companion = st.deal_links_command if s is st.DEALS else None
        for chunk in self.pager.run(s.spec, windows, extra, companion, density=density):
            records = [s.parse(r) for r in chunk.rows]
            page = Page(rows={s.table: records})
            if companion:
                page.rows["deal_contacts"] = self._links(records, chunk)
            if seen is not None:
                seen.extend(r["id"] for r in records)
            if chunk.done:
                progress.pop(chunk.window, None)
            else:
                progress[chunk.window][0] = chunk.lower
            if progress:
                page.bookmark = json.dumps({"since": since, "pass": pass_start,
                                            "windows": sorted(progress.values(), key=lambda w: w[0])})
            yield page
        final = Page(bookmark=pass_start)
        if seen is not None:  # a complete fresh listing doubles as a reconciliation
            final.present = {s.table: seen}
            self._listed[s.table] = run_started_at
        yield final

    def _links(self, deals: list[dict], chunk: Chunk) -> list[dict]:
        """deal_contacts for a page of deals, from the crm.item.list results beside them."""
        contact_ids = {}
        for result in chunk.extra:
            items = (result or {}).get("items") if isinstance(result, dict) else None
            for item in items or []:
                contact_ids[st.to_int(item.get("id"))] = item.get("contactIds") or []
        missing = [d["id"] for d in deals if d["id"] not in contact_ids]
        if missing:  # changed between the two sub-calls: ask for those deals by id
            contact_ids.update(self._links_by_id(missing))
        links = []
        for d in deals:
            links.extend(st.deal_links(d, contact_ids.get(d["id"], [])))
        return links

    def _links_by_id(self, ids: list[int]) -> dict[int, list]:
        out: dict[int, list] = {}
        for i in range(0, len(ids), PAGE):
            env = self.client.call(st.DEAL_LINKS, {
                "entityTypeId": 2, "select": ["id", "contactIds"], "filter": {"@id": ids[i:i + PAGE]},
                "start": -1})
            for item in (env.get("result") or {}).get("items") or []:
                out[st.to_int(item.get("id"))] = item.get("contactIds") or []
        return out

    # ---- pipelines -----------------------------------------------------------------------

    def _pipelines(self, bookmark: str | None, run_started_at: datetime) -> Iterator[Page]:
        known = (_json(bookmark) or {}).get("categories") or []
        cmds = {"cats": ("crm.category.list", {"entityTypeId": 2}),
                "lead": ("crm.status.list", {"filter": {"ENTITY_ID": "STATUS"}, "order": {"SORT": "ASC"}})}
        for cid in [0, *known]:
            cmds[f"s{cid}"] = self._stage_cmd(cid)
        res = self._batch_ok(cmds)
        cats = (res["cats"] or {}).get("categories") or []
        ids = [st.to_int(c.get("id")) or 0 for c in cats]
        missing = {f"s{cid}": self._stage_cmd(cid) for cid in ids if f"s{cid}" not in cmds}
        if missing:
            res.update(self._batch_ok(missing))
        rows = {"pipelines": [st.pipeline(c) for c in cats] + [dict(st.LEAD_PIPELINE_ROW)], "stages": []}
        for cid in ids:
            rows["stages"].extend(st.stage(s, cid, "deal") for s in res.get(f"s{cid}") or [])
        rows["stages"].extend(st.stage(s, st.LEAD_PIPELINE, "lead") for s in res.get("lead") or [])
        yield Page(rows=rows, bookmark=json.dumps({"at": iso(run_started_at),
                                                   "categories": [c for c in ids if c]}))

    @staticmethod
    def _stage_cmd(cid: int) -> tuple[str, dict]:
        return ("crm.status.list", {"filter": {"ENTITY_ID": "DEAL_STAGE" if cid == 0 else f"DEAL_STAGE_{cid}"},
                                    "order": {"SORT": "ASC"}})

    def _batch_ok(self, cmds: dict) -> dict:
        res = self.client.batch(cmds)
        for key, err in res.errors.items():
            raise self.client.error(cmds[key][0], err.code, err.description)
        return dict(res.results)

    # ---- append-only streams -------------------------------------------------------------

    def _append_windows(self, spec: ListSpec, last: int) -> tuple[list[list], float | None]:
        """ID windows above `last` for an append-only list: a full load (or a long gap) is
        split like deals; a nightly run reads one window from `last`."""
        if last:
            return [[last, None]], None
        windows, density = self.pager.plan(spec, self.pager.workers * 8)
        if windows:
            windows[-1][1] = None  # rows added while we read land in the last window
        return windows, density

    def _calls(self, bookmark: str | None) -> Iterator[Page]:
        last = int(bookmark) if bookmark and bookmark.isdigit() else 0
        windows, density = self._append_windows(st.CALLS.spec, last)

        def bind(chunk: Chunk) -> Chunk:  # in the worker: activity lookups run in parallel
            chunk.side = self._activities([r.get("CRM_ACTIVITY_ID") for r in chunk.rows])
            return chunk

        for chunk in self.pager.run(st.CALLS.spec, windows, density=density, ordered=True, each=bind):
            acts = chunk.side
            records = [st.call(r, acts.get(st.to_int(r.get("CRM_ACTIVITY_ID")))) for r in chunk.rows]
            last = max([last] + [r["id"] for r in records])
            yield Page(rows={"calls": records}, bookmark=str(last))
        yield Page(bookmark=str(last))

    def _activities(self, ids) -> dict[int, dict]:
        """Owner bindings of call activities (the deal a call belongs to), best effort."""
        ids = sorted({i for i in (st.ref_id(x) for x in ids) if i})
        cmds = []
        for i in range(0, len(ids), PAGE):
            p = dict(st.ACTIVITIES.params, filter={"@ID": ids[i:i + PAGE]}, start=-1)
            cmds.append((st.ACTIVITIES.method, p))
        out = {}
        try:
            while cmds:
                # Reserve operating time like the pager does: parallel workers share the budget.
                n, held = self.client.budget.take({st.ACTIVITIES.method: len(cmds)})
                part, cmds = cmds[:n], cmds[n:]
                if len(part) > 1:
                    res = self.client.batch({f"a{k}": c for k, c in enumerate(part)}, held)
                    for err in res.errors.values():
                        raise self.client.error(st.ACTIVITIES.method, err.code, err.description)
                    results = list(res.results.values())
                else:
                    self.client.budget.release(held)
                    results = [self.client.call(*part[0]).get("result")]
                for rows in results:
                    for a in st.ACTIVITIES.rows(rows) if rows is not None else []:
                        out[st.to_int(a.get("ID"))] = a
        except (StreamError, ValueError) as err:  # fall back to the call's own CRM binding
            log.warning("Bitrix24 source '%s': call bindings unavailable: %s", self.source, err)
        return out

    def _stage_history(self, bookmark: str | None) -> Iterator[Page]:
        """Deal and lead history by `>ID`; the first request reads both, so a quiet run costs one.

        A full load reads each history in parallel ID windows, handed over in ID order: a
        record's previous stage is the row before it for the same deal or lead.
        """
        state = _json(bookmark) or {}
        specs = {"deal": st.DEAL_HISTORY, "lead": st.LEAD_HISTORY}
        last = {e: int(state.get(e) or 0) for e in specs}
        first = self._batch_ok({e: (spec.method, spec.command(last[e], None, None))
                                for e, spec in specs.items()})
        for entity, spec in specs.items():
            previous: dict[int, object] = {}
            pages = [spec.rows(first.get(entity) or [])]
            if len(pages[0]) == PAGE:
                start = int(pages[0][-1][spec.row_id])
                windows, density = self._append_windows(spec, last[entity])
                windows = [[max(lo, start), hi] for lo, hi in windows if hi is None or hi > start]
                chunks = self.pager.run(spec, windows, density=density, ordered=True)
                pages = _chain(pages, (c.rows for c in chunks))
            for rows in pages:
                records = []
                for r in rows:
                    rec = st.stage_change(r, entity, previous.get(st.to_int(r.get("OWNER_ID"))))
                    previous[rec["entity_id"]] = rec["stage_id"]
                    records.append(rec)
                    last[entity] = max(last[entity], st.to_int(r.get("ID")) or 0)
                state[entity] = last[entity]
                yield Page(rows={"stage_changes": records}, bookmark=json.dumps(state, sort_keys=True))
        yield Page(bookmark=json.dumps({**state, **last}, sort_keys=True))

    # ---- deletions -----------------------------------------------------------------------

    def _reconcile(self, bookmark: str | None, run_started_at: datetime, full: bool) -> Iterator[Page]:
        if not full and bookmark:
            try:
                age = run_started_at - parse_iso(bookmark)
                if age < timedelta(hours=self.cfg.reconcile_hours):
                    yield Page(bookmark=bookmark)
                    return
            except ValueError:
                pass
        wanted = [t for t in RECONCILE if not self.cfg.streams or t in self.cfg.streams]
        for table in wanted:
            if self._listed.get(table) == run_started_at:
                continue  # a full pass of that stream listed every ID a moment ago
            yield Page(present={table: self.list_ids(RECONCILE[table].spec)})
        self._listed.clear()
        yield Page(bookmark=iso(run_started_at))

    def list_ids(self, spec: ListSpec) -> list[int]:
        """Every ID of a list method: ID only, no counting, 2,500 per request."""
        spec = ListSpec(spec.method, {"select": [spec.id_key]}, spec.filter_key, spec.id_key,
                        spec.row_id, spec.wrap, spec.order)
        windows, density = self.pager.plan(spec, self.pager.workers * 4)
        ids: list[int] = []
        for chunk in self.pager.run(spec, windows, density=density):
            ids.extend(st.to_int(r[spec.row_id]) for r in chunk.rows)
        return ids

    # ---- custom fields -------------------------------------------------------------------

    def list_fields(self, entity_type: str) -> list[CrmField]:
        return uf.list_fields(self.client, entity_type)

    def create_field(self, entity_type: str, code: str, label: str) -> CrmField:
        return uf.create_field(self.client, entity_type, code, label)

    def write_values(self, entity_type: str, writes: list[FieldWrite]) -> list[WriteResult]:
        return uf.write_values(self.client, entity_type, writes)
