"""End to end against both sandboxes: sync, KPIs, write-back, read the cards back over the API."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest
import requests

from adapters import redact
from connector.config.kpi import KpiConfig
from connector.config.loader import SourceConfig
from connector.mirror.store import Mirror
from connector.mirror.tokens import TokenStore
from connector.run.kpi_job import run_kpi_job
from connector.run.sync import sync_source

FIELDS = {
    "win_rate": "KPI: Win rate, %",
    "revenue_won": "KPI: Lifetime revenue",
    "avg_deal_value": "KPI: Average deal",
    "deals_total": "KPI: Deals",
    "calls_90d": {"contact": "KPI: Calls, 90 days"},
}
NOW = datetime.now(timezone.utc).replace(microsecond=0)


def kpi_cfg() -> KpiConfig:
    return KpiConfig(
        fields={k: v if isinstance(v, dict) else {"contact": v, "company": v} for k, v in FIELDS.items()}
    )


def amo(server, tmp_path):
    from adapters.amocrm.adapter import AmoCrmAdapter

    src = SourceConfig(
        name="main",
        kind="amocrm",
        base_url=server.url,
        access_token=server.access_token,
        requests_per_second=500.0,
    )
    redact.register(src.access_token)

    def read(entity_type, entity_id, key):
        plural = "contacts" if entity_type == "contact" else "companies"
        r = requests.get(
            f"{server.url}/api/v4/{plural}/{entity_id}",
            timeout=10,
            headers={"Authorization": f"Bearer {server.access_token}"},
        )
        r.raise_for_status()
        for f in r.json().get("custom_fields_values") or []:
            if str(f["field_id"]) == str(key):
                return float(f["values"][0]["value"]) if f["values"] else None
        return None

    return src, AmoCrmAdapter(src, TokenStore(str(tmp_path / "tokens.json"))), read


def b24(server, tmp_path):
    from adapters.bitrix24.adapter import Bitrix24Adapter

    src = SourceConfig(
        name="main",
        kind="bitrix24",
        webhook_url=server.webhook_url,
        requests_per_second=500.0,
        bucket_size=10_000,
    )
    redact.register(src.webhook_url)

    def read(entity_type, entity_id, key):
        r = requests.post(f"{server.webhook_url}crm.{entity_type}.get", json={"id": entity_id}, timeout=10)
        r.raise_for_status()
        v = r.json()["result"].get(key)
        return None if v in (None, "") else float(v)

    return src, Bitrix24Adapter(src, TokenStore(str(tmp_path / "tokens.json"))), read


def sync_later(mirror, adapter, seconds=60):
    """A sync whose run starts a minute ahead: the sandbox dates mutations a little in the future."""
    run = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=seconds)
    for stream in adapter.stream_names():
        for page in adapter.fetch(stream, mirror.get_bookmark("main", stream), run):
            mirror.save_page("main", stream, page)


@pytest.fixture(params=["amocrm", "bitrix24"])
def crm(request, tmp_path):
    make = amo if request.param == "amocrm" else b24
    server = request.getfixturevalue("amo_sandbox" if request.param == "amocrm" else "b24_sandbox")
    src, adapter, read = make(server, tmp_path)
    mirror = Mirror(str(tmp_path / "mirror.db"))
    results = sync_source(mirror, adapter)
    assert all(r.status == "ok" for r in results), [(r.stream, r.error) for r in results]
    yield SimpleNamespace(
        server=server,
        ds=server.dataset,
        src=src,
        adapter=adapter,
        read=read,
        mirror=mirror,
        cfg=SimpleNamespace(kpi=kpi_cfg()),
    )
    adapter.close()
    mirror.close()


def kpi(crm):
    return run_kpi_job(crm.cfg, crm.mirror, crm.src, crm.adapter, now=NOW)


def expected(mirror, precision=2) -> dict:
    """(entity_type, id, field key) -> current rounded value, for every mapped, non-empty KPI."""
    rows = mirror.conn.execute(
        """
        SELECT l.entity_type, l.entity_id, f.field_key, round(l.value, ?) FROM kpi_latest l
        JOIN kpi_fields f ON f.source = l.source AND f.entity_type = l.entity_type AND f.kpi = l.kpi
        WHERE l.value IS NOT NULL""",
        (precision,),
    ).fetchall()
    return {(t, i, k): v for t, i, k, v in rows}


def logged(mirror, since_id=0) -> set:
    return {
        tuple(r)
        for r in mirror.conn.execute(
            "SELECT entity_type, entity_id, field FROM writeback_log WHERE id > ? AND status = 'ok'",
            (since_id,),
        )
    }


def assert_card_shows(crm, want: dict, entity_type: str, entity_id: int) -> None:
    """Read the card back through the CRM's own API: every expected field holds its value."""
    for (t, i, key), v in want.items():
        if (t, i) == (entity_type, entity_id):
            assert crm.read(t, i, key) == pytest.approx(v), (t, i, key)


def test_kpis_written_read_back_then_diff_only(crm):
    first = kpi(crm)
    want = expected(crm.mirror)
    assert first.failed == 0 and first.writeback.values == len(want) > 50
    # a sample of cards read back through the CRM's own API shows every mapped value
    cards = sorted({(t, i) for t, i, _ in want})
    for t, i in cards[:: max(1, len(cards) // 12)]:
        assert_card_shows(crm, want, t, i)

    # our writes bumped updated_at: the next sync re-reads those cards, and nothing is re-sent
    sync_later(crm.mirror, crm.adapter)
    second = kpi(crm)
    assert (second.writeback.values, second.writeback.requests) == (0, 0)

    # one deal changes in the CRM: only its clients' affected fields are written
    won = next(
        d
        for d in crm.ds.deals
        if d["status"] == "won"
        and not d["is_deleted"]
        and d.get("contact_ids")
        and (d.get("amount") or 0) > 0
    )
    crm.ds.update("deals", won["id"], amount=won["amount"] + 1000)
    last_log = crm.mirror.conn.execute("SELECT max(id) FROM writeback_log").fetchone()[0]
    before = expected(crm.mirror)
    sync_later(crm.mirror, crm.adapter, seconds=120)
    third = kpi(crm)
    after = expected(crm.mirror)
    changed = {k for k in after if before.get(k) != after[k]}
    clients = {("contact", c) for c in won["contact_ids"]} | (
        {("company", won["company_id"])} if won.get("company_id") else set()
    )
    keys = {
        (t, f.split("|")[0])
        for t, f in crm.mirror.conn.execute(
            "SELECT entity_type, field_key FROM kpi_fields WHERE kpi IN ('revenue_won', 'avg_deal_value')"
        )
    }
    assert changed and {(t, i) for t, i, _ in changed} <= clients
    assert {(t, k) for t, _, k in changed} <= keys
    assert logged(crm.mirror, last_log) == changed
    assert third.writeback.values == len(changed) and third.failed == 0
    for t, i, key in changed:
        assert crm.read(t, i, key) == pytest.approx(after[(t, i, key)])


def add_text_field(crm, entity_type: str, label: str) -> None:
    """A text field with this label, made through the CRM's own API (as an admin would)."""
    if crm.src.kind == "amocrm":
        plural = "contacts" if entity_type == "contact" else "companies"
        r = requests.post(
            f"{crm.server.url}/api/v4/{plural}/custom_fields",
            timeout=10,
            json=[{"name": label, "type": "text"}],
            headers={"Authorization": f"Bearer {crm.server.access_token}"},
        )
    else:
        r = requests.post(
            f"{crm.server.webhook_url}crm.{entity_type}.userfield.add",
            timeout=10,
            json={
                "fields": {"FIELD_NAME": "NOTES_DEALS", "USER_TYPE_ID": "string", "EDIT_FORM_LABEL": label}
            },
        )
    r.raise_for_status()


def test_non_numeric_field_in_the_crm_is_a_clear_error(crm):
    from adapters.errors import FieldTypeError

    add_text_field(crm, "contact", FIELDS["deals_total"])
    with pytest.raises(FieldTypeError) as err:
        kpi(crm)
    msg = str(err.value)
    kind = "text" if crm.src.kind == "amocrm" else "string"
    assert f"source 'main': contact field '{FIELDS['deals_total']}'" in msg and f"'{kind}'" in msg
    assert "deals_total" in msg and "\n" not in msg
    # nothing was sent to any card
    assert crm.mirror.conn.execute("SELECT count(*) FROM writeback_log").fetchone()[0] == 0
    assert crm.mirror.conn.execute("SELECT count(*) FROM kpi_written").fetchone()[0] == 0
    # mapping the KPI to another label is the fix the message names
    crm.cfg.kpi.fields["deals_total"] = {"contact": "KPI: Deals (all)", "company": FIELDS["deals_total"]}
    res = kpi(crm)
    assert res.failed == 0 and res.writeback.values > 0


def test_rejected_card_does_not_stop_its_batch_and_is_logged(crm):
    plan = run_kpi_job(crm.cfg, crm.mirror, crm.src, crm.adapter, now=NOW, dry_run=True)
    contacts = sorted({c.entity_id for c in plan.writeback.changes if c.entity_type == "contact"})
    assert len(contacts) > 5
    gone = contacts[2]  # in the middle of the first batch of 50 cards
    crm.ds.delete("contacts", gone)  # deleted in the CRM after the sync: the CRM rejects it
    res = kpi(crm)
    assert res.failed == 1
    failed = crm.mirror.conn.execute(
        "SELECT DISTINCT entity_type, entity_id FROM writeback_log WHERE status = 'failed'"
    ).fetchall()
    assert failed == [("contact", gone)]
    error = crm.mirror.conn.execute("SELECT error FROM writeback_log WHERE status = 'failed'").fetchone()[0]
    assert error and "not found" in error.lower()
    # every other card was written, its neighbours in the same batch included
    want = expected(crm.mirror)
    assert logged(crm.mirror) == {k for k in want if k[:2] != ("contact", gone)}
    for i in (contacts[1], contacts[3]):
        assert_card_shows(crm, want, "contact", i)
    assert res.writeback.values == len(want)  # the rejected card's values were attempted too
