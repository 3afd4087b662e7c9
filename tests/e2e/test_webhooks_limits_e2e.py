"""The nightly job and `serve`'s refreshes share each portal's limits (local engine, both as
real processes): while a nightly `run --once` runs, deals are won one after another in the CRM,
each as soon as the previous one has been read back, so refreshes keep running beside the
nightly's own requests. Against sandboxes enforcing the portals' real limits (amoCRM 7 requests
a second; Bitrix24's bucket of 50 draining 2 a second) the portal refuses nothing: the jobs keep
to 1 - [webhooks] share of the limits, the refreshes to the share. Waits poll with deadlines;
nothing sleeps for timing.
"""

from __future__ import annotations

import secrets
import time

from sandbox.amocrm import AmoSandbox
from sandbox.bitrix24 import Bitrix24Sandbox
from sandbox.data import generate
from tests.e2e.serve_helpers import (
    FIELDS,
    amo_deal_reads,
    b24_deal_reads,
    card_value,
    cli,
    free_port,
    logged,
    mirror_rows,
    open_deals,
    serving,
    start,
    synced_config,
    wait_for,
    won_stage,
)

SECRET = secrets.token_urlsafe(32)
EDITS = 15  # deals the loop may win while the nightly runs (it stops when the nightly ends)


def runs(tmp) -> int:
    return mirror_rows(tmp / "mirror.db", "SELECT count(*) FROM sync_runs")[0][0]


def nightly_with_refreshes(tmp, config, ds, serve, read_times) -> tuple[float, float]:
    """Start the nightly `run --once`; once the mirror shows it started, win one of EDITS open
    deals after another, each once the previous one has been read back by a refresh
    (`read_times(deal_id)`: when the CRM was asked for that deal by id), until the nightly
    ends. Then every deal won must show on its card (`serve` running) and some refresh must
    have read the CRM while the nightly ran. Returns the (wall clock) start and end of the
    nightly."""
    pool = open_deals(ds, EDITS)
    cards_before = {
        d["id"]: card_value(ds, "contact", d["contact_ids"][0], FIELDS["deals_won"]) or 0 for d in pool
    }
    reads = {}

    def reads_of(deal_id: int) -> int:  # by-id reads (the refreshes'), with their times
        reads[deal_id] = read_times(deal_id)
        return len(reads[deal_id])

    before = runs(tmp)
    nightly = start(config, "run", "--once", log=tmp / "nightly.log")
    try:
        wait_for(lambda: runs(tmp) > before, "the nightly run to start (in the mirror)", 30, nightly)
        began = time.time()
        won = []
        for deal in pool:
            if nightly.poll() is not None:
                break
            ds.update("deals", deal["id"], stage_id=won_stage(ds, deal))
            won.append(deal)
            wait_for(lambda: reads_of(deal["id"]) or nightly.poll() is not None, "the won deal's refresh", 30)
        assert nightly.wait(60) == 0, open(tmp / "nightly.log").read()[-3000:]
        ended = time.time()
    finally:
        if nightly.poll() is None:
            nightly.kill()
    jobs = logged(tmp / "nightly.log", "job")
    assert [(j["job"], j["status"]) for j in jobs] == [("sync", "ok")]
    wait_for(lambda: on_cards(ds, won, cards_before), "every won deal on its card", 30, serve)
    during = [t for d in won for t in reads[d["id"]] if began <= t <= ended]
    assert during, "no refresh read the CRM while the nightly ran"
    return began, ended


def window_peak(log: list[dict], window_s: float) -> int:
    """The most requests in any `window_s` seconds of the log."""
    times = sorted(r["at"] for r in log)
    return max((sum(1 for u in times[i:] if u - t < window_s) for i, t in enumerate(times)), default=0)


def bucket_peak(log: list[dict], drain: float) -> float:
    """The fullest a portal's leaky bucket (draining `drain` a second) was with these requests."""
    level, peak, at = 0.0, 0.0, None
    for r in sorted(log, key=lambda r: r["at"]):
        if at is not None:
            level = max(0.0, level - (r["at"] - at) * drain)
        level, at = level + 1, r["at"]
        peak = max(peak, level)
    return peak


def on_cards(ds, deals, before) -> bool:
    return all(
        (card_value(ds, "contact", d["contact_ids"][0], FIELDS["deals_won"]) or 0) == before[d["id"]] + 1
        for d in deals
    )


def test_amocrm_nightly_and_refreshes_together_stay_within_seven_requests_a_second(tmp_path):
    port = free_port()
    with AmoSandbox(size=200, seed=7, limits=True) as amo:
        config = synced_config(tmp_path, port, amo, SECRET, debounce_s=0.2)
        with serving(config, port, tmp_path / "serve.log") as proc:
            wait_for(lambda: logged(tmp_path / "serve.log", "job"), "serve's catch-up sync", 30, proc)
            cli(config, "hooks", "install", "crm")
            began, ended = nightly_with_refreshes(
                tmp_path, config, amo.dataset, proc, lambda deal_id: amo_deal_reads(amo, deal_id)
            )
            # the nightly ran at its share of the limit (6 of 7 a second), so a refresh beyond
            # its own share would have been refused
            assert window_peak([r for r in amo.request_log if began <= r["at"] <= ended], 1.0) >= 6
        assert amo.violations == 0


def test_bitrix24_nightly_and_refreshes_together_never_overflow_the_portals_bucket(tmp_path):
    port = free_port()
    with Bitrix24Sandbox(generate(seed=7, size=300), limits=False) as srv:
        # reconcile_hours = 0: the nightly lists every table's ids, as a nightly a day after the
        # last one does (the setup run here was seconds ago)
        config = synced_config(tmp_path, port, srv, SECRET, debounce_s=0.2, extra="reconcile_hours = 0\n")
        with serving(config, port, tmp_path / "serve.log") as proc:
            cli(config, "hooks", "install", "crm")
            # The setup above ran without limits, so the portal's bucket is empty now, as after
            # a quiet evening (no process can know what an earlier one left in it). From here
            # on the portal enforces its bucket: 50 deep, draining 2 a second.
            srv.limits = True
            since = len(srv.request_log)

            def read_times(deal_id: int) -> list[float]:
                return [srv.request_log[i]["at"] for i in b24_deal_reads(srv, deal_id, since)]

            nightly_with_refreshes(tmp_path, config, srv.dataset, proc, read_times)
            # Bitrix24 batches its reads, so this nightly alone takes about half the bucket:
            # the limit is in play, not a formality
            assert bucket_peak(srv.request_log[since:], srv.drain_rate) >= 20
        assert srv.limit_errors == 0 and srv.limit_counts == {
            "QUERY_LIMIT_EXCEEDED": 0,
            "OPERATION_TIME_LIMIT": 0,
        }
