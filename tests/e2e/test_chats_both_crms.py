"""The same chats through amoCRM and through Bitrix24 give the same chat KPIs.

amoCRM lists each chat message (an `incoming_chat_message` / `outgoing_chat_message` event);
Bitrix24 lists each open-lines session (a `crm.activity.list` item, PROVIDER_ID
IMOPENLINES_SESSION), one per conversation. Both sandboxes serve one dataset, plus the same
conversations on a few contacts written each CRM's way: amoCRM gets every message, Bitrix24 one
session. After a sync of each, every client has the same `interactions_30d_chat`.
"""

from __future__ import annotations

from connector.config.kpi import KpiConfig
from connector.mirror.store import Mirror
from sandbox.amocrm import AmoSandbox
from sandbox.bitrix24 import Bitrix24Sandbox
from sandbox.data import generate
from tests.e2e.test_calls_both_crms import synced as synced_with

KPIS = ("interactions_30d_chat",)


def synced(kind: str, server, tmp_path) -> Mirror:
    """A mirror of the server's account with KPIs computed over ten years of interactions."""
    return synced_with(kind, server, tmp_path, KpiConfig(interactions_days=3650))


def chat_kpis(m: Mirror) -> dict:
    rows = m.conn.execute(
        "SELECT entity_type, entity_id, value FROM kpi_values WHERE kpi = 'interactions_30d_chat'"
    )
    return {(et, eid): v for et, eid, v in rows}


HOUR = 3600


def with_conversations(kind: str):
    """The seed's account plus three conversations of four messages (in, out, in, out, minutes
    apart) on each of three contacts, two days apart, as the CRM lists them. An amoCRM chat
    message belongs to one record: the further records Bitrix24 binds some activities to
    (`also`) are dropped, so both CRMs attribute every chat alike."""
    ds = generate(seed=5, size=600)
    for a in ds.activities:
        a.pop("also", None)
    contacts = [c for c in ds.contacts if not c["is_deleted"]][:3]
    for c in contacts:
        for k in range(3):
            start = ds.now - (k + 1) * 48 * HOUR
            messages = [(start + 10 * 60 * i, "in" if i % 2 == 0 else "out") for i in range(4)]
            for at, direction in messages if kind == "amocrm" else messages[:1]:
                ds.add(
                    "activities",
                    channel="chat",
                    direction=direction,
                    at=at,
                    updated_at=at,
                    entity_type="contact",
                    entity_id=c["id"],
                    responsible_user_id=c["responsible_user_id"],
                    subject="Chat with the client",
                    is_deleted=0,
                )
    return ds, [c["id"] for c in contacts]


def test_same_chats_through_both_crms_give_the_same_conversations(tmp_path):
    amo_ds, talkers = with_conversations("amocrm")
    with AmoSandbox(amo_ds, limits=False) as amo_server:
        amo = synced("amocrm", amo_server, tmp_path)
    b24_ds, _ = with_conversations("bitrix24")
    b24_server = Bitrix24Sandbox(b24_ds, limits=False, cost_model=False).start()
    try:
        b24 = synced("bitrix24", b24_server, tmp_path)
    finally:
        b24_server.stop()
    try:
        amo_kpis, b24_kpis = chat_kpis(amo), chat_kpis(b24)
        assert amo_kpis == b24_kpis
        assert all(amo_kpis["contact", c] >= 3 for c in talkers)  # the three conversations at least
        messages = "SELECT count(*) FROM activities WHERE channel = 'chat' AND entity_id = ?"
        assert all(amo.conn.execute(messages, (c,)).fetchone()[0] >= 12 for c in talkers)
    finally:
        amo.close()
        b24.close()
