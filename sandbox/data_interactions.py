"""What the generated account adds beyond the CRM cards, tasks and calls: acquisition
channels (sources, UTM values), interactions and surveys.

Run after `data_build.Builder` with a random stream of its own (seeded from the builder's
last draw), so every row the builder made stays exactly as it was for a given seed.

- Deals and leads get `source` (the CRM's own source name, neutral words) and `utm_source`
  (free text as marketers type it: mixed case, stray spaces); some have neither.
- `activities`: e-mails, chats, meetings and SMS with clients (calls stay in `calls`), a few
  deleted (they vanish from the CRM's lists). Most incoming messages get a reply on the same
  channel and card minutes to hours later (a log-normal delay, median 30 minutes), as a working
  sales team answers; some never do.
- Callbacks: most missed incoming calls are called back, minutes to hours later.
- Conversions: a converted lead becomes a deal (the deal's `lead_id`, Bitrix24 `LEAD_ID`): the
  first deal opened at or after the lead's close that no other lead claimed. A CRM numbers its timeline activities in one
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

import bisect
import math
import random

from sandbox.call_outcomes import status_of
from sandbox.data_store import DAY, ID_BASE, Dataset, caller_of

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
        self.callbacks()
        self.activities()
        self.surveys()
        self.conversions()
        self.bindings()
        self.planned()
        self.informational()

    def _delay(self) -> int:
        """Seconds until a manager answers: log-normal, median 30 minutes, 90 % within ~2.5 h."""
        return int(60 * min(3 * 24 * 60, self.r.lognormvariate(math.log(30), 1.3)))

    def callbacks(self) -> None:
        """A manager calls back most missed incoming calls (`callback_of`: the missed call)."""
        r, calls, added = self.r, self.ds.calls, []
        for c in calls:
            if c["direction"] != "in" or c["status"] == "answered" or r.random() >= 0.8:
                continue
            at = c["started_at"] + self._delay()
            if at > self.end:
                continue
            outcome = "talked" if r.random() < 0.75 else "no_answer"
            status = status_of("out", outcome)
            added.append(
                dict(
                    c,
                    direction="out",
                    outcome=outcome,
                    status=status,
                    duration_s=r.randint(20, 600) if status == "answered" else 0,
                    id=0,
                    started_at=at,
                    callback_of=c,  # the missed call's row until the ids are final
                )
            )
        # A CRM hands out ids in time order: the callbacks take their places among the calls.
        calls += added
        calls.sort(key=lambda row: (row["started_at"], row["id"] or float("inf")))
        for i, row in enumerate(calls, 1):
            row["id"] = ID_BASE["calls"] + i
        for row in added:
            row["callback_of"] = row["callback_of"]["id"]

    def conversions(self) -> None:
        deals = sorted(self.ds.deals, key=lambda d: d["created_at"])
        starts = [d["created_at"] for d in deals]
        for d in deals:
            d.setdefault("lead_id", None)
        for lead in self.ds.leads:
            if lead["status"] != "converted" or lead.get("is_deleted"):
                continue
            closed = lead["closed_at"] or lead["created_at"]
            i = bisect.bisect_left(starts, closed)
            while i < len(deals) and deals[i]["lead_id"] is not None:
                i += 1
            if i < len(deals) and deals[i]["created_at"] - closed < 30 * DAY:
                deals[i]["lead_id"] = lead["id"]

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
            rows.append(self._activity(channel, direction, at, et, e))
            if direction == "in" and r.random() < 0.85:  # most messages are answered
                reply = at + self._delay()
                if reply <= self.end:
                    rows.append(dict(self._activity(channel, "out", reply, et, e), reply=True))
        self.ds.activities = rows
        timeline = [(c["started_at"], 0, c) for c in self.ds.calls] + [(a["at"], 1, a) for a in rows]
        timeline.sort(key=lambda t: t[:2])
        for i, (_, is_activity, row) in enumerate(timeline, 1):
            row["id" if is_activity else "activity_id"] = ID_BASE["activities"] + i
        rows.sort(key=lambda row: row["id"])

    def _activity(self, channel: str, direction: str | None, at: int, et: str, e: dict) -> dict:
        r = self.r
        return {
            "id": 0,
            "channel": channel,
            "direction": direction,
            "at": at,
            "updated_at": min(self.end, at + r.randrange(0, 3600)),
            "responsible_user_id": e["responsible_user_id"],
            "entity_type": et,
            "entity_id": e["id"],
            "subject": SUBJECTS[channel],
            "is_deleted": int(r.random() < 0.02),
        }

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
