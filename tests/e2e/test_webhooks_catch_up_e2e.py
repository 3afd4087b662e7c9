"""What `crm-connector serve` missed while it was down comes back when it starts (local engine,
serve as a real process): Bitrix24 keeps the changes in its offline queue, which serve reads
(`event.offline.get`, clear=0), refreshes and then clears, leaving the queue empty; amoCRM
keeps nothing, so serve starts an incremental sync with KPIs. 20 deals of 20 different contacts
are won while nobody listens; each shows on its contact's card and in the mirror. Waits poll
with deadlines; nothing sleeps for timing.
"""

from __future__ import annotations

import json
import re
import secrets
import time

from sandbox.amocrm import AmoSandbox
from sandbox.bitrix24 import Bitrix24Sandbox
from sandbox.data import generate
from tests.e2e.serve_helpers import (
    FIELDS,
    b24_calls,
    card_value,
    cli,
    free_port,
    logged,
    mirror_rows,
    open_deals,
    serving,
    synced_config,
    wait_for,
    won_stage,
)

SECRET = secrets.token_urlsafe(32)
EDITS = 20


def win_while_down(ds, sent_log, wait_idle) -> tuple[list[dict], dict[int, int]]:
    """Win EDITS open deals, each its contact's only one of them, while no receiver listens;
    every delivery of them is lost. Returns the deals and each contact's 'Deals won' before."""
    deals = open_deals(ds, EDITS)
    before = {
        d["contact_ids"][0]: card_value(ds, "contact", d["contact_ids"][0], FIELDS["deals_won"]) or 0
        for d in deals
    }
    sent = len(sent_log)
    for d in deals:
        ds.update("deals", d["id"], stage_id=won_stage(ds, d))
    assert wait_idle(15)
    ids = {str(d["id"]) for d in deals}
    lost = [e for e in sent_log[sent:] if deal_of(e) in ids]
    assert {deal_of(e) for e in lost} == ids
    assert all(e["status"] is None and e["error"] for e in lost)
    return deals, before


def deal_of(delivery: dict) -> str | None:
    """The deal a delivery names (Bitrix24: data[FIELDS][ID]; amoCRM: leads[...][0][id])."""
    return next(
        (
            v
            for k, v in delivery["pairs"]
            if k == "data[FIELDS][ID]" or re.fullmatch(r"leads\[\w+\]\[0\]\[id\]", k)
        ),
        None,
    )


def all_reflected(tmp, ds, source: str, deals, before) -> bool:
    cards = all(
        (card_value(ds, "contact", d["contact_ids"][0], FIELDS["deals_won"]) or 0)
        == before[d["contact_ids"][0]] + 1
        for d in deals
    )
    ids = ",".join(str(d["id"]) for d in deals)
    rows = mirror_rows(
        tmp / "mirror.db", f"SELECT id, status FROM deals WHERE source = ? AND id IN ({ids})", source
    )
    return cards and dict(rows) == {d["id"]: "won" for d in deals}


def test_bitrix24_offline_events_bring_back_what_serve_missed_and_are_cleared(tmp_path):
    port = free_port()
    with Bitrix24Sandbox(generate(seed=7, size=200), limits=True) as srv:
        config = synced_config(tmp_path, port, srv, SECRET, debounce_s=1)
        assert "events bound online" in cli(config, "hooks", "install", "crm").stdout  # serve is down
        ds = srv.dataset
        deals, before = win_while_down(ds, srv.deliveries.sent, srv.deliveries.wait_idle)
        assert sorted(e.obj for e in srv.events.queue) == sorted(("deal", d["id"]) for d in deals)
        since = len(srv.request_log)
        with serving(config, port, tmp_path / "serve.log") as proc:
            wait_for(
                lambda: all_reflected(tmp_path, ds, "crm", deals, before),
                f"all {EDITS} won deals on the cards and in the mirror",
                20,
                proc,
            )
            wait_for(
                lambda: any(m == "event.offline.clear" for _, m, _ in b24_calls(srv, since)),
                "the offline events to be cleared",
                10,
                proc,
            )
            # what our own write-back changed is not queued for us: the queue is empty
            wait_for(lambda: srv.events.queue == [], "an empty offline queue", 10, proc)
            calls = b24_calls(srv, since)
            got = [i for i, m, p in calls if m == "event.offline.get" and ("clear", "0") in p]
            cleared = [i for i, m, _ in calls if m == "event.offline.clear"]
            assert got and cleared and got[0] < cleared[0]
            # caught up from the queue alone: no listing of all deals, one refresh of all 20 that
            # wrote their cards (what comes after it is the echo of that write, writing nothing)
            assert not [
                p
                for _, m, p in calls
                if m == "crm.deal.list" and not any(k.lower().startswith("filter[@id]") for k, _ in p)
            ]
            first, *later = logged(tmp_path / "serve.log", "refresh")
            assert first["changes"] == EDITS and first["written"] >= EDITS
            assert all(r["written"] == 0 for r in later)
        assert srv.limit_errors == 0


def test_bitrix24_more_missed_changes_than_one_offline_page_all_come_back_at_start(tmp_path):
    """event.offline.get hands out 50 entries at a time: serve reads them page after page
    until the queue is empty, not one page per [webhooks] catch_up_s (5 minutes by default)."""
    port = free_port()
    with Bitrix24Sandbox(generate(seed=7, size=200), limits=True) as srv:
        config = synced_config(tmp_path, port, srv, SECRET, debounce_s=1)
        cli(config, "hooks", "install", "crm")  # serve is down
        ds = srv.dataset
        deals = [d["id"] for d in ds.deals if not d["is_deleted"]][: 50 + 10]
        for i in deals:
            ds.update("deals", i, name=f"renamed while serve was down {i}")
        assert srv.deliveries.wait_idle(15) and len(srv.events.queue) == len(deals)
        since = len(srv.request_log)
        with serving(config, port, tmp_path / "serve.log") as proc:
            ids = ",".join(map(str, deals))
            wait_for(
                lambda: (
                    mirror_rows(
                        tmp_path / "mirror.db",
                        "SELECT count(*) FROM deals WHERE "
                        f"source = 'crm' AND id IN ({ids}) AND name LIKE 'renamed %'",
                    )
                    == [(len(deals),)]
                ),
                f"all {len(deals)} renamed deals in the mirror",
                20,
                proc,
            )
            wait_for(lambda: srv.events.queue == [], "an empty offline queue", 10, proc)
            kept = [
                line for line in open(tmp_path / "serve.log") if "kept while the receiver was down" in line
            ]
            assert [json.loads(line)["msg"].split(": ")[1].split()[0] for line in kept] == ["50", "10"]
            assert not [
                p
                for _, m, p in b24_calls(srv, since)
                if m == "crm.deal.list" and not any(k.lower().startswith("filter[@id]") for k, _ in p)
            ]  # no sync
        assert srv.limit_errors == 0


def test_amocrm_serve_catches_up_with_an_incremental_sync_at_start(tmp_path):
    port = free_port()
    with AmoSandbox(size=200, seed=7, limits=True) as amo:
        config = synced_config(tmp_path, port, amo, SECRET, debounce_s=1)
        assert "amoCRM webhook" in cli(config, "hooks", "install", "crm").stdout  # serve is down
        ds = amo.dataset
        deals, before = win_while_down(ds, amo.deliverer.sent, amo.deliverer.wait)
        # The sandbox stamps each write a second after the one before, so a burst runs ahead
        # of the wall clock; the sync leaves rows stamped after its start to the next run (a CRM
        # clock ahead of ours). The edits were made while serve was down: wait until their
        # stamps are in the past, as a real CRM's would be when serve starts.
        newest = max(d["updated_at"] for d in deals)
        wait_for(lambda: time.time() >= newest + 1, "the sandbox's clock to fall behind ours", 40)
        with serving(config, port, tmp_path / "serve.log") as proc:
            wait_for(
                lambda: all_reflected(tmp_path, ds, "crm", deals, before),
                f"all {EDITS} won deals on the cards and in the mirror",
                30,
                proc,
            )
            jobs = wait_for(lambda: logged(tmp_path / "serve.log", "job"), "the catch-up job line", 10, proc)
            assert [(j["job"], j["status"]) for j in jobs] == [("incremental", "ok")]
            assert logged(tmp_path / "serve.log", "refresh") == []  # the sync did it, no delivery
        assert amo.violations == 0
