"""The Bitrix24 sandbox's read view of the dataset (`Portal`) and a method's answer (`Reply`).

Every method in `methods.METHODS` takes (portal, params) and returns a `Reply`.
The portal holds the per-entity specs, the id vocabulary and the caches that keep repeated
list calls cheap.
"""

from __future__ import annotations

from dataclasses import dataclass

from sandbox.malformed import BITRIX24, Malformer

from .activities import rows as activity_rows
from .pages import Page, PageCache, dumps
from .query import PAGE, select_fields
from .render import SEMANTIC, Spec, Vocab, build_specs

__all__ = ["Portal", "Reply"]


@dataclass
class Reply:
    result: object
    total: int | None = None
    next: int | None = None
    page: str | None = None  # "fast" / "counted" list page, for the cost model
    table: int = 0  # rows in the table behind a counted page

    @classmethod
    def listing(cls, result, total: int | None, start: int, table: int, wrap: str | None = None):
        body = {wrap: result} if wrap else result
        if total is None:  # start=-1: counting switched off
            return cls(body, 0, None, "fast", table)
        nxt = start + PAGE if start + PAGE < total else None
        return cls(body, total, nxt, "counted", table)


class Portal:
    """The dataset as the Bitrix24 server renders it."""

    def __init__(self, ds):
        self.ds = ds
        self.vocab = Vocab(ds)
        self.user_id = None  # the webhook's user, set by the server
        self.admin = True  # whether that user is a CRM administrator (the server's `admin`)
        self._factories = build_specs(self.vocab)
        self._cache: dict[str, tuple[int, Spec]] = {}
        self._history: dict[str, tuple[int, list]] = {}
        self._selects: dict[tuple, tuple] = {}
        self.pages = PageCache(ds)
        self.malformed = Malformer(BITRIX24)  # the `malform` knob (sandbox.malformed)
        self.ignoring_filters: set[str] = set()  # the `ignore_list_filters` knob: entities
        self.events = None  # the server's `events.EventHub`

    def malformed_page(self, entity: str, rows: list[dict], page: Page) -> Page:
        """`page` with the items a malformed kind was chosen for served changed."""
        encoded = list(page.encoded)
        items = [page[i] for i in range(len(rows))]
        for i, served in enumerate(self.malformed.serve_page(entity, [r.get("id") for r in rows], items)):
            if served != items[i]:
                encoded[i] = dumps(served)
        return Page(encoded)

    def select(self, spec: Spec, select, names: str, default_all: bool) -> list[tuple]:
        """`select_fields`, remembered: the 50 sub-calls of a batch mostly repeat one select."""
        key = (id(spec), names, default_all, repr(select))
        hit = self._selects.get(key)
        if hit is None or hit[0] is not spec:
            if len(self._selects) > 256:
                self._selects.clear()
            hit = self._selects[key] = (spec, select_fields(spec, select, names, default_all))
        return hit[1]

    def spec(self, entity: str) -> Spec:
        if entity not in ("contact", "company"):
            return self._factories[entity]()
        n = len(self.ds.fields[entity])  # fields are only ever added
        hit = self._cache.get(entity)
        if hit is None or hit[0] != n:
            hit = self._cache[entity] = (n, self._factories[entity]())
        return hit[1]

    def activities(self) -> tuple[list[dict], dict]:
        """crm.activity.list rows (calls and the other interactions) and the same by id,
        cached per version."""
        ds = self.ds
        ver = (ds.versions["calls"], ds.versions["activities"])
        hit = self._history.get("activities")
        if hit is None or hit[0] != ver:
            rows = activity_rows(ds)
            hit = self._history["activities"] = (ver, (rows, {r["id"]: r for r in rows}))
        return hit[1]

    def history(self, kind: str) -> list[dict]:
        """Stage history rows for deals or leads (derived, cached per dataset version)."""
        ds = self.ds
        key = "stage_changes" if kind == "deal" else "leads"
        ver = ds.versions[key]
        hit = self._history.get(kind)
        if hit is None or hit[0] != ver:
            rows = _deal_history(ds, self.vocab) if kind == "deal" else _lead_history(ds)
            hit = self._history[kind] = (ver, rows)
        return hit[1]


def _deal_history(ds, v: Vocab) -> list[dict]:
    out = []
    for c in ds.stage_changes:
        pipeline, stage = ds.stage(c["stage_id"])
        prev = c["previous_stage_id"]
        if prev is None:
            type_id = 1
        elif ds.stage(prev)[0]["id"] != pipeline["id"]:
            type_id = 5
        else:
            type_id = 3 if stage["semantics"] != "open" else 2
        out.append(
            {
                "id": c["id"],
                "type_id": type_id,
                "owner_id": c["deal_id"],
                "at": c["changed_at"],
                "category_id": v.category(pipeline["id"]),
                "semantic": SEMANTIC[stage["semantics"]],
                "stage": v.stage_code[c["stage_id"]],
            }
        )
    return out


def _lead_history(ds) -> list[dict]:
    """Leads carry no history in the dataset: created, then closed if closed.

    IDs follow time, as the append-only history does: a lead closed later (a fresh `tick()`,
    newer than every earlier event) gets an ID above every row listed before.
    """
    out = []
    sem = {"open": "P", "converted": "S", "junk": "F"}
    for lead in ds.leads:
        out.append(
            {"type_id": 1, "owner_id": lead["id"], "at": lead["created_at"], "semantic": "P", "stage": "NEW"}
        )
        if lead["closed_at"] is not None:
            out.append(
                {
                    "type_id": 3,
                    "owner_id": lead["id"],
                    "at": lead["closed_at"],
                    "semantic": sem[lead["status"]],
                    "stage": lead["status_code"],
                }
            )
    out.sort(key=lambda r: (r["at"], r["owner_id"], r["type_id"]))
    for i, row in enumerate(out, 1):
        row["id"] = i
    return out
