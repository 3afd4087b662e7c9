"""Reading changed records back by id (`Bitrix24Adapter.read_changes`): what an event named,
as the same mirror rows a sync writes.

Every table's ids go in one `batch`: the stream's own list method filtered by id (`@ID`; tasks
and calls take an id list as the value), 50 ids per sub-call, with what the stream reads beside
its items (a deal's contact ids from `crm.item.list`). So a handful of changes costs one
request; a batch holds 50 sub-calls, so about 2,500 ids fit one. The items go through the
stream's parser (`Reader.parse`); an id the list no longer returns is deleted. An activity
brings the call whose `CRM_ACTIVITY_ID` it is (in the same batch), since a call's deal is its
activity's owner, and its bindings (`crm.activity.binding.list`, one sub-call per activity,
in the same batch); a change naming a call (`calls`) reads it and looks its activity up after.
Tables outside the source's `streams` are not read. Requests pass the client's bucket and
operating budget like every other.
"""

from __future__ import annotations

import logging
from collections import Counter

from adapters.base import Page
from adapters.bitrix24.client import MAX_BATCH, Bitrix24Client
from adapters.bitrix24.listing import Lister
from adapters.bitrix24.paging import PAGE, Chunk, ListSpec
from adapters.bitrix24.reading import Reader
from adapters.bitrix24.streams import ListRequest
from adapters.errors import StreamError
from adapters.hooks import Change
from adapters.streams import Stream
from adapters.values import ref_id

log = logging.getLogger(__name__)

# List methods that take an id list as the filter's value (no `@` prefix in their docs).
PLAIN_ID_FILTER = ("tasks.task.list", "voximplant.statistic.get")
CALL_ACTIVITY_KEY = "CRM_ACTIVITY_ID"  # voximplant.statistic.get: the call's activity
TEXT_IDS = ("activities",)  # tables whose rows carry text ids (the parser's choice)


def request_of(s: Stream) -> ListRequest:
    """The list a stream reads its main table from (an append stream's first part)."""
    req = s.request
    return req if isinstance(req, ListRequest) else next(iter(req.parts.values()))


def by_ids(spec: ListSpec, ids: list[int], key: str | None = None) -> tuple[str, dict]:
    """`spec`'s list for up to 50 ids (of `key`, by default the list's own id)."""
    key = key or spec.id_key
    name = key if spec.method in PLAIN_ID_FILTER else "@" + key
    params = {k: v for k, v in spec.params.items() if k != spec.filter_key}
    return spec.method, {**params, spec.filter_key: {name: ids}, "start": -1}


def chunks(ids: list[int]) -> list[list[int]]:
    return [ids[i : i + PAGE] for i in range(0, len(ids), PAGE)]


class ChangeReader:
    """`read(changes)`: the records the changes name, read back (see the module docstring).
    `streams`: the source's streams by name (a stream's name is its main table's)."""

    def __init__(self, client: Bitrix24Client, lister: Lister, reader: Reader, streams: dict[str, Stream]):
        self.client, self.lister, self.reader = client, lister, reader
        self.streams = streams

    def spec(self, table: str) -> ListSpec:
        return request_of(self.reader.declared[table]).spec

    def read(self, changes: list[Change]) -> Page:
        calls_too = "calls" in self.streams
        wanted: dict[str, list[int]] = {}
        for c in changes:
            # activities are read for their calls even where the mirror keeps no activity rows
            if c.table in self.streams or (c.table == "activities" and calls_too):
                ids = wanted.setdefault(c.table, [])
                if c.id not in ids:
                    ids.append(c.id)
        cmds: dict[str, tuple[str, dict]] = {}
        keys: dict[str, list[str]] = {}
        each: dict[str, int] = {}  # per-item sub-call key -> the item's id
        for table, ids in wanted.items():
            companion = self.companion(table)
            per_item = request_of(self.streams[table]).per_item if table in self.streams else None
            for n, part in enumerate(chunks(ids)):
                key = f"{table}{n}"
                keys.setdefault(table, []).append(key)
                cmds[key] = by_ids(self.spec(table), part)
                if companion:
                    cmds[key + "c"] = companion.by_ids(part)
                if table == "activities" and calls_too:
                    cmds[key + "v"] = by_ids(self.spec("calls"), part, CALL_ACTIVITY_KEY)
                for i in part if per_item else ():
                    each[f"{key}i{i}"] = i
                    cmds[f"{key}i{i}"] = (per_item.method, {per_item.param: i})
        results, errors = self.run(cmds, batched=set(each))
        for key, err in errors.items():
            if key in each and err.code == "NOT_FOUND":  # gone since the change: the list tells
                continue
            if key.endswith("v"):  # a call's re-read is a bonus: the next sync reads it anyway
                log.warning(
                    "Bitrix24 source '%s': the calls of changed activities were not read (%s: %s)",
                    self.client.name,
                    err.code or "error",
                    err.description,
                )
                continue
            raise self.client.error(cmds[key][0], err.code, err.description)
        page = Page()
        for table, ids in wanted.items():
            spec = self.spec(table)
            rows = [r for k in keys[table] for r in self.rows(spec, results.get(k))]
            if table == "activities" and calls_too:
                self.activity_calls(
                    page, rows, [results.get(k + "v") for k in keys[table] if k + "v" not in errors]
                )
            if table not in self.streams:
                continue
            if request_of(self.streams[table]).per_item:
                side = {i: results[k] for k, i in each.items() if k.startswith(table) and k in results}
            else:
                side = self.side(table, rows, [results.get(k + "c") for k in keys[table]])
            page.merge(self.reader.parse(self.streams[table], rows, side))
            found = set(spec.ids_of(rows))
            gone = [str(i) if table in TEXT_IDS else i for i in ids if i not in found]
            if gone:
                page.deleted.setdefault(table, []).extend(gone)
        return page

    # ---- pieces --------------------------------------------------------------------------
    def companion(self, table: str):
        req = self.reader.declared[table].request
        return req.companion if isinstance(req, ListRequest) else None

    def side(self, table: str, rows: list, extra: list) -> dict:
        """What the parser needs beside the items: the companion's values (a deal's contact
        ids; asked once more by id for items changed between the two sub-calls), or the row a
        lookup finds (a call's activity)."""
        req = request_of(self.streams[table])
        if req.companion:
            return self.lister.companion_values(req.companion, req.spec, Chunk(0, rows, extra))
        if req.lookup:
            return self.lister.look_up(req, Chunk(0, rows)).side
        return {}

    def activity_calls(self, page: Page, activities: list, results: list) -> None:
        """The calls of changed activities, each with its activity as the parser's side."""
        spec, act_spec = self.spec("calls"), self.spec("activities")
        rows = [r for result in results for r in self.rows(spec, result)]
        by_id = {act_spec.id_of(a): a for a in activities if act_spec.id_of(a) is not None}
        side = {
            spec.id_of(r): by_id[ref_id(r.get(CALL_ACTIVITY_KEY))]
            for r in rows
            if isinstance(r, dict) and ref_id(r.get(CALL_ACTIVITY_KEY)) in by_id
        }
        page.merge(self.reader.parse(self.streams["calls"], rows, side))

    def rows(self, spec: ListSpec, result) -> list:
        if result is None:
            return []
        try:
            return spec.rows(result)
        except ValueError:
            raise StreamError(
                f"Bitrix24 source '{self.client.name}': {spec.method} returned a list of unexpected shape"
            ) from None

    def run(self, cmds: dict[str, tuple[str, dict]], batched: set = frozenset()) -> tuple[dict, dict]:
        """Every command, 50 a batch, each batch as many of each method as the operating budget
        lets through now; a lone command goes as a plain call, unless its key is `batched` (its
        error is then reported, not raised). (results, errors) by key."""
        results: dict = {}
        errors: dict = {}
        pending = list(cmds.items())
        while pending:
            counts = Counter(m for _, (m, _) in pending[:MAX_BATCH])
            n, held = self.client.budget.take(dict(counts))
            part, rest, used = [], [], Counter()
            for item in pending:
                method = item[1][0]
                if len(part) < MAX_BATCH and used[method] < n:
                    part.append(item)
                    used[method] += 1
                else:
                    rest.append(item)
            pending = rest
            if len(part) == 1 and part[0][0] not in batched:
                self.client.budget.release(held)
                key, (method, params) = part[0]
                results[key] = self.client.call(method, params).get("result")
                continue
            res = self.client.batch(dict(part), held)
            results.update(res.results)
            errors.update(res.errors)
        return results, errors
