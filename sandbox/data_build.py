"""The generators that fill an empty `Dataset`, one method per entity (see `data.generate`).

Every draw comes from one seeded `random.Random`, in a fixed order, so the same seed and
size always give the same account.
"""

from __future__ import annotations

import random

from sandbox.call_outcomes import status_of
from sandbox.data_interactions import Interactions
from sandbox.data_store import DAY, ID_BASE, LEAD_STATUS, STAGE_ID_BASE, Dataset

YEAR = 365 * DAY

OPEN_STAGES = [
    ("NEW", "New"),
    ("PREPARATION", "Preparation"),
    ("PREPAYMENT_INVOICE", "Invoice sent"),
    ("EXECUTING", "In progress"),
    ("FINAL_INVOICE", "Final invoice"),
]
PIPELINE_NAMES = ["Sales", "Wholesale", "Partners", "Services"]
FIRST = [
    "Anna",
    "Boris",
    "Vera",
    "Gleb",
    "Daria",
    "Egor",
    "Zoya",
    "Ivan",
    "Kira",
    "Lev",
    "Maria",
    "Nikita",
    "Olga",
    "Pavel",
    "Raisa",
    "Sergey",
    "Tatiana",
    "Fedor",
    "Yulia",
    "Artem",
    "Elena",
    "Denis",
    "Irina",
    "Maxim",
]
LAST = [
    "Ivanov",
    "Petrov",
    "Sidorov",
    "Smirnov",
    "Kuznetsov",
    "Popov",
    "Volkov",
    "Sokolov",
    "Lebedev",
    "Kozlov",
    "Novikov",
    "Morozov",
    "Orlov",
    "Zaitsev",
    "Pavlov",
    "Semenov",
    "Golubev",
    "Vinogradov",
    "Bogdanov",
    "Vorobiev",
]
COMPANY_WORDS = [
    "Alfa",
    "Vector",
    "Nord",
    "Ural",
    "Volga",
    "Sever",
    "Triada",
    "Kvant",
    "Orion",
    "Granit",
    "Sigma",
    "Delta",
    "Polus",
    "Luch",
    "Most",
]
COMPANY_KINDS = ["LLC", "JSC", "Group", "Trade", "Service", "Logistic"]
TASK_TEXTS = [
    "Call back",
    "Send the offer",
    "Prepare the contract",
    "Follow up on invoice",
    "Meeting at the office",
    "Check payment",
    "Send documents",
]
SOURCES = ["website", "referral", "cold call", "exhibition", "advert"]
SEGMENTS = ["A", "B", "C"]


class Builder:
    """Fills an empty Dataset. Draws only from the one seeded `random.Random`."""

    def __init__(self, ds: Dataset, rng: random.Random, size: int):
        self.ds, self.r, self.size = ds, rng, size
        self.start = ds.now - 3 * YEAR
        self.end = ds.now - 60  # generated data is strictly older than any write

    def ts(self, lo: int, hi: int | None = None) -> int:
        """A uniform timestamp in [lo, hi] (hi defaults to the end of history)."""
        hi = self.end if hi is None else min(hi, self.end)
        return lo + int(self.r.random() * (hi - lo)) if hi > lo else lo

    def build(self) -> None:
        for step in (
            self.users,
            self.pipelines,
            self.fields,
            self.companies,
            self.contacts,
            self.deals,
            self.leads,
            self.tasks,
            self.calls,
            self.deletions,
        ):
            step()
        for name, key in (("stage_changes", "changed_at"), ("events", "at")):
            rows = getattr(self.ds, name)
            rows.sort(key=lambda row: row[key])
            for i, row in enumerate(rows, 1):
                row["id"] = ID_BASE[name] + i
        # A random stream of its own, so the rows above stay the same for a given seed.
        Interactions(self.ds, random.Random(self.r.getrandbits(64)), self.size, self.end).build()

    @staticmethod
    def _number(rows: list[dict], name: str, key: str = "created_at") -> list[dict]:
        # Real CRMs hand out ids in creation order.
        rows.sort(key=lambda row: row[key])
        for i, row in enumerate(rows, 1):
            row["id"] = ID_BASE[name] + i
        return rows

    def _money(self) -> tuple[float, str]:
        r = self.r
        if r.random() < 0.1:
            return 0.0, "RUB"
        amount = float(round(r.lognormvariate(11, 1.0), -2))
        if r.random() < 0.03:
            return round(amount / 90, 2), "USD"
        return amount, "RUB"

    def users(self) -> None:
        n = min(200, max(5, self.size // 2000))
        r = self.r
        for i in range(n):
            first, last = r.choice(FIRST), r.choice(LAST)
            self.ds.users.append(
                {
                    "id": ID_BASE["users"] + i + 1,
                    "name": f"{first} {last}",
                    "email": f"{first.lower()}.{last.lower()}{i + 1}@example.com",
                    "is_active": 0 if i == n - 1 else 1,
                }
            )  # one former employee
        self.user_ids = [u["id"] for u in self.ds.users]

    def pipelines(self) -> None:
        r, sid = self.r, STAGE_ID_BASE
        for i in range(r.randint(2, 4)):
            stages = []
            for j, (code, name) in enumerate(OPEN_STAGES[: r.randint(3, 5)]):
                sid += 1
                stages.append(
                    {"id": sid, "code": code, "name": name, "sort": 10 * (j + 1), "semantics": "open"}
                )
            for code, name, sort, sem in (
                ("WON", "Closed won", 10000, "won"),
                ("LOSE", "Closed lost", 11000, "lost"),
            ):
                sid += 1
                stages.append({"id": sid, "code": code, "name": name, "sort": sort, "semantics": sem})
            self.ds.pipelines.append(
                {
                    "id": ID_BASE["pipelines"] + i + 1,
                    "name": PIPELINE_NAMES[i],
                    "sort": 10 * (i + 1),
                    "is_default": i == 0,
                    "stages": stages,
                }
            )

    def fields(self) -> None:
        ds = self.ds
        self.f = {}
        for et in ("contact", "company"):
            self.f[et, "source"] = ds.add_field(et, "Source", "text")["id"]
            self.f[et, "discount"] = ds.add_field(et, "Discount, %", "numeric")["id"]
        seg = ds.add_field(
            "company",
            "Segment",
            "select",
            enums=[{"id": 800_000 + i + 1, "value": v} for i, v in enumerate(SEGMENTS)],
        )
        self.f["company", "segment"] = seg["id"]

    def _custom(self, et: str) -> dict:
        r, f, c = self.r, self.f, {}
        if r.random() < 0.5:
            c[f[et, "source"]] = r.choice(SOURCES)
        if r.random() < 0.25:
            c[f[et, "discount"]] = r.choice([5, 10, 15, 2.5, 7.5])
        if et == "company" and r.random() < 0.7:
            c[f[et, "segment"]] = r.choice(SEGMENTS)
        return c

    def companies(self) -> None:
        r, rows = self.r, []
        for _ in range(max(5, round(0.08 * self.size))):
            created = self.ts(self.start, self.end - 60 * DAY)
            rows.append(
                {
                    "id": 0,
                    "name": f"{r.choice(COMPANY_WORDS)} {r.choice(COMPANY_KINDS)}",
                    "responsible_user_id": r.choice(self.user_ids),
                    "created_at": created,
                    "updated_at": self.ts(created),
                    "is_deleted": 0,
                    "custom": self._custom("company"),
                }
            )
        self.ds.companies = self._number(rows, "companies")

    def contacts(self) -> None:
        r, rows, comps = self.r, [], self.ds.companies
        for _ in range(max(20, round(0.3 * self.size))):
            comp = r.choice(comps) if r.random() < 0.6 else None
            created = self.ts(comp["created_at"] if comp else self.start, self.end - 30 * DAY)
            first, last = r.choice(FIRST), r.choice(LAST)
            rows.append(
                {
                    "id": 0,
                    "name": f"{first} {last}",
                    "first_name": first,
                    "last_name": last,
                    "phone": f"+79{r.randrange(10**9):09d}",
                    "email": f"{first.lower()}.{last.lower()}{r.randrange(1000)}@mail.example"
                    if r.random() < 0.8
                    else None,
                    "company_id": comp["id"] if comp else None,
                    "responsible_user_id": r.choice(self.user_ids),
                    "created_at": created,
                    "updated_at": self.ts(created),
                    "is_deleted": 0,
                    "custom": self._custom("contact"),
                }
            )
        self.ds.contacts = self._number(rows, "contacts")

    def deals(self) -> None:
        r, ds, rows = self.r, self.ds, []
        contacts, comps, nc = ds.contacts, ds.companies, len(ds.contacts)
        pipes = ds.pipelines
        for _ in range(self.size):
            u = r.random()
            k = 0 if u < 0.08 else 1 if u < 0.85 else 2 if u < 0.97 else 3
            # Skewed pick: low-index contacts are the repeat customers.
            picked = []
            for _ in range(k):
                c = contacts[int(nc * r.random() ** 2.5)]
                if c not in picked:
                    picked.append(c)
            main = picked[0] if picked else None
            if main:
                company_id = main["company_id"]
                lo = main["created_at"]
            else:
                comp = r.choice(comps) if r.random() < 0.5 else None
                company_id, lo = (comp["id"], comp["created_at"]) if comp else (None, self.start)
            u = r.random()
            outcome = "won" if u < 0.35 else "lost" if u < 0.65 else "open"
            if outcome == "open":  # open deals are mostly recent
                created = self.ts(max(lo, self.end - 200 * DAY))
            else:
                created = self.ts(lo, self.end - DAY)
            pipe = pipes[0] if r.random() < 0.6 else r.choice(pipes[1:])
            opens = pipe["stages"][:-2]
            won, lost = pipe["stages"][-2:]
            j = r.randrange(len(opens))
            if outcome == "won":
                path = [opens[0]] + [s for s in opens[1:] if r.random() < 0.85] + [won]
            elif outcome == "lost":
                path = [opens[0]] + [s for s in opens[1 : j + 1] if r.random() < 0.85] + [lost]
            else:
                path = [opens[0]] + [s for s in opens[1 : j + 1] if r.random() < 0.85]
            if outcome == "open":
                last = self.ts(created, created + 60 * DAY)
                closed_at = None
            else:
                last = closed_at = min(self.end, created + int(DAY * r.expovariate(1 / 20)) + 3600)
            times = sorted(self.ts(created, last) for _ in range(len(path) - 2))
            times = [created] + times + ([last] if len(path) > 1 else [])
            amount, currency = self._money()
            rows.append(
                {
                    "id": 0,
                    "name": "",
                    "pipeline_id": pipe["id"],
                    "stage_id": path[-1]["id"],
                    "status": outcome,
                    "amount": amount,
                    "currency": currency,
                    "responsible_user_id": (main or {}).get("responsible_user_id") or r.choice(self.user_ids),
                    "contact_ids": [c["id"] for c in picked],
                    "company_id": company_id,
                    "created_at": created,
                    "updated_at": self.ts(times[-1], times[-1] + 10 * DAY) if r.random() < 0.3 else times[-1],
                    "closed_at": closed_at,
                    "is_deleted": 0,
                    "_path": (path, times),
                }
            )
        self._number(rows, "deals")
        changes = ds.stage_changes
        for d in rows:
            path, times = d.pop("_path")
            d["name"] = f"Order #{d['id'] - ID_BASE['deals']}"
            prev = None
            for s, t in zip(path, times):
                changes.append(
                    {
                        "id": 0,
                        "deal_id": d["id"],
                        "pipeline_id": d["pipeline_id"],
                        "stage_id": s["id"],
                        "previous_stage_id": prev,
                        "changed_at": t,
                    }
                )
                prev = s["id"]
        ds.deals = rows

    def leads(self) -> None:
        r, rows, contacts = self.r, [], self.ds.contacts
        for _ in range(max(5, round(0.1 * self.size))):
            u = r.random()
            code = "NEW" if u < 0.25 else "IN_PROCESS" if u < 0.45 else "CONVERTED" if u < 0.75 else "JUNK"
            contact = r.choice(contacts) if r.random() < 0.5 else None
            created = self.ts(contact["created_at"] if contact else self.start)
            closed = None if LEAD_STATUS[code] == "open" else self.ts(created, created + 30 * DAY)
            amount, currency = self._money()
            rows.append(
                {
                    "id": 0,
                    "title": f"Request from {r.choice(SOURCES)}",
                    "status_code": code,
                    "status": LEAD_STATUS[code],
                    "amount": amount,
                    "currency": currency,
                    "responsible_user_id": r.choice(self.user_ids),
                    "contact_id": contact["id"] if contact else None,
                    "company_id": contact["company_id"] if contact else None,
                    "created_at": created,
                    "updated_at": closed or self.ts(created),
                    "closed_at": closed,
                    "is_deleted": 0,
                }
            )
        self.ds.leads = self._number(rows, "leads")

    def _entity(self, weights: tuple[float, float]) -> tuple[str, dict]:
        u, ds = self.r.random(), self.ds
        if u < weights[0]:
            return "deal", self.r.choice(ds.deals)
        if u < weights[1]:
            return "contact", self.r.choice(ds.contacts)
        return "company", self.r.choice(ds.companies)

    def tasks(self) -> None:
        r, rows, now = self.r, [], self.ds.now
        for _ in range(round(0.5 * self.size)):
            et, e = self._entity((0.6, 0.9))
            created = self.ts(e["created_at"])
            due = created + r.randint(1, 14) * DAY - r.randrange(0, DAY, 900)
            done = r.random() < (0.85 if due < now else 0.15)
            completed = self.ts(created, due + 3 * DAY) if done else None
            rows.append(
                {
                    "id": 0,
                    "text": r.choice(TASK_TEXTS),
                    "responsible_user_id": e["responsible_user_id"],
                    "entity_type": et,
                    "entity_id": e["id"],
                    "is_completed": done,
                    "due_at": due,
                    "completed_at": completed,
                    "created_at": created,
                    "updated_at": completed or created,
                    "is_deleted": 0,
                }
            )
        self.ds.tasks = self._number(rows, "tasks")

    def calls(self) -> None:
        r, rows = self.r, []
        phones = {c["id"]: c["phone"] for c in self.ds.contacts}
        for _ in range(2 * self.size):
            et, e = self._entity((0.35, 0.9))
            if et == "contact":
                phone = e["phone"]
            elif et == "deal" and e["contact_ids"]:
                phone = phones[e["contact_ids"][0]]
            else:
                phone = f"+74{r.randrange(10**9):09d}"
            outcome = _call_outcome(r.random())
            direction = "in" if r.random() < 0.45 else "out"
            status = status_of(direction, outcome)
            rows.append(
                {
                    "id": 0,
                    "direction": direction,
                    "outcome": outcome,
                    "status": status,
                    "duration_s": r.randint(5, 900) if status == "answered" else 0,
                    "started_at": self.ts(e["created_at"]),
                    "responsible_user_id": e["responsible_user_id"],
                    "entity_type": et,
                    "entity_id": e["id"],
                    "phone": phone,
                }
            )
        self.ds.calls = self._number(rows, "calls", key="started_at")

    def deletions(self) -> None:
        r, events = self.r, self.ds.events
        for name, entity, share in (
            ("deals", "deal", 0.01),
            ("contacts", "contact", 0.005),
            ("companies", "company", 0.005),
            ("tasks", "task", 0.01),
        ):
            for row in getattr(self.ds, name):
                if r.random() >= share:
                    continue
                at = self.ts(row["updated_at"])
                row["is_deleted"], row["updated_at"] = 1, at
                events.append(
                    {"id": 0, "type": "deleted", "entity": entity, "entity_id": row["id"], "at": at}
                )
                if r.random() < 0.2:  # restored from the trash later
                    at = self.ts(at + 1)
                    row["is_deleted"], row["updated_at"] = 0, at
                    events.append(
                        {"id": 0, "type": "restored", "entity": entity, "entity_id": row["id"], "at": at}
                    )


# Call outcomes: 70 % talked, then no answer, busy, declined, wrong number. One draw per call,
# as before outcomes had names, so the rest of a seed's data stays the same.
_CALL_SHARES = ((0.7, "talked"), (0.9, "no_answer"), (0.95, "busy"), (0.98, "declined"))


def _call_outcome(u: float) -> str:
    return next((o for edge, o in _CALL_SHARES if u < edge), "wrong_number")
