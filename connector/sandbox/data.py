"""Deterministic fake CRM account data shared by the amoCRM and Bitrix24 sandboxes.

`generate(seed, size, now)` builds a `Dataset`: plain dicts in id-sorted lists, neutral
vocabulary (servers render it in their own API's words), every timestamp in Unix seconds.
Servers read only through the `Dataset` object and tests mutate it through its methods,
so a test can change the "CRM" between two syncs.
"""

from __future__ import annotations

import random
import threading
import time

__all__ = ["Dataset", "generate", "ENTITIES"]

ENTITIES = ("users", "pipelines", "companies", "contacts", "deals", "leads", "tasks",
            "calls", "stage_changes", "events")

# Distinct id ranges per entity, so a test that mixes up a contact id with a deal id fails
# instead of silently joining the wrong rows.
ID_BASE = {"users": 100, "pipelines": 10, "companies": 20_000, "contacts": 300_000,
           "deals": 1_000_000, "leads": 5_000_000, "tasks": 6_000_000, "calls": 7_000_000,
           "stage_changes": 0, "events": 0}
STAGE_ID_BASE = 1000
FIELD_ID_BASE = 900_000

YEAR = 365 * 86400
DAY = 86400

OPEN_STAGES = [("NEW", "New"), ("PREPARATION", "Preparation"),
               ("PREPAYMENT_INVOICE", "Invoice sent"), ("EXECUTING", "In progress"),
               ("FINAL_INVOICE", "Final invoice")]
PIPELINE_NAMES = ["Sales", "Wholesale", "Partners", "Services"]
FIRST = ["Anna", "Boris", "Vera", "Gleb", "Daria", "Egor", "Zoya", "Ivan", "Kira", "Lev",
         "Maria", "Nikita", "Olga", "Pavel", "Raisa", "Sergey", "Tatiana", "Fedor", "Yulia",
         "Artem", "Elena", "Denis", "Irina", "Maxim"]
LAST = ["Ivanov", "Petrov", "Sidorov", "Smirnov", "Kuznetsov", "Popov", "Volkov", "Sokolov",
        "Lebedev", "Kozlov", "Novikov", "Morozov", "Orlov", "Zaitsev", "Pavlov", "Semenov",
        "Golubev", "Vinogradov", "Bogdanov", "Vorobiev"]
COMPANY_WORDS = ["Alfa", "Vector", "Nord", "Ural", "Volga", "Sever", "Triada", "Kvant",
                 "Orion", "Granit", "Sigma", "Delta", "Polus", "Luch", "Most"]
COMPANY_KINDS = ["LLC", "JSC", "Group", "Trade", "Service", "Logistic"]
TASK_TEXTS = ["Call back", "Send the offer", "Prepare the contract", "Follow up on invoice",
              "Meeting at the office", "Check payment", "Send documents"]
SOURCES = ["website", "referral", "cold call", "exhibition", "advert"]
SEGMENTS = ["A", "B", "C"]

LEAD_STATUS = {"NEW": "open", "IN_PROCESS": "open", "CONVERTED": "converted", "JUNK": "junk"}


def _plural(entity: str) -> str:
    """Accept "deal" or "deals" (custom-field APIs speak singular, lists plural)."""
    if entity in ENTITIES:
        return entity
    if entity == "company":
        return "companies"
    if entity + "s" in ENTITIES:
        return entity + "s"
    raise KeyError(f"unknown entity {entity!r}")


def _singular(entity: str) -> str:
    p = _plural(entity)
    return "company" if p == "companies" else p[:-1]


class Dataset:
    """One fake CRM account. Rows are plain dicts; lists are sorted by id.

    Mutate only through the methods below (they take `lock`, bump `updated_at` via
    `tick()` and the `version` counters that servers use to invalidate caches).
    """

    def __init__(self, now: int):
        self.now = now
        self.lock = threading.RLock()
        for name in ENTITIES:
            setattr(self, name, [])
        self.fields: dict[str, list[dict]] = {"contact": [], "company": []}
        self.version = 0                     # bumped on every mutation
        self.versions = {name: 0 for name in ENTITIES}
        self._index: dict[str, dict[int, dict]] = {}
        self._stages: dict[int, tuple[dict, dict]] = {}
        self._last_tick = 0

    # ---- reading -------------------------------------------------------------------------
    def rows(self, entity: str) -> list[dict]:
        """The id-sorted list for an entity ("deals" or "deal")."""
        return getattr(self, _plural(entity))

    def by_id(self, entity: str) -> dict[int, dict]:
        """{id: row} for an entity, kept current by add()."""
        name = _plural(entity)
        idx = self._index.get(name)
        if idx is None:
            idx = self._index[name] = {r["id"]: r for r in getattr(self, name)}
        return idx

    def stage(self, stage_id: int) -> tuple[dict, dict]:
        """(pipeline, stage) for a dataset stage id."""
        if not self._stages:
            for p in self.pipelines:
                for s in p["stages"]:
                    self._stages[s["id"]] = (p, s)
        return self._stages[stage_id]

    def field(self, entity_type: str, field_id: int) -> dict | None:
        for f in self.fields[_singular(entity_type)]:
            if f["id"] == field_id:
                return f
        return None

    # ---- mutation ------------------------------------------------------------------------
    def tick(self) -> int:
        """A write timestamp strictly newer than every earlier one (and than generated data)."""
        with self.lock:
            t = max(self.now, self._last_tick + 1, int(time.time()))
            self._last_tick = t
            return t

    def _bump(self, name: str) -> None:
        self.version += 1
        self.versions[name] += 1

    def update(self, entity: str, id: int, **changes) -> dict:
        """Change fields of one row; returns the (live) row. Deal stage moves are recorded."""
        name = _plural(entity)
        with self.lock:
            row = self.by_id(name)[id]
            t = self.tick()
            if name == "deals" and "stage_id" in changes and changes["stage_id"] != row["stage_id"]:
                self._move_deal(row, changes.pop("stage_id"), t)
                changes.pop("pipeline_id", None)
                changes.pop("status", None)
            if name == "leads" and "status_code" in changes:
                changes["status"] = LEAD_STATUS[changes["status_code"]]
                changes.setdefault("closed_at", None if changes["status"] == "open" else t)
            if name == "tasks" and "is_completed" in changes:
                done = bool(changes["is_completed"])
                changes["is_completed"] = done
                if done != bool(row["is_completed"]):
                    changes.setdefault("completed_at", t if done else None)
            row.update(changes)
            if "updated_at" in row:
                row["updated_at"] = t
            self._bump(name)
            return row

    def _move_deal(self, row: dict, stage_id: int, t: int) -> None:
        pipeline, stage = self.stage(stage_id)
        self._append("stage_changes", {
            "deal_id": row["id"], "pipeline_id": pipeline["id"], "stage_id": stage_id,
            "previous_stage_id": row.get("stage_id"), "changed_at": t})
        row["pipeline_id"] = pipeline["id"]
        row["stage_id"] = stage_id
        row["status"] = stage["semantics"]
        row["closed_at"] = None if stage["semantics"] == "open" else t

    def _append(self, name: str, row: dict) -> dict:
        rows = getattr(self, name)
        row["id"] = (rows[-1]["id"] + 1) if rows else ID_BASE[name] + 1
        rows.append(row)
        self.by_id(name)[row["id"]] = row
        self._bump(name)
        return row

    def add(self, entity: str, **fields) -> dict:
        """Create a row (id = max id + 1) with sensible defaults; returns it."""
        name = _plural(entity)
        with self.lock:
            t = self.tick()
            row = dict(_defaults(self, name, t))
            stage_id = fields.pop("stage_id", None) if name == "deals" else None
            row.update(fields)
            row.pop("id", None)
            self._append(name, row)
            if name == "deals":
                stage_id = stage_id or self.pipelines[0]["stages"][0]["id"]
                row["stage_id"] = None
                self._move_deal(row, stage_id, t)
            if name == "leads":
                row["status"] = LEAD_STATUS[row["status_code"]]
            return row

    def delete(self, entity: str, id: int) -> dict:
        """Soft-delete (is_deleted = 1) and record a "deleted" event."""
        return self._set_deleted(entity, id, 1)

    def restore(self, entity: str, id: int) -> dict:
        """Undo delete() and record a "restored" event."""
        return self._set_deleted(entity, id, 0)

    def _set_deleted(self, entity: str, id: int, flag: int) -> dict:
        name = _plural(entity)
        with self.lock:
            row = self.by_id(name)[id]
            t = self.tick()
            row["is_deleted"] = flag
            row["updated_at"] = t
            self._bump(name)
            self._append("events", {"type": "deleted" if flag else "restored",
                                    "entity": _singular(name), "entity_id": id, "at": t})
            return row

    def add_field(self, entity_type: str, name: str, type: str, code: str | None = None,
                  **extra) -> dict:
        """Define a custom field on contacts or companies; returns {id, name, code, type}."""
        with self.lock:
            all_ids = [f["id"] for fs in self.fields.values() for f in fs]
            f = {"id": max(all_ids, default=FIELD_ID_BASE) + 1, "name": name, "code": code,
                 "type": type, **extra}
            self.fields[_singular(entity_type)].append(f)
            self.version += 1
            return f

    def set_custom(self, entity_type: str, id: int, field_id: int, value) -> dict:
        """Set (or with None, clear) one custom field value; bumps updated_at."""
        name = _plural(entity_type)
        with self.lock:
            row = self.by_id(name)[id]
            if value is None:
                row["custom"].pop(field_id, None)
            else:
                row["custom"][field_id] = value
            row["updated_at"] = self.tick()
            self._bump(name)
            return row


def _defaults(ds: Dataset, name: str, t: int) -> dict:
    uid = ds.users[0]["id"] if ds.users else None
    base = {"created_at": t, "updated_at": t, "is_deleted": 0}
    if name == "users":
        return {"name": "New user", "email": "new.user@example.com", "is_active": 1}
    if name == "companies":
        return {**base, "name": "New company", "responsible_user_id": uid, "custom": {}}
    if name == "contacts":
        return {**base, "name": "New contact", "first_name": "New", "last_name": "contact",
                "phone": None, "email": None, "company_id": None, "responsible_user_id": uid,
                "custom": {}}
    if name == "deals":
        return {**base, "name": "New deal", "pipeline_id": None, "stage_id": None,
                "status": "open", "amount": 0.0, "currency": "RUB", "responsible_user_id": uid,
                "contact_ids": [], "company_id": None, "closed_at": None}
    if name == "leads":
        return {**base, "title": "New lead", "status_code": "NEW", "status": "open",
                "amount": 0.0, "currency": "RUB", "responsible_user_id": uid,
                "contact_id": None, "company_id": None, "closed_at": None}
    if name == "tasks":
        return {**base, "text": "New task", "responsible_user_id": uid, "entity_type": None,
                "entity_id": None, "is_completed": False, "due_at": t + DAY,
                "completed_at": None}
    if name == "calls":
        return {"direction": "out", "status": "answered", "duration_s": 60, "started_at": t,
                "responsible_user_id": uid, "entity_type": None, "entity_id": None,
                "phone": None}
    if name == "events":
        return {"type": "deleted", "entity": "deal", "entity_id": None, "at": t}
    if name == "stage_changes":
        return {"deal_id": None, "pipeline_id": None, "stage_id": None,
                "previous_stage_id": None, "changed_at": t}
    raise KeyError(f"cannot add to {name!r}")


def generate(seed: int = 1, size: int = 1000, now: int | None = None) -> Dataset:
    """Build a deterministic account with `size` deals; see the module docstring."""
    if now is None:
        now = int(time.time()) // 3600 * 3600
    ds = Dataset(now)
    _Builder(ds, random.Random(seed), size).build()
    return ds
