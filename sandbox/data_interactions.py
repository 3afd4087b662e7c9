"""What the generated account adds beyond the CRM cards, tasks and calls: acquisition
channels (sources, UTM values), interactions and surveys.

Run after `data_build.Builder` with a random stream of its own (seeded from the builder's
last draw), so every row the builder made stays exactly as it was for a given seed.

- Deals and leads get `source` (the CRM's own source name, neutral words) and `utm_source`
  (free text as marketers type it: mixed case, stray spaces); some have neither.
- `activities`: e-mails, chats, meetings and SMS with clients (calls stay in `calls`), a few
  deleted (they vanish from the CRM's lists). A CRM numbers its timeline activities in one
  sequence, calls included (Bitrix24: a call's `CRM_ACTIVITY_ID`): activities and calls'
  `activity_id` share one id sequence, in time order.
- Surveys: NPS answers (0-10) on contacts and deals; a CSAT vote (1-5) on some answered calls
  (`calls[i]["vote"]`).
- Drawn last, so everything above stays as it was for a given seed:
  - `also`: further records an interaction concerns beside its own (an e-mail on a contact
    that is about one of the contact's deals): a list of (entity_type, entity_id). A CRM
    that binds an activity to several records shows them (Bitrix24 bindings); one whose
    notes belong to one record shows only the own one (amoCRM).
  - `planned`: meetings and calls set for the next two weeks, not done yet (their `at` is
    the planned start, ahead of `now`; `created_at` when they were set); a CRM without
    planned interactions (amoCRM has no meeting or call activities) shows none of them.
  - `caller` (every call; no draw): the client record its number belongs to
    (`data_store.caller_of`).
  - `informational`: a few outgoing calls are automated informational calls (a robot reads
    a message; no manager talks): Bitrix24 CALL_TYPE 5. amoCRM has no such call type: its
    telephony logs them as ordinary outgoing calls.
"""

from __future__ import annotations

import random

from sandbox.data_store import ID_BASE, Dataset, caller_of

SOURCES = ["website", "referral", "cold call", "exhibition", "advert"]
UTM_SOURCES = ["google", "Yandex", " yandex ", "facebook", "Newsletter", "vk"]
CHANNELS = (("email", 0.35), ("chat", 0.65), ("sms", 0.8), ("meeting", 1.0))
SUBJECTS = {
    "call": "Call the client back",
    "email": "Re: your order",
    "chat": "Chat with the client",
    "sms": "Reminder",
    "meeting": "Meeting at the office",
}


class Interactions:
    """Adds channels, activities and surveys to a built Dataset."""

    def __init__(self, ds: Dataset, rng: random.Random, size: int, end: int):
        self.ds, self.r, self.size, self.end = ds, rng, size, end

    def build(self) -> None:
        self.channels()
        self.activities()
        self.surveys()
        self.bindings()
        self.planned()
        self.informational()

    def channels(self) -> None:
        r = self.r
        for row in self.ds.deals + self.ds.leads:
            u = r.random()
            row["source"] = r.choice(SOURCES) if u < 0.7 else None
            row["utm_source"] = r.choice(UTM_SOURCES) if r.random() < 0.3 else None

    def _entity(self) -> tuple[str, dict]:
        u, ds = self.r.random(), self.ds
        if u < 0.45:
            return "deal", self.r.choice(ds.deals)
        if u < 0.8:
            return "contact", self.r.choice(ds.contacts)
        if u < 0.9 or not ds.leads:
            return "company", self.r.choice(ds.companies)
        return "lead", self.r.choice(ds.leads)

    def activities(self) -> None:
        r, rows = self.r, []
        for _ in range(round(0.6 * self.size)):
            et, e = self._entity()
            u = r.random()
            channel = next(c for c, edge in CHANNELS if u < edge)
            direction = None if channel == "meeting" else ("in" if r.random() < 0.5 else "out")
            lo = e["created_at"]
            at = lo + int(r.random() * max(0, self.end - lo))
            updated = min(self.end, at + r.randrange(0, 3600))
            rows.append(
                {
                    "id": 0,
                    "channel": channel,
                    "direction": direction,
                    "at": at,
                    "updated_at": updated,
                    "responsible_user_id": e["responsible_user_id"],
                    "entity_type": et,
                    "entity_id": e["id"],
                    "subject": SUBJECTS[channel],
                    "is_deleted": int(r.random() < 0.02),
                }
            )
        self.ds.activities = rows
        timeline = [(c["started_at"], 0, c) for c in self.ds.calls] + [(a["at"], 1, a) for a in rows]
        timeline.sort(key=lambda t: t[:2])
        for i, (_, is_activity, row) in enumerate(timeline, 1):
            row["id" if is_activity else "activity_id"] = ID_BASE["activities"] + i
        rows.sort(key=lambda row: row["id"])

    def surveys(self) -> None:
        r, rows = self.r, []
        for c in self.ds.calls:
            answered = c["status"] == "answered"
            c["vote"] = r.randint(1, 5) if answered and r.random() < 0.2 else None
        for _ in range(max(3, round(0.05 * self.size))):
            et, e = (
                ("contact", r.choice(self.ds.contacts))
                if r.random() < 0.7
                else ("deal", r.choice(self.ds.deals))
            )
            lo = e["created_at"]
            rows.append(
                {
                    "id": 0,
                    "kind": "nps",
                    "score": r.choice(range(11)),
                    "at": lo + int(r.random() * max(0, self.end - lo)),
                    "entity_type": et,
                    "entity_id": e["id"],
                }
            )
        rows.sort(key=lambda row: row["at"])
        for i, row in enumerate(rows, 1):
            row["id"] = ID_BASE["surveys"] + i
        self.ds.surveys = rows

    def bindings(self) -> None:
        r, ds = self.r, self.ds
        deals_of: dict[tuple[str, int], list[int]] = {}
        for d in ds.deals:
            for c in d["contact_ids"]:
                deals_of.setdefault(("contact", c), []).append(d["id"])
            if d["company_id"]:
                deals_of.setdefault(("company", d["company_id"]), []).append(d["id"])
        for a in ds.activities:
            if r.random() < 0.4:
                if a["entity_type"] == "lead":
                    lead = ds.by_id("leads")[a["entity_id"]]
                    also = [("contact", lead["contact_id"])] if lead["contact_id"] else []
                else:
                    deals = deals_of.get((a["entity_type"], a["entity_id"]))
                    also = [("deal", r.choice(deals))] if deals else []
                if also:
                    a["also"] = also

    def planned(self) -> None:
        r, ds = self.r, self.ds
        last = max(
            [a["id"] for a in ds.activities] + [c["activity_id"] for c in ds.calls] + [ID_BASE["activities"]]
        )
        for i in range(1, max(3, round(0.02 * self.size)) + 1):
            et, e = self._entity()
            channel = "meeting" if r.random() < 0.6 else "call"
            set_at = self.end - r.randrange(0, 3 * 86400)
            ds.activities.append(
                {
                    "id": last + i,
                    "channel": channel,
                    "direction": None if channel == "meeting" else "out",
                    "at": self.end + r.randrange(86400, 14 * 86400),
                    "created_at": set_at,
                    "updated_at": set_at,
                    "responsible_user_id": e["responsible_user_id"],
                    "entity_type": et,
                    "entity_id": e["id"],
                    "subject": SUBJECTS[channel],
                    "is_deleted": 0,
                    "planned": True,
                }
            )

    def informational(self) -> None:
        for c in self.ds.calls:
            c["caller"] = caller_of(self.ds, c)
            if c["direction"] == "out" and not c.get("vote") and self.r.random() < 0.06:
                c["informational"] = True
