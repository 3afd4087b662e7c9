"""What each mirror table should hold, built from a sandbox's own dataset.

One explicit mapping per CRM, written from docs/mirror.md and the CRMs' documented
vocabulary (the sandbox module docstrings quote it), not from our parsers: the dataset is
neutral (Unix seconds, dataset stage ids, `status` open/won/lost), and each function below
says how that CRM shows it and what the mirror makes of it. Where the mirror defines a
column differently from the raw dataset on purpose, the line cites docs/mirror.md.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

__all__ = ["ANY", "DELETED", "TABLES", "Expected", "expected_tables"]

TABLES = (
    "users",
    "pipelines",
    "stages",
    "deals",
    "deal_contacts",
    "leads",
    "contacts",
    "companies",
    "tasks",
    "calls",
    "stage_changes",
    "activities",
    "activity_bindings",
    "survey_answers",
)

ANY = object()  # a field value the check does not pin
DELETED = object()  # a row deleted in the CRM: absent from the mirror or is_deleted = 1

AMO_WON, AMO_LOST = 142, 143  # amoCRM: the same won/lost status ids in every pipeline
AMO_CURRENCY = "RUB"  # the sandbox account's currency (GET /account)
AMO_ENTITIES = ("deal", "contact", "company")  # amoCRM's note and event entities (no leads)
# Bitrix24 SOURCE_ID codes (crm.status.list SOURCE) of the dataset's neutral source names.
B24_SOURCES = {
    "website": "WEB",
    "referral": "RECOMMENDATION",
    "cold call": "CALL",
    "exhibition": "TRADE_SHOW",
    "advert": "ADVERTISING",
}
B24_LEAD_PIPELINE = -1  # docs/mirror.md: Bitrix24 lead statuses' pseudo-pipeline
# Bitrix24 lead statuses (crm.status.list ENTITY_ID=STATUS) as the sandbox portal defines them;
# SEMANTICS S/F become won/lost in `stages` (docs/mirror.md: semantics open, won, lost).
B24_LEAD_STAGES = (
    ("NEW", "New", 10, "open"),
    ("IN_PROCESS", "In progress", 20, "open"),
    ("CONVERTED", "Converted", 30, "won"),
    ("JUNK", "Junk", 40, "lost"),
)


@dataclass
class Expected:
    """One mirror table's expected rows: {key tuple: {field: value} or DELETED}. The fields
    compared are those the rows name (`fields`): each column list is written once, where its
    rows are built."""

    table: str
    key: tuple[str, ...]
    deletable: bool = False
    rows: dict = field(default_factory=dict)
    label: Callable[[tuple], str] | None = None
    unpinned: Callable[[tuple], bool] = lambda key: False  # mirror rows the portal cannot speak for

    def add(self, key, values: dict | object) -> None:
        self.rows[key if isinstance(key, tuple) else (key,)] = values

    def add_each(self, rows, values: Callable[[dict], dict]) -> Expected:
        """Each dataset row under its id: DELETED if the CRM deleted it, else `values(row)`."""
        for row in rows:
            self.add(row["id"], DELETED if row["is_deleted"] else values(row))
        return self

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(f for v in self.rows.values() if isinstance(v, dict) for f in v))

    def name(self, key: tuple) -> str:
        if self.label:
            return self.label(key)
        return " ".join(f"{k}={v}" for k, v in zip(self.key, key))


def iso(ts: int | None) -> str | None:
    """Unix seconds -> the mirror's ISO 8601 UTC text (docs/mirror.md, conventions)."""
    return None if ts is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def expected_tables(server) -> list[Expected]:
    """Every compared mirror table for this sandbox (amoCRM or Bitrix24)."""
    from sandbox.amocrm import AmoSandbox
    from sandbox.bitrix24 import Bitrix24Sandbox

    if isinstance(server, AmoSandbox):
        return AmoMapping(server.dataset).tables()
    if isinstance(server, Bitrix24Sandbox):
        return B24Mapping(server.dataset).tables()
    raise TypeError(f"no mirror mapping for {type(server).__name__}")


def norm(text) -> str | None:
    """docs/mirror.md `channel`: one normalised text, trimmed and lower-case; NULL when empty."""
    text = (text or "").strip().lower()
    return text or None


def call_status(c: dict) -> str:
    """docs/mirror.md `calls`: answered, else missed for an incoming call and failed for an
    outgoing one.

    The dataset's outcome is neutral (answered / missed / failed, drawn apart from direction);
    the mirror's status is only answered or not, by direction, in both CRMs."""
    if c["status"] == "answered":
        return "answered"
    return "missed" if c["direction"] == "in" else "failed"


class Mapping:
    """The CRM-neutral part; subclasses say how a CRM names pipelines and stages."""

    def __init__(self, ds):
        self.ds = ds

    # ---- per-CRM vocabulary --------------------------------------------------------------
    def pipeline_id(self, pipeline_id: int):
        return pipeline_id

    def stage_id(self, stage_id: int):
        return stage_id

    def currency(self, row: dict) -> str:
        return row["currency"]

    def amount(self, row: dict) -> float:
        return float(row["amount"])

    def channel(self, row: dict) -> str | None:
        """docs/mirror.md `channel`: the UTM source when present, else the CRM's own source."""
        return norm(row.get("utm_source")) or self.source_name(row.get("source"))

    def source_name(self, source: str | None) -> str | None:
        return norm(source)

    # ---- tables --------------------------------------------------------------------------
    def tables(self) -> list[Expected]:
        return [
            self.users(),
            self.pipelines(),
            self.stages(),
            self.deals(),
            self.deal_contacts(),
            self.leads(),
            self.contacts(),
            self.companies(),
            self.tasks(),
            self.calls(),
            self.stage_changes(),
            self.activities(),
            self.activity_bindings(),
            self.survey_answers(),
        ]

    def users(self) -> Expected:
        e = Expected("users", ("id",))
        for u in self.ds.users:
            e.add(u["id"], {"name": u["name"], "email": u["email"], "is_active": u["is_active"]})
        return e

    def pipelines(self) -> Expected:
        e = Expected("pipelines", ("id",))
        for p in self.ds.pipelines:
            e.add(
                self.pipeline_id(p["id"]), self.pipeline("deal", p["name"], p["sort"], int(p["is_default"]))
            )
        return e

    @staticmethod
    def pipeline(entity: str, name, sort, is_default) -> dict:
        return {"entity": entity, "name": name, "sort": sort, "is_default": is_default}

    def stages(self) -> Expected:
        e = Expected("stages", ("pipeline_id", "id"))
        for p in self.ds.pipelines:
            for s in p["stages"]:
                e.add(
                    (self.pipeline_id(p["id"]), self.stage_id(s["id"])),
                    self.stage("deal", s["name"], self.stage_sort(s), s["semantics"]),
                )
        return e

    @staticmethod
    def stage(entity: str, name, sort: int, semantics: str) -> dict:
        return {"entity": entity, "name": name, "sort": sort, "semantics": semantics}

    def stage_sort(self, s: dict) -> int:
        return s["sort"]

    def closed_at(self, d: dict) -> int | None:
        """docs/mirror.md `deals.closed_at`: the moment the deal entered its final stage; NULL
        while open. Taken from the dataset's stage history, not from its `closed_at` field."""
        if d["status"] == "open":
            return None
        entered = [
            c["changed_at"]
            for c in self.ds.stage_changes
            if c["deal_id"] == d["id"] and c["stage_id"] == d["stage_id"]
        ]
        return max(entered) if entered else d["closed_at"]

    def deals(self) -> Expected:
        return Expected("deals", ("id",), deletable=True).add_each(
            self.ds.deals,
            lambda d: {
                "name": d["name"],
                "pipeline_id": self.pipeline_id(d["pipeline_id"]),
                "stage_id": self.stage_id(d["stage_id"]),
                "status": d["status"],
                "amount": self.amount(d),
                "currency": self.currency(d),
                "responsible_user_id": d["responsible_user_id"],
                "contact_id": d["contact_ids"][0] if d["contact_ids"] else None,
                "company_id": d["company_id"],
                "created_at": iso(d["created_at"]),
                "updated_at": iso(d["updated_at"]),
                "closed_at": iso(self.closed_at(d)),
                "channel": self.channel(d),
                "lead_id": self.lead_id(d),
            },
        )

    def lead_id(self, d: dict) -> int | None:
        """docs/mirror.md `deals.lead_id`: the lead the deal was converted from; a CRM without
        a lead entity (amoCRM) has none."""
        return None

    def deal_contacts(self) -> Expected:
        """Links of live deals; a deleted deal's links are not pinned (they may linger)."""
        gone = {d["id"] for d in self.ds.deals if d["is_deleted"]}
        # A deleted deal leaves the lists, so a merge that relinks it later is never seen.
        e = Expected("deal_contacts", ("deal_id", "contact_id"), unpinned=lambda key: key[0] in gone)
        for d in self.ds.deals:
            for i, cid in enumerate(d["contact_ids"]):
                e.add((d["id"], cid), DELETED if d["is_deleted"] else {"is_main": int(i == 0)})
        return e

    def leads(self) -> Expected:
        return Expected("leads", ("id",))

    def contacts(self) -> Expected:
        return Expected("contacts", ("id",), deletable=True).add_each(
            self.ds.contacts,
            lambda c: {
                "name": c["name"],
                "company_id": c["company_id"],
                "responsible_user_id": c["responsible_user_id"],
                "created_at": iso(c["created_at"]),
                "updated_at": iso(c["updated_at"]),
            },
        )

    def companies(self) -> Expected:
        return Expected("companies", ("id",), deletable=True).add_each(
            self.ds.companies,
            lambda c: {
                "name": c["name"],
                "responsible_user_id": c["responsible_user_id"],
                "created_at": iso(c["created_at"]),
                "updated_at": iso(c["updated_at"]),
            },
        )

    def tasks(self) -> Expected:
        return Expected("tasks", ("id",), deletable=True).add_each(
            self.ds.tasks,
            lambda t: {
                "text": t["text"],
                "responsible_user_id": t["responsible_user_id"],
                "entity_type": t["entity_type"],
                "entity_id": t["entity_id"],
                "is_completed": int(bool(t["is_completed"])),
                "due_at": iso(t["due_at"]),
                "completed_at": iso(t["completed_at"]),
                "created_at": iso(t["created_at"]),
                "updated_at": iso(t["updated_at"]),
            },
        )

    def calls(self) -> Expected:
        e = Expected("calls", ("id",), deletable=True)
        for c in self.ds.calls:
            e.add(
                c["id"],
                {
                    **self.call_record(c),
                    "direction": c["direction"],
                    "status": call_status(c),
                    "duration_s": c["duration_s"],
                    "started_at": iso(c["started_at"]),
                    "responsible_user_id": c["responsible_user_id"],
                    "entity_type": c["entity_type"],
                    "entity_id": c["entity_id"],
                    "phone": c["phone"],
                },
            )
        return e

    def call_record(self, c: dict) -> dict:
        """The call's activity and whether it was automated (docs/mirror.md `calls`): a CRM
        without either (amoCRM) leaves both empty."""
        return {"activity_id": None, "is_automated": 0}

    def stage_changes(self) -> Expected:
        """Keyed by (entity, entity_id, stage entered, moment): the CRMs' own history ids are
        opaque (amoCRM event ids, Bitrix24 history ids). Every sandbox deal has its entry-stage
        row (previous_stage_id NULL, docs/mirror.md) in both CRMs."""
        e = Expected("stage_changes", ("entity", "entity_id", "stage_id", "changed_at"), label=_change_label)
        for c in self.ds.stage_changes:
            prev = c["previous_stage_id"]
            e.add(
                ("deal", c["deal_id"], self.stage_id(c["stage_id"]), iso(c["changed_at"])),
                self.change(
                    self.pipeline_id(c["pipeline_id"]), None if prev is None else self.stage_id(prev)
                ),
            )
        return e

    @staticmethod
    def change(pipeline_id, previous_stage_id) -> dict:
        return {"pipeline_id": pipeline_id, "previous_stage_id": previous_stage_id}

    def activities(self) -> Expected:
        """docs/mirror.md `activities`: every client interaction, calls included; which ones a
        CRM shows and under which id is the CRM's own (`interactions`)."""
        e = Expected("activities", ("id",), deletable=True)
        for key, row, values in self.interactions():
            e.add(key, DELETED if row.get("is_deleted") else values)
        return e

    def activity_bindings(self) -> Expected:
        """docs/mirror.md `activity_bindings`: every record an activity is bound to, its own
        included; a CRM whose notes belong to one record each adds none (`bindings`)."""
        e = Expected("activity_bindings", ("activity_id", "entity_type", "entity_id"))
        gone = set()
        for key, row, _ in self.interactions():
            for etype, eid in self.bindings(row):
                if row.get("is_deleted"):
                    gone.add((key[0], etype, eid))  # links of a deleted activity are not pinned
                else:
                    e.add((key[0], etype, eid), {})
        e.unpinned = lambda key: key in gone
        return e

    def bindings(self, row: dict) -> list[tuple[str, int]]:
        return []

    def interactions(self):
        """(mirror id, dataset row, expected fields) of each interaction the CRM shows."""
        return []

    def survey_answers(self) -> Expected:
        return Expected("survey_answers", ("id",))

    @staticmethod
    def survey(kind: str, score, at: int, row: dict, origin: str) -> dict:
        return {
            "kind": kind,
            "score": float(score),
            "at": iso(at),
            "entity_type": row["entity_type"],
            "entity_id": row["entity_id"],
            "origin": origin,
        }

    @staticmethod
    def interaction(channel: str, direction, at: int, user, row: dict) -> dict:
        return {
            "channel": channel,
            "direction": direction,
            "at": iso(at),
            "responsible_user_id": user,
            "entity_type": row["entity_type"],
            "entity_id": row["entity_id"],
            # docs/mirror.md `activities.is_completed`: 0 for a planned one, not done yet
            "is_completed": 0 if row.get("planned") else 1,
        }


def _change_label(key: tuple) -> str:
    entity, entity_id, stage, at = key
    return f"{entity} {entity_id} entering {stage!r} at {at}"


class AmoMapping(Mapping):
    """amoCRM: deals are /leads; won/lost are status 142/143 in every pipeline."""

    def stage_id(self, stage_id: int):
        sem = self.ds.stage(stage_id)[1]["semantics"]
        return AMO_WON if sem == "won" else AMO_LOST if sem == "lost" else stage_id

    def amount(self, row: dict) -> float:
        return float(round(row["amount"]))  # amoCRM `price` is a whole number

    def currency(self, row: dict) -> str:
        # docs/mirror.md: money in the deal's currency; an amoCRM deal has no currency of its
        # own, its price is in the account's currency, so every amoCRM deal carries the
        # source's one.
        return AMO_CURRENCY

    def stage_sort(self, s: dict) -> int:
        return s["sort"] + 10  # after the pipeline's "Unsorted" status (sort 10)

    def filed_under(self, row: dict) -> dict:
        """Where the mirror files a note: a customer's (Customers mode) goes to the customer's
        main contact (the first of its contacts), else its company (docs/mirror.md `calls`)."""
        if row["entity_type"] != "customer":
            return row
        customer = self.ds.by_id("customers")[row["entity_id"]]
        if customer["contact_ids"]:
            return {**row, "entity_type": "contact", "entity_id": customer["contact_ids"][0]}
        if customer["company_id"]:
            return {**row, "entity_type": "company", "entity_id": customer["company_id"]}
        return row

    def calls(self) -> Expected:
        e = super().calls()
        for c in self.ds.calls:
            owner = self.filed_under(c)
            e.rows[(c["id"],)].update(entity_type=owner["entity_type"], entity_id=owner["entity_id"])
        return e

    def interactions(self):
        """Call and SMS notes (`note:<id>`) and chat-message events (`event:<id>`, the author
        only on an outgoing message) of deals, contacts, companies and customers (filed under
        the customer's contact or company); amoCRM has no e-mail or meeting notes, and no lead
        entity."""
        from sandbox.amocrm.render import _event_id

        for c in self.ds.calls:
            yield (
                (f"note:{c['id']}",),
                c,
                self.interaction(
                    "call", c["direction"], c["started_at"], c["responsible_user_id"], self.filed_under(c)
                ),
            )
        for a in self.ds.activities:
            if a["entity_type"] not in AMO_ENTITIES:
                continue
            if a["channel"] == "sms":
                yield (
                    (f"note:{a['id']}",),
                    a,
                    self.interaction("sms", a["direction"], a["at"], a["responsible_user_id"], a),
                )
            elif a["channel"] == "chat":
                user = a["responsible_user_id"] if a["direction"] == "out" else None
                yield (
                    (f"event:{_event_id(a['at'], 'c', a['id'])}",),
                    a,
                    self.interaction("chat", a["direction"], a["at"], user, a),
                )

    def activities(self) -> Expected:
        e = super().activities()
        # No documented amoCRM list or event tells that a call or SMS note, or a chat message,
        # was deleted: the mirror keeps what it saw, and the portal cannot speak for it.
        gone = {k for k, v in e.rows.items() if v is DELETED}
        e.unpinned = lambda key: key in gone
        e.rows = {k: v for k, v in e.rows.items() if v is not DELETED}
        return e

    def survey_answers(self) -> Expected:
        """NPS answers: `nps_rate_added` events (`event:<id>`)."""
        from sandbox.amocrm.render import _event_id

        e = super().survey_answers()
        for n in self.ds.surveys:
            e.add(
                f"event:{_event_id(n['at'], 'n', n['id'])}",
                self.survey("nps", n["score"], n["at"], n, "amocrm_event"),
            )
        return e

    def stages(self) -> Expected:
        e = super().stages()
        # Every amoCRM pipeline also has its (empty) "Unsorted" status, type 1, id pid*1000+999
        # in the sandbox (see sandbox/amocrm/server.py's docstring); the mirror keeps it, open.
        for p in self.ds.pipelines:
            e.add((p["id"], p["id"] * 1000 + 999), self.stage("deal", ANY, 10, "open"))
        return e


class B24Mapping(Mapping):
    """Bitrix24: pipelines are crm.category (default 0), stages are text STATUS_IDs."""

    def __init__(self, ds):
        super().__init__(ds)
        self.default_pipeline = ds.pipelines[0]["id"]

    def pipeline_id(self, pipeline_id: int):
        return 0 if pipeline_id == self.default_pipeline else pipeline_id

    def lead_id(self, d: dict) -> int | None:
        return d.get("lead_id")  # crm.deal.* LEAD_ID

    def stage_id(self, stage_id: int):
        # STATUS_ID: the stage code, WON/LOSE for the final ones, "C{category}:" outside 0.
        pipeline, stage = self.ds.stage(stage_id)
        code = {"won": "WON", "lost": "LOSE"}.get(stage["semantics"], stage["code"])
        cat = self.pipeline_id(pipeline["id"])
        return code if cat == 0 else f"C{cat}:{code}"

    def pipelines(self) -> Expected:
        e = super().pipelines()
        e.add(B24_LEAD_PIPELINE, self.pipeline("lead", ANY, ANY, ANY))
        return e

    def stages(self) -> Expected:
        e = super().stages()
        for code, name, sort, sem in B24_LEAD_STAGES:
            e.add((B24_LEAD_PIPELINE, code), self.stage("lead", name, sort, sem))
        return e

    def source_name(self, source: str | None) -> str | None:
        return norm(B24_SOURCES.get(source))  # SOURCE_ID, e.g. WEB -> web

    def interactions(self):
        """crm.activity.list: each call (its CRM_ACTIVITY_ID), meeting (no direction), e-mail,
        chat, SMS: one id sequence."""
        for c in self.ds.calls:
            yield (
                (str(c["activity_id"]),),
                c,
                self.interaction("call", c["direction"], c["started_at"], c["responsible_user_id"], c),
            )
        for a in self.ds.activities:
            yield (
                (str(a["id"]),),
                a,
                self.interaction(a["channel"], a["direction"], a["at"], a["responsible_user_id"], a),
            )

    def call_record(self, c: dict) -> dict:
        """CRM_ACTIVITY_ID is the call's activity; CALL_TYPE 5 (informational) is automated."""
        return {"activity_id": str(c["activity_id"]), "is_automated": int(bool(c.get("informational")))}

    def bindings(self, row: dict) -> list[tuple[str, int]]:
        """crm.activity.binding.list: the owner, a call's CRM entity (voximplant names a
        contact, company or lead: for a deal's call the deal's first contact, else its company)
        and the dataset's further records (`also`)."""
        out = [(row["entity_type"], row["entity_id"])] if row.get("entity_type") else []
        if "activity_id" in row and row.get("caller"):  # a call: the record its number belongs to
            out.append(tuple(row["caller"]))
        out += [tuple(b) for b in row.get("also") or ()]
        return list(dict.fromkeys(out))

    def survey_answers(self) -> Expected:
        """CSAT: the client's 1-5 rating of a call (CALL_VOTE)."""
        e = super().survey_answers()
        for c in self.ds.calls:
            if c.get("vote"):
                e.add(f"call_vote:{c['id']}", self.survey("csat", c["vote"], c["started_at"], c, "call_vote"))
        return e

    def leads(self) -> Expected:
        return Expected("leads", ("id",), deletable=True).add_each(
            self.ds.leads,
            lambda lead: {
                "title": lead["title"],
                "status_id": lead["status_code"],
                "status": lead["status"],
                "amount": float(lead["amount"]),
                "currency": lead["currency"],
                "responsible_user_id": lead["responsible_user_id"],
                "contact_id": lead["contact_id"],
                "company_id": lead["company_id"],
                "created_at": iso(lead["created_at"]),
                "updated_at": iso(lead["updated_at"]),
                "closed_at": iso(lead["closed_at"]),
                "channel": self.channel(lead),
            },
        )

    def stage_changes(self) -> Expected:
        """Deal history plus lead history. The dataset keeps no lead history: the portal's is
        "created in NEW", then "entered its final status at closed_at" for closed leads."""
        e = super().stage_changes()
        for lead in self.ds.leads:
            e.add(("lead", lead["id"], "NEW", iso(lead["created_at"])), self.change(B24_LEAD_PIPELINE, None))
            if lead["closed_at"] is not None:
                e.add(
                    ("lead", lead["id"], lead["status_code"], iso(lead["closed_at"])),
                    self.change(B24_LEAD_PIPELINE, "NEW"),
                )
        return e
