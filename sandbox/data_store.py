"""The `Dataset`: one fake CRM account, read and changed only through its methods.

Rows are plain dicts in id-sorted lists, in neutral vocabulary (each server renders them in
its own API's words), every timestamp in Unix seconds. Tests mutate a dataset between two
syncs through `update`, `add`, `delete`, `restore`, `merge`, `add_field`, `write_customs`,
`set_custom` and `backdate` (a write dated back, no tick); each takes the lock, stamps a fresh
`tick()` and bumps the version counters
the servers use to invalidate their caches. Each change of a row is also told to the
`listeners` (`listen`), as `(action, entity, id)` with action `add`, `update` or `delete` and
the entity plural ("deals"): how a server learns what to send its webhooks or event handlers.
"""

from __future__ import annotations

import threading
import time

__all__ = ["Dataset", "ENTITIES", "ID_BASE", "LEAD_STATUS"]

ENTITIES = (
    "users",
    "pipelines",
    "companies",
    "contacts",
    "deals",
    "leads",
    "tasks",
    "calls",
    "stage_changes",
    "events",
    "activities",
    "surveys",
    "customers",
)

# Distinct id ranges per entity, so a test that mixes up a contact id with a deal id fails
# instead of silently joining the wrong rows.
ID_BASE = {
    "users": 100,
    "pipelines": 10,
    "companies": 20_000,
    "contacts": 300_000,
    "deals": 1_000_000,
    "leads": 5_000_000,
    "tasks": 6_000_000,
    "calls": 7_000_000,
    "stage_changes": 0,
    "events": 0,
    "activities": 30_000_000,
    "surveys": 40_000_000,
    "customers": 9_000_000,  # amoCRM's customers (Customers mode); none generated
}
STAGE_ID_BASE = 1000
FIELD_ID_BASE = 900_000

DAY = 86400

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
        self.version = 0  # bumped on every mutation
        self.versions = {name: 0 for name in ENTITIES}
        self._index: dict[str, dict[int, dict]] = {}
        self._stages: dict[int, tuple[dict, dict]] = {}
        self._last_tick = 0
        self.listeners: list = []

    def listen(self, listener) -> None:
        """Call `listener(action, entity, id)` after every change of a row (see the module doc)."""
        self.listeners.append(listener)

    def _told(self, action: str, name: str, id: int) -> None:
        for listener in list(self.listeners):
            listener(action, name, id)

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
        self._told("update", name, id)
        return row

    def _move_deal(self, row: dict, stage_id: int, t: int) -> None:
        pipeline, stage = self.stage(stage_id)
        self._append(
            "stage_changes",
            {
                "deal_id": row["id"],
                "pipeline_id": pipeline["id"],
                "stage_id": stage_id,
                "previous_stage_id": row.get("stage_id"),
                "changed_at": t,
            },
        )
        row["pipeline_id"] = pipeline["id"]
        row["stage_id"] = stage_id
        row["status"] = stage["semantics"]
        row["closed_at"] = None if stage["semantics"] == "open" else t

    def _append(self, name: str, row: dict) -> dict:
        rows = getattr(self, name)
        row["id"] = (rows[-1]["id"] + 1) if rows else ID_BASE[name] + 1
        if name in ("calls", "activities"):  # one activity id sequence (data_interactions)
            row["activity_id" if name == "calls" else "id"] = self._next_activity_id()
        if name == "calls" and "caller" not in row:
            row["caller"] = caller_of(self, row)
        rows.append(row)
        self.by_id(name)[row["id"]] = row
        self._bump(name)
        return row

    def _next_activity_id(self) -> int:
        last = max(
            [ID_BASE["activities"]]
            + [a["id"] for a in self.activities[-1:]]
            + [c.get("activity_id") or 0 for c in self.calls[-1:]]
        )
        return last + 1

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
        self._told("add", name, row["id"])
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
            if name != "activities":  # an interaction just leaves the lists; no CRM event says so
                self._append(
                    "events",
                    {
                        "type": "deleted" if flag else "restored",
                        "entity": _singular(name),
                        "entity_id": id,
                        "at": t,
                    },
                )
        self._told("delete" if flag else "add", name, id)
        return row

    def merge(self, entity: str, away_id: int, into_id: int, named: str = "away") -> dict:
        """Merge card `away_id` into `into_id` (a duplicate found by a user): the merged-away
        card leaves every list (is_deleted = 1), a "merged" event names one of the two cards
        (`named`: "away" or "survivor"; amoCRM's docs do not say which), and the deals (or
        contacts) linked to it link to the survivor instead, as edits. Returns the survivor."""
        if named not in ("away", "survivor"):
            raise ValueError(f"named must be 'away' or 'survivor', not {named!r}")
        name = _plural(entity)
        with self.lock:
            away, into = self.by_id(name)[away_id], self.by_id(name)[into_id]
            t = self.tick()
            away["is_deleted"], away["updated_at"], into["updated_at"] = 1, t, t
            self._bump(name)
            self._append(
                "events",
                {
                    "type": "merged",
                    "entity": _singular(name),
                    "entity_id": away_id if named == "away" else into_id,
                    "at": t,
                },
            )
            self._relink(name, away_id, into_id, t)
        self._told("delete", name, away_id)
        self._told("update", name, into_id)
        return into

    def _relink(self, name: str, away_id: int, into_id: int, t: int) -> None:
        """Point the links of a merged-away contact or company at the survivor."""
        if name == "contacts":
            for d in self.deals:
                if away_id in d["contact_ids"]:
                    ids = [into_id if c == away_id else c for c in d["contact_ids"]]
                    d["contact_ids"], d["updated_at"] = list(dict.fromkeys(ids)), t
            self._bump("deals")
        elif name == "companies":
            for table in ("deals", "contacts"):
                for row in getattr(self, table):
                    if row["company_id"] == away_id:
                        row["company_id"], row["updated_at"] = into_id, t
                self._bump(table)

    def add_field(self, entity_type: str, name: str, type: str, code: str | None = None, **extra) -> dict:
        """Define a custom field on contacts or companies; returns {id, name, code, type}."""
        with self.lock:
            all_ids = [f["id"] for fs in self.fields.values() for f in fs]
            f = {
                "id": max(all_ids, default=FIELD_ID_BASE) + 1,
                "name": name,
                "code": code,
                "type": type,
                **extra,
            }
            self.fields[_singular(entity_type)].append(f)
            self.version += 1
            return f

    def write_customs(self, entity_type: str, changes: dict[int, dict[int, object]]) -> int:
        """Apply {row id: {field_id: value or None}} as one batch write; returns its timestamp.

        One tick for the whole batch, like a CRM's batch PATCH: every row gets the same
        new updated_at instead of one a second apart.
        """
        name = _plural(entity_type)
        with self.lock:
            t = self.tick()
            idx = self.by_id(name)
            for row_id, values in changes.items():
                row = idx[row_id]
                for field_id, value in values.items():
                    if value is None:
                        row["custom"].pop(field_id, None)
                    else:
                        row["custom"][field_id] = value
                row["updated_at"] = t
            self._bump(name)
        for row_id in changes:
            self._told("update", name, row_id)
        return t

    def backdate(self, entity: str, id: int, **moments: int) -> dict:
        """Set a row's `created_at` / `updated_at` (or a call's `started_at`) to the given Unix
        seconds, as an integration that dates its writes back may (amoCRM's API takes both on
        writes): no fresh tick, so the row may land before a reader's bookmark."""
        name = _plural(entity)
        with self.lock:
            row = self.by_id(name)[id]
            unknown = sorted(set(moments) - {"created_at", "updated_at", "started_at"})
            if unknown or any(k not in row for k in moments):
                raise KeyError(f"{name} rows cannot be dated by {sorted(moments)}")
            row.update(moments)
            self._bump(name)
        self._told("update", name, id)
        return row

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
        self._told("update", name, id)
        return row


def caller_of(ds: Dataset, call: dict) -> tuple[str, int] | None:
    """The client record a call's number belongs to, fixed when the call is logged: the call's
    own contact, company or lead; for a deal's call the deal's first contact, else its company."""
    et, eid = call.get("entity_type"), call.get("entity_id")
    if not et or not eid:
        return None
    if et != "deal":
        return (et, eid)
    deal = ds.by_id("deals").get(eid) or {}
    if deal.get("contact_ids"):
        return ("contact", deal["contact_ids"][0])
    return ("company", deal["company_id"]) if deal.get("company_id") else None


def _defaults(ds: Dataset, name: str, t: int) -> dict:
    uid = ds.users[0]["id"] if ds.users else None
    base = {"created_at": t, "updated_at": t, "is_deleted": 0}
    if name == "users":
        return {"name": "New user", "email": "new.user@example.com", "is_active": 1}
    if name == "companies":
        return {**base, "name": "New company", "responsible_user_id": uid, "custom": {}}
    if name == "contacts":
        return {
            **base,
            "name": "New contact",
            "first_name": "New",
            "last_name": "contact",
            "phone": None,
            "email": None,
            "company_id": None,
            "responsible_user_id": uid,
            "custom": {},
        }
    if name == "deals":
        return {
            **base,
            "name": "New deal",
            "pipeline_id": None,
            "stage_id": None,
            "status": "open",
            "amount": 0.0,
            "currency": "RUB",
            "responsible_user_id": uid,
            "contact_ids": [],
            "company_id": None,
            "closed_at": None,
            "source": None,
            "utm_source": None,
        }
    if name == "leads":
        return {
            **base,
            "title": "New lead",
            "status_code": "NEW",
            "status": "open",
            "amount": 0.0,
            "currency": "RUB",
            "responsible_user_id": uid,
            "contact_id": None,
            "company_id": None,
            "closed_at": None,
            "source": None,
            "utm_source": None,
        }
    if name == "tasks":
        return {
            **base,
            "text": "New task",
            "responsible_user_id": uid,
            "entity_type": None,
            "entity_id": None,
            "is_completed": False,
            "due_at": t + DAY,
            "completed_at": None,
        }
    if name == "calls":
        return {
            "direction": "out",
            "status": "answered",
            "duration_s": 60,
            "started_at": t,
            "responsible_user_id": uid,
            "entity_type": None,
            "entity_id": None,
            "phone": None,
            "vote": None,
        }
    if name == "activities":
        return {
            "channel": "email",
            "direction": "in",
            "at": t,
            "updated_at": t,
            "responsible_user_id": uid,
            "entity_type": None,
            "entity_id": None,
            "subject": "New message",
            "is_deleted": 0,
        }
    if name == "customers":
        return {
            **base,
            "name": "New customer",
            "responsible_user_id": uid,
            "contact_ids": [],
            "company_id": None,
        }
    if name == "surveys":
        return {"kind": "nps", "score": 10, "at": t, "entity_type": None, "entity_id": None}
    if name == "events":
        return {"type": "deleted", "entity": "deal", "entity_id": None, "at": t}
    if name == "stage_changes":
        return {
            "deal_id": None,
            "pipeline_id": None,
            "stage_id": None,
            "previous_stage_id": None,
            "changed_at": t,
        }
    raise KeyError(f"cannot add to {name!r}")
