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
"""

from __future__ import annotations

import random

from sandbox.data_store import ID_BASE, Dataset

SOURCES = ["website", "referral", "cold call", "exhibition", "advert"]
UTM_SOURCES = ["google", "Yandex", " yandex ", "facebook", "Newsletter", "vk"]
CHANNELS = (("email", 0.35), ("chat", 0.65), ("sms", 0.8), ("meeting", 1.0))
SUBJECTS = {
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
