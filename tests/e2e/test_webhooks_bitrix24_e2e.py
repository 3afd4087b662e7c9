"""`crm-connector serve` as a real process against the Bitrix24 sandbox (local engine), the
counterpart of test_webhooks_e2e.py: the source signs in as the OAuth app (`auth --code`),
`hooks install` binds its events to the receiver; a deal won in the CRM shows on its contact's
card within seconds; a burst of edits is read back a few times, not once per edit; forged
deliveries read nothing; duplicate deliveries and the echo of our own write-back write nothing.
A webhook-auth source gets its events from an outgoing webhook (the documented manual step).
Waits poll with deadlines; nothing sleeps for timing.
"""

from __future__ import annotations

import secrets
import time

import pytest
import requests

from adapters.bitrix24.events import BOUND
from sandbox.bitrix24 import Bitrix24Sandbox
from sandbox.bitrix24.auth import MEMBER_ID
from sandbox.data import generate
from tests.e2e.serve_helpers import (
    FIELDS,
    b24_calls,
    b24_card_writes,
    b24_reads_of_deal,
    card_value,
    cli,
    free_port,
    logged,
    mirror_rows,
    open_deals,
    serving,
    wait_for,
    won_stage,
)

SECRET = secrets.token_urlsafe(32)


def config_text(tmp, srv, port: int, auth: str, share: float = 0.5) -> str:
    """`share` 0.5 for serve (see `served`), the default 0.15 for nightly runs."""
    fields = "\n".join(f'{k} = "{v}"' for k, v in FIELDS.items())
    return f"""
[storage]
path = "{tmp / "mirror.db"}"
token_path = "{tmp / "tokens.json"}"

[[sources]]
name = "b24"
kind = "bitrix24"
{auth}
webhook_secret = "{SECRET}"

[webhooks]
listen = "127.0.0.1:{port}"
public_url = "http://127.0.0.1:{port}"
debounce_s = 1
share = {share}

[kpi]
targets = ["contact", "company"]

[kpi.fields]
{fields}
"""


# The sandbox enforces the portal's bucket (50 deep, draining 2 a second). At the default share
# (0.15) refreshes get 0.3 requests a second and a bucket of 7, and a won deal costs three
# (the read, the card write, the read of its echo): these tests win a deal every few seconds,
# so they give refreshes half of the portal (the most `share` allows).
@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The OAuth app signed in, a synced mirror with KPIs on the cards, `serve` listening, the
    events bound to it with `hooks install`; then the sandbox enforces the portal's bucket."""
    tmp = tmp_path_factory.mktemp("b24hooks")
    port = free_port()
    with Bitrix24Sandbox(generate(seed=7, size=120), limits=False) as srv:
        config = tmp / "config.toml"
        source = f"""
portal_url = "{srv.url}"
client_id = "sandbox.app"
client_secret = "sandbox-secret"
oauth_url = "{srv.oauth_url}"
application_token = "{srv.application_token}"
"""
        config.write_text(config_text(tmp, srv, port, source, share=0.15))  # the jobs' usual part
        cli(config, "auth", "b24", "--code", srv.issue_code())
        cli(config, "run", "--once")
        config.write_text(config_text(tmp, srv, port, source))
        with serving(config, port, tmp / "serve.log") as proc:
            out = cli(config, "hooks", "install", "b24")
            assert f"{len(BOUND)} events bound online" in out.stdout
            assert SECRET not in out.stdout + out.stderr
            url = f"http://127.0.0.1:{port}/hooks/b24/{SECRET}"
            assert {b.handler for b in srv.events.bindings.values() if not b.offline} == {url}
            # The setup ran without limits, so the portal's bucket is empty from here on (no
            # process can know what an earlier one left in it); the tests run with them.
            srv.limits = True
            yield srv, proc, url, tmp
        assert srv.limit_errors == 0


def refreshes(tmp) -> list[dict]:
    return logged(tmp / "serve.log", "refresh")


def delivery(srv, deal_id: int, token: str) -> list[tuple[str, str]]:
    """The form pairs the portal posts for an update of deal `deal_id`, with `token`."""
    return [
        ("event", "ONCRMDEALUPDATE"),
        ("event_handler_id", "1"),
        ("data[FIELDS][ID]", str(deal_id)),
        ("ts", str(int(time.time()))),
        ("auth[domain]", f"{srv.host}:{srv.port}"),
        ("auth[client_endpoint]", srv.client_endpoint),
        ("auth[member_id]", MEMBER_ID),
        ("auth[application_token]", token),
    ]


def test_a_deal_won_in_the_crm_shows_on_its_contacts_card_within_ten_seconds(served):
    srv, proc, url, tmp = served
    ds = srv.dataset
    deal = open_deals(ds, 1)[0]
    contact = deal["contact_ids"][0]
    won_before = card_value(ds, "contact", contact, FIELDS["deals_won"]) or 0
    since = len(srv.request_log)
    edited = time.monotonic()
    ds.update("deals", deal["id"], stage_id=won_stage(ds, deal))
    wait_for(
        lambda: (card_value(ds, "contact", contact, FIELDS["deals_won"]) or 0) == won_before + 1,
        "the contact's 'Deals won' field to count the deal",
        10,
        proc,
    )
    assert time.monotonic() - edited < 10
    assert b24_reads_of_deal(srv, deal["id"], since) >= 1  # read back, never taken from the delivery


def test_fifty_edits_of_one_deal_in_a_burst_are_read_back_at_most_five_times(served):
    srv, proc, url, tmp = served
    ds = srv.dataset
    deal = open_deals(ds, 1)[0]
    since = len(srv.request_log)
    sent = len(srv.deliveries.sent)
    for i in range(50):
        ds.update("deals", deal["id"], amount=1000 + i)
    assert srv.deliveries.wait_idle(15)
    ours = [e for e in srv.deliveries.sent[sent:] if e["id"] == str(deal["id"])]
    assert len(ours) == 50 and all(e["status"] == 200 for e in ours)
    wait_for(
        lambda: (
            mirror_rows(
                tmp / "mirror.db", "SELECT amount FROM deals WHERE source = 'b24' AND id = ?", deal["id"]
            )
            == [(1049,)]
        ),
        "the last amount in the mirror",
        10,
        proc,
    )
    assert 1 <= b24_reads_of_deal(srv, deal["id"], since) <= 5


def test_forged_deliveries_are_refused_and_read_nothing(served):
    srv, proc, url, tmp = served
    ds = srv.dataset
    deal = next(d for d in ds.deals if not d["is_deleted"])
    since = len(srv.request_log)
    sent = len(srv.deliveries.sent)
    srv.deliveries.forge(url, delivery(srv, deal["id"], "f" * 32))  # a wrong application_token
    assert srv.deliveries.wait_idle(10)
    assert [e["status"] for e in srv.deliveries.sent[sent:]] == [403]
    no_token = [p for p in delivery(srv, deal["id"], "") if p[0] != "auth[application_token]"]
    assert requests.post(url, data=no_token, timeout=5).status_code == 403
    genuine = delivery(srv, deal["id"], srv.application_token)
    assert requests.post(url.replace(SECRET, "x" * 43), data=genuine, timeout=5).status_code == 403
    assert requests.post(url.replace("/b24/", "/nosuch/"), data=genuine, timeout=5).status_code == 404
    # the genuine delivery after them: once it is read back, the refused ones had read nothing
    assert requests.post(url, data=genuine, timeout=5).status_code == 200
    wait_for(lambda: b24_reads_of_deal(srv, deal["id"], since), "the genuine delivery's read", 10, proc)
    assert b24_reads_of_deal(srv, deal["id"], since) == 1
    log = open(tmp / "serve.log").read()
    assert "application_token is not the source's" in log and "wrong secret" in log
    assert SECRET not in log and srv.application_token not in log


def test_duplicate_deliveries_write_nothing_twice(served):
    srv, proc, url, tmp = served
    ds = srv.dataset
    deal = open_deals(ds, 1)[0]
    contact = deal["contact_ids"][0]
    won_before = card_value(ds, "contact", contact, FIELDS["deals_won"]) or 0
    since, seen, sent = len(srv.request_log), len(refreshes(tmp)), len(srv.deliveries.sent)
    srv.deliveries.repeat_next(1)  # the portal's queue sends the deal's event twice
    ds.update("deals", deal["id"], stage_id=won_stage(ds, deal))
    wait_for(
        lambda: (card_value(ds, "contact", contact, FIELDS["deals_won"]) or 0) == won_before + 1,
        "the card to count the won deal",
        10,
        proc,
    )
    assert [(e["id"], e["repeat"], e["status"]) for e in srv.deliveries.sent[sent : sent + 2]] == [
        (str(deal["id"]), False, 200),
        (str(deal["id"]), True, 200),
    ]
    # the write's echo (a contact update) is read back and refreshed too
    wait_for(
        lambda: any(
            m == "crm.contact.list" and ("filter[@ID][0]", str(contact)) in p
            for _, m, p in b24_calls(srv, since)
        ),
        "the echo's read",
        10,
        proc,
    )
    wait_for(lambda: len(refreshes(tmp)) >= seen + 2, "the echo's refresh", 10, proc)
    # and the same delivery once more, late, as a queue server that resends would
    replay = next(e["pairs"] for e in srv.deliveries.sent[sent:] if e["id"] == str(deal["id"]))
    n, reads = len(refreshes(tmp)), b24_reads_of_deal(srv, deal["id"], since)
    assert requests.post(url, data=replay, timeout=5).status_code == 200
    wait_for(
        lambda: b24_reads_of_deal(srv, deal["id"], since) > reads and len(refreshes(tmp)) > n,
        "the replay's refresh",
        10,
        proc,
    )
    assert b24_card_writes(srv, "contact", contact, since) == 1
    assert [r["written"] > 0 for r in refreshes(tmp)[seen:]].count(True) == 1
    assert card_value(ds, "contact", contact, FIELDS["deals_won"]) == won_before + 1


def test_our_own_write_back_comes_back_as_an_echo_and_writes_nothing(served):
    srv, proc, url, tmp = served
    ds = srv.dataset
    deal = open_deals(ds, 1)[0]
    contact = deal["contact_ids"][0]
    since, seen, sent = len(srv.request_log), len(refreshes(tmp)), len(srv.deliveries.sent)
    ds.update("deals", deal["id"], stage_id=won_stage(ds, deal))
    # the won deal's refresh writes the card; that write is a contact update in Bitrix24, whose
    # event comes back and is refreshed in turn, finding every value already there
    wait_for(lambda: any(r["written"] for r in refreshes(tmp)[seen:]), "the write-back", 10, proc)
    assert b24_card_writes(srv, "contact", contact, since) == 1
    wait_for(
        lambda: any(
            e["status"] == 200 and e["event"] == "ONCRMCONTACTUPDATE" and e["id"] == str(contact)
            for e in srv.deliveries.sent[sent:]
        ),
        "the echo delivery",
        10,
        proc,
    )
    first = next(i for i, r in enumerate(refreshes(tmp)[seen:]) if r["written"])
    wait_for(lambda: len(refreshes(tmp)) > seen + first + 1, "the echo's refresh", 10, proc)
    assert all(r["written"] == 0 for r in refreshes(tmp)[seen + first + 1 :])
    assert b24_card_writes(srv, "contact", contact, since) == 1


def test_a_webhook_source_gets_its_events_from_an_outgoing_webhook(tmp_path):
    """`hooks install` cannot bind events through an incoming webhook: it says how to set up an
    outgoing webhook; done as it says (the sandbox's UI step), its events reach `serve`."""
    port = free_port()
    with Bitrix24Sandbox(generate(seed=7, size=120), limits=False) as srv:
        config = tmp_path / "config.toml"
        source = f'webhook_url = "{srv.webhook_url}"'
        config.write_text(config_text(tmp_path, srv, port, source, share=0.15))
        out = cli(config, "hooks", "install", "b24", check=False)
        url = f"http://127.0.0.1:{port}/hooks/b24/{SECRET}"
        assert out.returncode != 0 and "create an outgoing webhook" in out.stderr
        assert url.replace(SECRET, "<webhook_secret>") in out.stderr and SECRET not in out.stderr
        assert srv.events.bindings == {}
        token = srv.add_outgoing_webhook(url, BOUND)
        config.write_text(
            config_text(tmp_path, srv, port, f'{source}\napplication_token = "{token}"', share=0.15)
        )
        cli(config, "run", "--once")
        ds = srv.dataset
        deal = open_deals(ds, 1)[0]
        contact = deal["contact_ids"][0]
        won_before = card_value(ds, "contact", contact, FIELDS["deals_won"]) or 0
        srv.limits = True  # from an empty bucket, as in `served`
        with serving(config, port, tmp_path / "serve.log") as proc:
            # a webhook source has no offline queue: serve catches up with a sync at start
            wait_for(lambda: logged(tmp_path / "serve.log", "job"), "the catch-up sync", 30, proc)
            sent = len(srv.deliveries.sent)
            ds.update("deals", deal["id"], stage_id=won_stage(ds, deal))
            wait_for(
                lambda: (card_value(ds, "contact", contact, FIELDS["deals_won"]) or 0) == won_before + 1,
                "the card to count the won deal",
                10,
                proc,
            )
            assert [(e["url"], e["status"]) for e in srv.deliveries.sent[sent : sent + 1]] == [(url, 200)]
            wait_for(
                lambda: any(r["written"] for r in logged(tmp_path / "serve.log", "refresh")),
                "the refresh's log line",
                10,
                proc,
            )  # written by the refresh, not the sync
        assert srv.limit_errors == 0
