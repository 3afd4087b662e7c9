"""`crm-connector serve` on the celery engine, as real processes: a Redis, one worker
(`crm-connector worker -c 4`) and `serve`, against an amoCRM sandbox and a Bitrix24 one, both
with their rate limits on. A deal won in either CRM shows on its contact's card within 10 s,
refreshed by the worker (its log and the task's result in Redis say so; `serve` only queued
it); a wrong secret is refused and reads nothing; no request of the whole run is answered
with a rate-limit error. Waits poll with deadlines; nothing sleeps for timing.

The fleet's keys live in a Redis database of this module's own (flushed before and after), the
sources and queues have names of their own, so other tests on the same Redis never see them.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import time
import uuid
from urllib.parse import urlsplit, urlunsplit

import pytest
import requests

from adapters.bitrix24 import events as b24_events
from sandbox.amocrm import AmoSandbox
from sandbox.bitrix24 import Bitrix24Sandbox
from tests.e2e.serve_helpers import CONNECTOR, FIELDS, ROOT, cli, free_port, up, wait_for, won_stage
from tests.e2e.test_webhooks_e2e import reads_of

pytestmark = pytest.mark.redis
DB = 13  # the Redis database this module's fleet uses (flushed before and after)
TAG = uuid.uuid4().hex[:8]
AMO, B24 = f"amo-{TAG}", f"b24-{TAG}"
AMO_SECRET, B24_SECRET = secrets.token_urlsafe(32), secrets.token_urlsafe(32)


def with_db(url: str, db: int) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, parts.fragment))


def log_lines(path) -> list[dict]:
    out = []
    for line in open(path, encoding="utf-8").read().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def refreshes(path, source: str) -> list[dict]:
    return [d for d in log_lines(path) if d.get("event") == "refresh" and d.get("source") == source]


def logged(path, text: str) -> bool:
    return any(text in d.get("msg", "") for d in log_lines(path))


def start(args: list[str], log_path):
    err = open(log_path, "w")
    proc = subprocess.Popen(
        args, env=dict(os.environ, PYTHONPATH=ROOT), stdout=subprocess.DEVNULL, stderr=err, text=True
    )
    return proc, err


def stop(proc, err, timeout: float = 60) -> int | None:
    try:
        if proc.poll() is None:
            proc.terminate()
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return None
    finally:
        err.close()


@pytest.fixture(scope="module")
def fleet(redis_url, tmp_path_factory):
    """Both sandboxes synced through the fleet, a worker and `serve` running, the hooks in."""
    import redis

    tmp = tmp_path_factory.mktemp("hooksfleet")
    broker = with_db(redis_url, DB)
    r = redis.Redis.from_url(broker)
    r.flushdb()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    procs = []
    with (
        AmoSandbox(size=120, seed=7, limits=True) as amo,
        Bitrix24Sandbox(size=120, seed=11, limits=True) as b24,
    ):
        b24_token = b24.add_outgoing_webhook(f"{base}/hooks/{B24}/{B24_SECRET}", b24_events.BOUND)
        fields = "\n".join(f'{k} = "{v}"' for k, v in FIELDS.items())
        config = tmp / "config.toml"
        config.write_text(f"""
[engine]
kind = "celery"
broker_url = "{broker}"

[storage]
path = "{tmp / "{source}.db"}"

[[sources]]
name = "{AMO}"
kind = "amocrm"
base_url = "{amo.url}"
access_token = "{amo.access_token}"
webhook_secret = "{AMO_SECRET}"
queue = "hooksfleet-{AMO}"

[[sources]]
name = "{B24}"
kind = "bitrix24"
webhook_url = "{b24.webhook_url}"
application_token = "{b24_token}"
webhook_secret = "{B24_SECRET}"
queue = "hooksfleet-{B24}"

[webhooks]
listen = "127.0.0.1:{port}"
public_url = "{base}"
debounce_s = 1

[kpi]
targets = ["contact", "company"]

[kpi.fields]
{fields}
""")
        logs = {"worker": tmp / "worker.log", "serve": tmp / "serve.log"}
        try:
            worker = start(
                CONNECTOR
                + [
                    "--config",
                    str(config),
                    "--log-format",
                    "json",
                    "worker",
                    "-c",
                    "4",
                    "--name",
                    f"hooksfleet-{TAG}@test",
                ],
                logs["worker"],
            )
            procs.append(worker)
            wait_for(lambda: logged(logs["worker"], "ready"), "the worker to be ready", 60, worker[0])
            out = cli(str(config), "run", "--once")  # the first sync, on the worker
            assert AMO in out.stdout and B24 in out.stdout, out.stdout
            # installed before serve starts, while no job runs: amoCRM's 7/s are then shared by
            # the jobs' and the refreshes' limiters in Redis alone (see the last test)
            out = cli(str(config), "hooks", "install", AMO)
            assert "amoCRM webhook" in out.stdout and AMO_SECRET not in out.stdout + out.stderr
            serve = start(
                CONNECTOR + ["--config", str(config), "--log-format", "json", "serve"], logs["serve"]
            )
            procs.append(serve)
            wait_for(lambda: up(base), "serve to listen", 30, serve[0])
            # serve catches up with an incremental sync of each source at start, queued for the
            # worker (neither CRM here keeps what a receiver missed): let both finish first
            for name in (AMO, B24):
                wait_for(
                    lambda: logged(logs["worker"], f"job=incremental source={name} status=ok"),
                    f"the catch-up sync of {name} on the worker",
                    90,
                    worker[0],
                )
            yield {
                "amo": amo,
                "b24": b24,
                "redis": r,
                "base": base,
                "logs": logs,
                "worker": worker[0],
                "serve": serve[0],
                "config": str(config),
            }
        finally:
            codes = [stop(*p) for p in reversed(procs)]
            r.flushdb()
            r.close()
    assert codes == [0] * len(procs), codes


def card(crm, contact_id: int, label: str):
    """The value a contact's card shows in the sandbox's field named `label` (None: empty)."""
    fid = next(f["id"] for f in crm.dataset.fields["contact"] if f["name"] == label)
    return crm.dataset.by_id("contacts")[contact_id]["custom"].get(fid)


def won_on_card(crm, fleet, source: str):
    """Win an open deal of one contact in `crm`; the contact's 'Deals won' must count it
    within 10 s, refreshed on the worker."""
    ds = crm.dataset
    deal = next(
        d
        for d in ds.deals
        if d["status"] == "open"
        and not d["is_deleted"]
        and len(d["contact_ids"]) == 1
        and (d.get("amount") or 0) > 0
    )
    contact = deal["contact_ids"][0]
    before = float(card(crm, contact, FIELDS["deals_won"]) or 0)
    seen = len(refreshes(fleet["logs"]["worker"], source))
    edited = time.monotonic()
    ds.update("deals", deal["id"], stage_id=won_stage(ds, deal))
    wait_for(
        lambda: float(card(crm, contact, FIELDS["deals_won"]) or 0) == before + 1,
        f"{source}: the contact's 'Deals won' to count the deal",
        10,
        fleet["serve"],
    )
    assert time.monotonic() - edited < 10
    # the worker refreshed it (and wrote the value); serve only queued it
    wait_for(
        lambda: any(r["written"] for r in refreshes(fleet["logs"]["worker"], source)[seen:]),
        f"{source}: the worker's refresh line",
        5,
        fleet["worker"],
    )
    assert refreshes(fleet["logs"]["serve"], source) == []
    assert logged(fleet["logs"]["serve"], f"change(s) of {source} on queue hooksfleet-{source}")
    return deal


def task_results(r) -> list[str]:
    """The results of the refresh tasks kept in the result backend (the fleet's Redis db)."""
    out = []
    for key in r.scan_iter("celery-task-meta-*"):
        meta = json.loads(r.get(key) or "{}")
        if meta.get("status") == "SUCCESS" and isinstance(meta.get("result"), str):
            out.append(meta["result"])
    return out


def test_a_deal_won_in_amocrm_shows_on_its_contacts_card_refreshed_by_the_worker(fleet):
    deal = won_on_card(fleet["amo"], fleet, AMO)
    assert reads_of(fleet["amo"], deal["id"]) >= 1  # read back from the API
    # the task's result in the fleet's Redis: the refresh's line, as the worker returned it
    wait_for(
        lambda: any(
            "client(s) recomputed" in x and "value(s) written" in x for x in task_results(fleet["redis"])
        ),
        "the refresh task's result in Redis",
        5,
    )


def test_a_deal_won_in_bitrix24_shows_on_its_contacts_card_refreshed_by_the_worker(fleet):
    won_on_card(fleet["b24"], fleet, B24)


def refresh_order(fleet, source: str) -> str:
    """The worker's log as 'R' (a refresh task of `source` received) and 'D' (a refresh of
    `source` done, its line logged before its task ends), in order; tasks are told by the ids
    serve logged queueing them."""
    ids = {
        m.group(1)
        for d in log_lines(fleet["logs"]["serve"])
        for m in [
            re.search(rf"refresh of \d+ change\(s\) of {source} .*\(task ([0-9a-f-]+)\)", d.get("msg", ""))
        ]
        if m
    }
    out = []
    for d in log_lines(fleet["logs"]["worker"]):
        m = re.match(r"Task crm_connector\.refresh\[([0-9a-f-]+)\] received", d.get("msg", ""))
        if m and m.group(1) in ids:
            out.append("R")
        elif d.get("event") == "refresh" and d.get("source") == source:
            out.append("D")
    return "".join(out)


def test_one_portals_refreshes_run_one_after_another_on_the_worker(fleet):
    amo = fleet["amo"]
    ds = amo.dataset
    first, second = [
        d for d in ds.deals if d["status"] == "open" and not d["is_deleted"] and len(d["contact_ids"]) == 1
    ][-2:]
    cards = {
        d["contact_ids"][0]: float(card(amo, d["contact_ids"][0], FIELDS["deals_won"]) or 0)
        for d in (first, second)
    }
    queued = lambda: (
        refresh_order(fleet, AMO).count("R")
        + len(  # noqa: E731
            [d for d in log_lines(fleet["logs"]["serve"]) if f"change(s) of {AMO} on" in d.get("msg", "")]
        )
    )
    before = queued()
    ds.update("deals", first["id"], stage_id=won_stage(ds, first))
    wait_for(lambda: queued() > before, "the first win's refresh to be queued", 10, fleet["serve"])
    # the second win's batch gathers while the first refresh (a read and card writes at the
    # refresh share of amoCRM's 7/s) runs: it must wait for it, not run beside it
    ds.update("deals", second["id"], stage_id=won_stage(ds, second))
    for d in (first, second):
        contact = d["contact_ids"][0]
        wait_for(
            lambda: float(card(amo, contact, FIELDS["deals_won"]) or 0) >= cards[contact] + 1,
            f"deal {d['id']} on its contact's card",
            15,
            fleet["serve"],
        )
    order = refresh_order(fleet, AMO)
    assert order and "RR" not in order, order


def test_a_wrong_secret_is_refused_and_reads_nothing(fleet):
    amo, base = fleet["amo"], fleet["base"]
    deal = next(d for d in amo.dataset.deals if not d["is_deleted"])
    before = reads_of(amo, deal["id"])
    real = amo.hook_pairs("update_lead", deal["id"])
    assert requests.post(f"{base}/hooks/{AMO}/{'x' * 43}", data=real, timeout=5).status_code == 403
    assert requests.post(f"{base}/hooks/{AMO}/{B24_SECRET}", data=real, timeout=5).status_code == 403
    assert requests.post(f"{base}/hooks/{B24}/{AMO_SECRET}", data=real, timeout=5).status_code == 403
    # a genuine delivery after them: once the worker has read it back, the refused ones had
    # read nothing
    assert requests.post(f"{base}/hooks/{AMO}/{AMO_SECRET}", data=real, timeout=5).status_code == 200
    wait_for(lambda: reads_of(amo, deal["id"]) > before, "the genuine delivery's read", 10, fleet["worker"])
    assert reads_of(amo, deal["id"]) == before + 1
    text = open(fleet["logs"]["serve"]).read()
    assert "wrong secret" in text and AMO_SECRET not in text and B24_SECRET not in text
    text = open(fleet["logs"]["worker"]).read()
    assert AMO_SECRET not in text and B24_SECRET not in text


def window_before(log: list[dict], hit: dict) -> list[str]:
    """The requests in the second before a limit answer (what crowded the window)."""
    return [
        f"{r['at'] - hit['at']:+.3f} {r['method']} {r['path']} {r['status']}"
        for r in log
        if hit["at"] - 1.0 <= r["at"] <= hit["at"]
    ]


def test_no_request_of_the_run_got_a_rate_limit_answer(fleet):
    amo, b24 = fleet["amo"], fleet["b24"]
    assert amo.deliverer.wait(15) and b24.deliveries.wait_idle()
    limited = [r for r in amo.request_log if r["status"] == 429]
    assert limited == [], "\n".join(window_before(amo.request_log, limited[0]))
    assert b24.limit_errors == 0, b24.limit_counts
    # the refreshes took their share of the limits in Redis, apart from the jobs'
    assert len(amo.request_log) > 0 and len(b24.request_log) > 0
