"""The four scenarios the mirror-equals-portal tests run for each CRM, and their tools.

A scenario gets a started sandbox server and an adapter, syncs into a fresh mirror, changes
the "CRM" as its name says, and leaves the mirror for `assert_mirror_equals_portal`:

- `first_sync`: one full sync.
- `nightly`: a first sync, then edits, stage moves, deletions, restores and new records
  between runs, then an incremental sync.
- `crash_resume`: a first sync that meets a bad page and that a stop signal interrupts a
  few pages later, then a second run that resumes from the bookmarks.
- `edit_during_run`: records edited and added while a deal listing is being served, then an
  incremental sync (which must pick up the edits and whatever the listing missed).

Each CRM supplies a `Crm` (how to find a listing page, which edits to make); the scenarios
themselves name no CRM.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from datetime import timedelta
from typing import Callable

import pytest

from connector.run import sync as sync_module
from connector.run.sync import sync_source

SCENARIOS = ("first_sync", "nightly", "crash_resume", "edit_during_run")
# The sandbox stamps each mutation one second after the previous one, so a burst of edits
# is dated a few seconds ahead of the wall clock; a run starting now would (correctly) leave
# them to the next run. Runs after edits therefore start this far ahead.
AHEAD_S = 120


@dataclass
class Crm:
    """What the scenarios need to know about one CRM's sandbox."""

    source: str
    is_deal_listing: Callable[[object], bool]  # request -> is it a deals list page?
    edits: Callable[[object], None] | None = None  # this CRM's own edits of a working day


@contextlib.contextmanager
def clock_ahead(seconds: int = AHEAD_S):
    """Runs started inside start `seconds` after now (see AHEAD_S)."""
    real = sync_module.utc_now
    sync_module.utc_now = lambda: real() + timedelta(seconds=seconds)
    try:
        yield
    finally:
        sync_module.utc_now = real


def on_request(server, matches: Callable[[object], bool], action: Callable[[], None], nth: int = 1) -> None:
    """Run `action` once, as the `nth` request matching `matches` arrives, before serving it."""
    original, seen, lock = server.handle, [0], threading.Lock()

    def handle(req):
        with lock:
            if matches(req):
                seen[0] += 1
                if seen[0] == nth:
                    action()
        return original(req)

    server.handle = handle


def run(name: str, crm: Crm, server, adapter, mirror) -> None:
    """Play scenario `name`; every run must end ok (crash_resume: the second one)."""
    SCENARIO_RUNS[name](crm, server, adapter, mirror)


def _ok(results) -> None:
    bad = [(r.stream, r.status, r.error) for r in results if r.status != "ok"]
    assert not bad, bad


def first_sync(crm, server, adapter, mirror) -> None:
    _ok(sync_source(mirror, adapter))


def nightly(crm, server, adapter, mirror) -> None:
    _ok(sync_source(mirror, adapter))
    edit_between_runs(server.dataset, crm)
    with clock_ahead():
        _ok(sync_source(mirror, adapter))


def crash_resume(crm, server, adapter, mirror) -> None:
    stop = threading.Event()
    on_request(server, lambda req: True, lambda: server.fail_next("badjson"), nth=3)
    on_request(server, lambda req: True, stop.set, nth=8)
    first = sync_source(mirror, adapter, stop=stop)
    # The bad page fails its stream or is retried, as the adapter decides; the stop must bite.
    assert "interrupted" in {r.status for r in first}, [(r.stream, r.status) for r in first]
    edit_between_runs(server.dataset, crm)
    with clock_ahead():
        _ok(sync_source(mirror, adapter))


def edit_during_run(crm, server, adapter, mirror) -> None:
    on_request(server, crm.is_deal_listing, lambda: edit_during_listing(server.dataset), nth=2)
    _ok(sync_source(mirror, adapter))
    with clock_ahead():
        _ok(sync_source(mirror, adapter))


def _live(rows: list[dict], n: int = 1, **match) -> list[dict]:
    out = [r for r in rows if not r.get("is_deleted") and all(r[k] == v for k, v in match.items())]
    return out[:n]


def edit_between_runs(ds, crm: Crm | None = None) -> None:
    """What a working day does to a CRM: edits, stage moves, deletions, restores, merges, new
    records; then the CRM's own edits (`Crm.edits`)."""
    if crm is not None and crm.edits is not None:
        crm.edits(ds)
    pipe = ds.pipelines[0]
    won = next(s["id"] for s in pipe["stages"] if s["semantics"] == "won")
    lost = next(s["id"] for s in ds.pipelines[1]["stages"] if s["semantics"] == "lost")
    a, b, c, gone = _live(ds.deals, 4, status="open")
    ds.update("deals", a["id"], name="Renamed deal", amount=4321.0)
    ds.update("deals", b["id"], stage_id=won)
    ds.update("deals", c["id"], stage_id=lost)  # into another pipeline, closed
    ds.delete("deals", gone["id"])
    trashed = next(d for d in ds.deals if d["is_deleted"])
    ds.restore("deals", trashed["id"])  # deleted before the first run
    contact, dropped = _live(ds.contacts, 2)
    ds.update(
        "contacts",
        contact["id"],
        name="Renamed Contact",
        first_name="Renamed",
        last_name="Contact",
        responsible_user_id=ds.users[1]["id"],
    )
    ds.delete("contacts", dropped["id"])
    company = _live(ds.companies)[0]
    ds.delete("companies", company["id"])
    ds.restore("companies", company["id"])  # deleted and back the same day
    done, dropped_task = _live(ds.tasks, 2, is_completed=False)
    ds.update("tasks", done["id"], is_completed=True)
    new_contact = ds.add("contacts", name="New person", first_name="New", last_name="person")
    deal = ds.add("deals", name="New order", contact_ids=[new_contact["id"]], amount=1500.0)
    ds.add(
        "tasks",
        text="Call the new person",
        entity_type="contact",
        entity_id=new_contact["id"],
        due_at=ds.tick() + 86400,
    )
    ds.add(
        "calls",
        direction="in",
        status="missed",
        duration_s=0,
        entity_type="deal",
        entity_id=deal["id"],
        phone="+79990000000",
        started_at=ds.tick(),
    )
    lead = _live(ds.leads, status="open")[0]
    ds.update("leads", lead["id"], status_code="CONVERTED")
    ds.add("leads", title="Request from the test")
    ds.delete("tasks", dropped_task["id"])
    duplicate, survivor = _live(ds.contacts, 4)[2:]
    ds.merge("contacts", duplicate["id"], survivor["id"])  # a user merged two cards of one person
    # A duplicate made and merged away the same day, the merge event naming the survivor.
    keeper = _live(ds.companies, 3)[2]
    same_day = ds.add("companies", name=keeper["name"])
    ds.merge("companies", same_day["id"], keeper["id"], named="survivor")
    interactions_between_runs(ds, deal, new_contact, lead)


def interactions_between_runs(ds, deal: dict, contact: dict, lead: dict) -> None:
    """Interactions and surveys on a working day: messages, a survey answer, a rated call, a
    deleted e-mail, a deal whose UTM source is filled in."""
    ds.add(
        "activities",
        channel="chat",
        direction="in",
        entity_type="deal",
        entity_id=deal["id"],
        subject="Where is my order?",
    )
    ds.add(
        "activities",
        channel="chat",
        direction="out",
        entity_type="deal",
        entity_id=deal["id"],
        responsible_user_id=ds.users[1]["id"],
        subject="On its way",
    )
    ds.add(
        "activities",
        channel="sms",
        direction="out",
        entity_type="contact",
        entity_id=contact["id"],
        subject="Your code",
    )
    ds.add(
        "activities",
        channel="meeting",
        direction=None,
        entity_type="lead",
        entity_id=lead["id"],
        subject="Demo",
    )
    ds.delete("activities", _live(ds.activities, channel="email")[0]["id"])
    ds.add("surveys", kind="nps", score=3, entity_type="contact", entity_id=contact["id"])
    ds.add(
        "calls",
        direction="out",
        status="answered",
        duration_s=95,
        entity_type="contact",
        entity_id=contact["id"],
        phone="+79990000001",
        started_at=ds.tick(),
        vote=5,
    )
    ds.update("deals", _live(ds.deals, status="open")[0]["id"], utm_source=" Partner_Site ")


def edit_during_listing(ds) -> None:
    """Edits landing while the deals listing is being paged: rows already served change."""
    for d in _live(ds.deals, 3):
        ds.update("deals", d["id"], name=d["name"] + " (edited)")
    ds.add("deals", name="Added during the run")


SCENARIO_RUNS = {
    "first_sync": first_sync,
    "nightly": nightly,
    "crash_resume": crash_resume,
    "edit_during_run": edit_during_run,
}


def cases(known: dict, tables) -> list:
    """(scenario, table) test parameters; a `known` failure, keyed (scenario or "*", table),
    is a strict xfail naming why, so it fails once fixed and its marker must go."""
    out = []
    for scenario in SCENARIOS:
        for table in tables:
            why = known.get((scenario, table)) or known.get(("*", table))
            marks = [pytest.mark.xfail(strict=True, reason=why)] if why else []
            out.append(pytest.param(scenario, table, marks=marks, id=f"{scenario}-{table}"))
    return out


class Played:
    """Each scenario played once per test module, its mirror kept for the per-table checks.

    `start(tmp_dir) -> (server, adapter)` gives a started sandbox over a fresh dataset."""

    def __init__(self, crm: Crm, start, tmp_path_factory):
        self.crm, self.start, self.tmp = crm, start, tmp_path_factory
        self.done: dict[str, tuple] = {}
        self.mirrors: list = []

    def get(self, name: str):
        """(server, mirror) after scenario `name`; a scenario that broke raises each time."""
        if name not in self.done:
            self.done[name] = self._play(name)
        server, mirror, error = self.done[name]
        if error is not None:
            raise error
        return server, mirror

    def _play(self, name: str):
        from connector.mirror.store import Mirror

        tmp = self.tmp.mktemp(name)
        server, adapter = self.start(tmp)
        mirror = Mirror(str(tmp / "mirror.db"))
        self.mirrors.append(mirror)
        try:
            run(name, self.crm, server, adapter, mirror)
            return server, mirror, None
        except Exception as err:  # noqa: BLE001 - re-raised by every test of the scenario
            return server, mirror, err
        finally:
            adapter.close()
            server.stop()

    def close(self) -> None:
        for m in self.mirrors:
            m.close()
