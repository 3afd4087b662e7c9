"""Bitrix24 event handlers end to end: the adapter binds them on the sandbox portal (as an OAuth
app), a local receiver gets the deliveries, `parse_hook` and `read_changes` turn them into the
rows a sync writes; the offline queue keeps what the receiver missed; a webhook-auth source
gets its events from an outgoing webhook."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from adapters.base import FieldWrite, Page
from adapters.bitrix24 import events
from adapters.bitrix24.adapter import Bitrix24Adapter
from adapters.errors import SourceError
from adapters.hooks import Change, HookRefused
from connector.config.loader import SourceConfig
from connector.mirror.tokens import TokenStore
from sandbox.bitrix24 import Bitrix24Sandbox
from tests.hook_receiver import Receiver


@pytest.fixture
def srv(b24_dataset):
    with Bitrix24Sandbox(b24_dataset, limits=False) as s:
        yield s


@pytest.fixture
def app(srv, tmp_path) -> Bitrix24Adapter:
    cfg = SourceConfig(
        name="b24",
        kind="bitrix24",
        portal_url=srv.url,
        client_id="sandbox.app",
        client_secret="sandbox-secret",
        oauth_url=srv.oauth_url,
        requests_per_second=50.0,
        application_token=srv.application_token,
    )
    a = Bitrix24Adapter(cfg, TokenStore(str(tmp_path / "tokens.json")))
    a.exchange_code(srv.issue_code())
    yield a
    a.close()


@pytest.fixture
def rx():
    with Receiver() as r:
        yield r


def synced(a: Bitrix24Adapter, stream: str, ids: set) -> Page:
    """The rows a full sync of `stream` writes for `ids`."""
    out = Page()
    for page in a.fetch(stream, None, datetime.now(timezone.utc), full=True):
        for table, rows in page.rows.items():
            out.rows.setdefault(table, []).extend(
                r for r in rows if (r.get("id") if table != "deal_contacts" else r["deal_id"]) in ids
            )
    return out


def test_install_edit_deliver_parse_and_read_back(srv, b24_dataset, app, rx):
    msg = app.install_hooks(rx.url)
    assert f"{2 * len(events.BOUND)} bindings added" in msg
    assert len(srv.events.bindings) == 2 * len(events.BOUND)
    assert "0 bindings added" in app.install_hooks(rx.url)  # again: nothing to do

    deal = next(d for d in b24_dataset.deals if d["contact_ids"] and not d["is_deleted"])
    b24_dataset.update("deals", deal["id"], name="Edited by a manager", amount=777.0)
    changes = app.parse_hook(rx.wait(1)[0])
    assert changes == [Change("deals", deal["id"])]
    before = app.requests
    page = app.read_changes(changes)
    assert app.requests - before == 1
    assert page.rows["deals"][0]["name"] == "Edited by a manager"
    assert page.rows["deals"][0]["amount"] == 777.0
    sync = synced(app, "deals", {deal["id"]})
    assert page.rows["deals"] == sync.rows["deals"]
    assert page.rows["deal_contacts"] == sync.rows["deal_contacts"] and page.rows["deal_contacts"]


def test_deletions_tasks_and_calls(srv, b24_dataset, app, rx):
    app.install_hooks(rx.url)
    deal = next(d for d in b24_dataset.deals if not d["is_deleted"])["id"]
    b24_dataset.delete("deals", deal)
    task = next(t for t in b24_dataset.tasks if not t["is_deleted"])["id"]
    b24_dataset.update("tasks", task, is_completed=True)
    call = next(c for c in b24_dataset.calls if c.get("activity_id"))
    b24_dataset.update("calls", call["id"], duration_s=321)
    changes = [c for pairs in rx.wait(3) for c in app.parse_hook(pairs)]
    assert changes == [
        Change("deals", deal, True),
        Change("tasks", task),
        Change("activities", call["activity_id"]),
    ]
    page = app.read_changes(changes)
    assert page.deleted == {"deals": [deal]}
    assert page.rows["tasks"][0]["id"] == task and page.rows["tasks"][0]["is_completed"] == 1
    assert page.rows["activities"][0]["id"] == str(call["activity_id"])
    assert [(c["id"], c["duration_s"]) for c in page.rows["calls"]] == [(call["id"], 321)]


def test_our_own_write_back_comes_back_as_a_contact_update(srv, b24_dataset, app, rx):
    app.install_hooks(rx.url)
    field = app.create_field("contact", "KPI_WIN_RATE", "Win rate")
    contact = next(c for c in b24_dataset.contacts if not c["is_deleted"])["id"]
    assert app.write_values("contact", [FieldWrite(contact, {field.key: 0.5})])[0].ok
    assert app.parse_hook(rx.wait(1)[0]) == [Change("contacts", contact)]
    srv.deliveries.wait_idle()
    assert len(rx.got) == 1
    # online it comes back, but the offline queue keeps nothing of ours (auth_connector) ...
    assert srv.events.queue == [] and app.missed_changes()[0] == []
    # ... while a manager's edit of the same card is kept there
    b24_dataset.update("contacts", contact, name="Edited by a manager")
    assert app.missed_changes()[0] == [Change("contacts", contact)]


def test_a_forged_delivery_is_refused(srv, b24_dataset, app, rx):
    app.install_hooks(rx.url)
    b24_dataset.update("deals", b24_dataset.deals[0]["id"], name="x")
    genuine = rx.wait(1)[0]
    forged = [(k, "f" * 32 if k == "auth[application_token]" else v) for k, v in genuine]
    srv.deliveries.forge(rx.url, forged)
    with pytest.raises(HookRefused, match="not the source's"):
        app.parse_hook(rx.wait(2)[1])


def test_missed_while_down_comes_back_once_per_object_and_clears(srv, b24_dataset, app):
    down = Receiver()
    app.install_hooks(down.url)
    down.close()
    deal, contact = (
        next(r for r in rows if not r["is_deleted"])["id"]
        for rows in (b24_dataset.deals, b24_dataset.contacts)
    )
    for i in range(3):
        b24_dataset.update("deals", deal, name=f"edit {i}")
    for i in range(2):
        b24_dataset.update("contacts", contact, name=f"edit {i}")
    assert srv.deliveries.wait_idle()
    assert len(srv.deliveries.sent) == 5 and all(e["status"] is None for e in srv.deliveries.sent)

    changes, process_id = app.missed_changes()
    assert sorted(changes, key=lambda c: c.table) == [Change("contacts", contact), Change("deals", deal)]
    page = app.read_changes(changes)
    assert page.rows["deals"][0]["name"] == "edit 2"
    assert app.missed_changes()[0] == []  # handed to our process: hidden, not lost
    app.clear_missed(process_id)
    assert srv.events.queue == []
    assert app.missed_changes()[0] == []


def test_remove_hooks_unbinds_everything(srv, b24_dataset, app, rx):
    app.install_hooks(rx.url)
    assert f"{2 * len(events.BOUND)} event bindings removed" in app.remove_hooks(rx.url)
    assert srv.events.bindings == {}
    b24_dataset.update("deals", b24_dataset.deals[0]["id"], name="x")
    assert srv.deliveries.wait_idle() and rx.got == []


def test_a_webhook_source_gets_events_from_an_outgoing_webhook(srv, b24_dataset, rx):
    token = srv.add_outgoing_webhook(rx.url, events.BOUND)
    cfg = SourceConfig(
        name="b24",
        kind="bitrix24",
        webhook_url=srv.webhook_url,
        requests_per_second=50.0,
        application_token=token,
    )
    a = Bitrix24Adapter(cfg, None)
    with pytest.raises(SourceError, match="outgoing webhook"):
        a.install_hooks(rx.url)
    assert a.missed_changes() is None
    lead = next(r for r in b24_dataset.leads if not r["is_deleted"])["id"]
    b24_dataset.update("leads", lead, title="Hot")
    changes = a.parse_hook(rx.wait(1)[0])
    assert changes == [Change("leads", lead)]
    assert a.read_changes(changes).rows["leads"][0]["title"] == "Hot"
    other = Bitrix24Adapter(
        SourceConfig(
            name="b24", kind="bitrix24", webhook_url=srv.webhook_url, application_token=srv.application_token
        ),
        None,
    )
    with pytest.raises(HookRefused):  # the app's token is not this webhook's
        other.parse_hook(rx.got[0])
