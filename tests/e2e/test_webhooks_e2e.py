"""`crm-connector serve` as a real process against the amoCRM sandbox (local engine): a deal won
in the CRM shows on its contact's card within seconds; a burst of edits is read back a few
times, not once per edit; forged deliveries and wrong secrets read nothing; our own write-back
comes back as an echo and writes nothing. Waits poll with deadlines; nothing sleeps for timing.
"""

from __future__ import annotations

import secrets
import time

import pytest
import requests

from sandbox.amocrm import AmoSandbox
from tests.e2e.serve_helpers import (
    FIELDS,
    card_value,
    cli,
    free_port,
    logged,
    open_deals,
    serving,
    wait_for,
    won_stage,
)

SECRET = secrets.token_urlsafe(32)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A synced mirror with KPIs on the cards, `serve` listening, the webhook installed."""
    tmp = tmp_path_factory.mktemp("hooks")
    port = free_port()
    with AmoSandbox(size=120, seed=7, limits=True) as amo:
        fields = "\n".join(f'{k} = "{v}"' for k, v in FIELDS.items())
        config = tmp / "config.toml"
        config.write_text(f"""
[storage]
path = "{tmp / "mirror.db"}"

[[sources]]
name = "amo"
kind = "amocrm"
base_url = "{amo.url}"
access_token = "{amo.access_token}"
webhook_secret = "{SECRET}"

[webhooks]
listen = "127.0.0.1:{port}"
public_url = "http://127.0.0.1:{port}"
debounce_s = 1

[kpi]
targets = ["contact", "company"]

[kpi.fields]
{fields}
""")
        cli(config, "run", "--once")
        with serving(config, port, tmp / "serve.log") as proc:
            base = f"http://127.0.0.1:{port}"
            out = cli(config, "hooks", "install", "amo")
            assert "amoCRM webhook" in out.stdout and SECRET not in out.stdout + out.stderr
            # serve catches up with an incremental sync at start: let it finish first
            wait_for(lambda: logged(tmp / "serve.log", "job"), "the catch-up sync", 60, proc)
            yield amo, proc, base, tmp


def reads_of(amo, deal_id: int) -> int:
    """Requests that read deal `deal_id` back (by id filter or its own path)."""
    n = 0
    for r in amo.request_log:
        if r["path"] == f"/api/v4/leads/{deal_id}":
            n += 1
        elif r["path"] == "/api/v4/leads":
            ids = [v for k, v in (r.get("params") or {}).items() if k.startswith("filter[id]")]
            flat = [x for v in ids for x in (v if isinstance(v, list) else [v])]
            n += str(deal_id) in flat
    return n


def test_a_deal_won_in_the_crm_shows_on_its_contacts_card_within_ten_seconds(served):
    amo, proc, base, tmp = served
    ds = amo.dataset
    (deal,) = open_deals(ds, 1)
    contact = deal["contact_ids"][0]
    won_before = card_value(ds, "contact", contact, FIELDS["deals_won"]) or 0
    edited = time.monotonic()
    ds.update("deals", deal["id"], stage_id=won_stage(ds, deal))
    wait_for(
        lambda: (card_value(ds, "contact", contact, FIELDS["deals_won"]) or 0) == won_before + 1,
        "the contact's 'Deals won' field to count the deal",
        10,
        proc,
    )
    assert time.monotonic() - edited < 10
    assert reads_of(amo, deal["id"]) >= 1  # read back from the API, never taken from the payload


def test_fifty_edits_of_one_deal_in_a_burst_are_read_back_at_most_five_times(served):
    amo, proc, base, tmp = served
    ds = amo.dataset
    deal = next(d for d in ds.deals if d["status"] == "open" and not d["is_deleted"])
    before = reads_of(amo, deal["id"])
    for i in range(50):
        ds.update("deals", deal["id"], amount=1000 + i)
    assert amo.deliverer.wait(15)
    wait_for(lambda: _mirror_amount(tmp, deal["id"]) == 1049, "the last amount in the mirror", 10, proc)
    assert 1 <= reads_of(amo, deal["id"]) - before <= 5


def _mirror_amount(tmp, deal_id: int):
    import sqlite3

    conn = sqlite3.connect(f"file:{tmp / 'mirror.db'}?mode=ro", uri=True, timeout=30)
    try:
        row = conn.execute("SELECT amount FROM deals WHERE source = 'amo' AND id = ?", (deal_id,)).fetchone()
        return row and row[0]
    finally:
        conn.close()


def test_forged_deliveries_and_wrong_secrets_are_refused_and_read_nothing(served):
    amo, proc, base, tmp = served
    ds = amo.dataset
    deal = next(d for d in ds.deals if not d["is_deleted"])
    before = reads_of(amo, deal["id"])
    url = f"{base}/hooks/amo/{SECRET}"
    forged = amo.hook_pairs("update_lead", deal["id"], account_id=99999)
    assert requests.post(url, data=forged, timeout=5).status_code == 403
    real = amo.hook_pairs("update_lead", deal["id"])
    assert requests.post(f"{base}/hooks/amo/{'x' * 43}", data=real, timeout=5).status_code == 403
    assert requests.post(f"{base}/hooks/nosuch/{SECRET}", data=real, timeout=5).status_code == 404
    # a genuine delivery after them: once it is read back, the forged ones had read nothing
    assert requests.post(url, data=real, timeout=5).status_code == 200
    wait_for(lambda: reads_of(amo, deal["id"]) > before, "the genuine delivery's read", 10, proc)
    assert reads_of(amo, deal["id"]) == before + 1
    log = open(tmp / "serve.log").read()
    assert "wrong secret" in log and SECRET not in log


def test_our_own_write_back_comes_back_as_an_echo_and_writes_nothing(served):
    amo, proc, base, tmp = served
    ds = amo.dataset
    (deal,) = open_deals(ds, 1)
    contact = deal["contact_ids"][0]
    patches = lambda: sum(r["method"] == "PATCH" for r in amo.request_log)
    refreshes = lambda: logged(tmp / "serve.log", "refresh")
    before, seen = patches(), len(refreshes())
    ds.update("deals", deal["id"], stage_id=won_stage(ds, deal))
    # the won deal's refresh writes the card; that write is a contact update in amoCRM, whose
    # delivery comes back and is refreshed in turn, finding every value already there
    wrote = wait_for(
        lambda: next((i for i, r in enumerate(refreshes()[seen:]) if r["written"]), None) is not None,
        "the write-back of the won deal",
        10,
        proc,
    )
    assert wrote and patches() > before
    written = patches()
    wait_for(
        lambda: any(
            e["ok"] and ("contacts[update][0][id]", str(contact)) in e["pairs"] for e in amo.deliverer.sent
        ),
        "the echo delivery",
        10,
        proc,
    )
    first = next(i for i, r in enumerate(refreshes()[seen:]) if r["written"])
    wait_for(lambda: len(refreshes()) > seen + first + 1, "the echo's refresh", 10, proc)
    assert all(r["written"] == 0 for r in refreshes()[seen + first + 1 :])
    assert patches() == written
