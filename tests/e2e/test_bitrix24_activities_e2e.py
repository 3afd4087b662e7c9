"""Bitrix24 activities end to end: bindings, informational calls and planned activities from the
sandbox portal through a sync to the KPIs, and what reading the bindings costs in requests."""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone

from adapters.bitrix24.adapter import Bitrix24Adapter
from connector.config.kpi import KpiConfig
from connector.config.loader import SourceConfig
from connector.kpi import engine as kpi
from connector.mirror.store import Mirror
from connector.run.sync import sync_source
from sandbox.bitrix24 import Bitrix24Sandbox
from sandbox.data import generate

DAY = 86400


def synced(server, path) -> Mirror:
    cfg = SourceConfig(
        name="b24",
        kind="bitrix24",
        webhook_url=server.webhook_url,
        requests_per_second=500.0,
        bucket_size=10_000,
    )
    mirror = Mirror(str(path))
    results = sync_source(mirror, Bitrix24Adapter(cfg, None))
    assert all(r.status == "ok" for r in results), [(r.stream, r.error) for r in results]
    return mirror


def kpis(m: Mirror, entity_type: str, entity_id: int) -> dict:
    return {r["kpi"]: r["value"] for r in kpi.latest(m, "b24", entity_type, entity_id)}


def test_bound_records_count_planned_and_automated_ones_do_not(tmp_path):
    ds = generate(seed=5, size=60)
    # Fresh cards, so every value below comes from the rows added here.
    co = ds.add("companies", name="Bound Co")
    anna, boris, vera = (ds.add("contacts", name=n) for n in ("Anna", "Boris", "Vera"))
    deal = ds.add("deals", contact_ids=[], company_id=co["id"])
    t = ds.tick()
    # An e-mail on Anna's card that is also about the company's deal: it counts for the company.
    ds.add("activities", channel="email", direction="in", at=t - DAY, entity_type="contact", entity_id=anna["id"],
           also=[("deal", deal["id"])])  # fmt: skip
    # A call on the deal: voximplant names no deal; the call's activity binds it to the deal and
    # to Boris, whose number it was.
    ds.add("calls", direction="out", started_at=t - 2 * DAY, entity_type="deal", entity_id=deal["id"],
           caller=("contact", boris["id"]))  # fmt: skip
    # Vera: a robot's informational call, a meeting planned next week, one real chat.
    ds.add("calls", direction="out", started_at=t - 3 * DAY, entity_type="contact", entity_id=vera["id"],
           informational=True)  # fmt: skip
    ds.add("activities", channel="meeting", direction=None, at=t + 7 * DAY, created_at=t - DAY,
           entity_type="contact", entity_id=vera["id"], planned=True)  # fmt: skip
    ds.add(
        "activities", channel="chat", direction="in", at=t - DAY, entity_type="contact", entity_id=vera["id"]
    )
    with Bitrix24Sandbox(ds, limits=False, cost_model=False) as server:
        m = synced(server, tmp_path / "m.db")
    now = datetime.fromtimestamp(t + 60, timezone.utc)
    kpi.compute(m, "b24", KpiConfig(), now=now)
    company = kpis(m, "company", co["id"])
    assert (company["interactions_30d"], company["calls_90d"]) == (2, 1)  # the e-mail and the call
    assert kpis(m, "contact", boris["id"])["calls_90d"] == 1
    assert kpis(m, "contact", boris["id"])["interactions_30d_call"] == 1
    v = kpis(m, "contact", vera["id"])
    assert (v["calls_90d"], v["interactions_30d"], v["interactions_30d_meeting"]) == (0, 1, 0)
    assert v["days_since_last_interaction"] == 1
    assert v["days_to_next_contact"] == 6  # the meeting a week after `t`, seen a minute later
    stored = dict(m.conn.execute("SELECT activity_id, is_automated FROM calls WHERE is_automated = 1"))
    assert len(stored) >= 1  # kept in the mirror, flagged
    planned = m.conn.execute("SELECT count(*) FROM activities WHERE is_completed = 0").fetchone()[0]
    assert planned == sum(1 for a in ds.activities if a.get("planned"))
    m.close()


def binding_subcalls(server) -> list[int]:
    """Per logged request, how many crm.activity.binding.list calls it carried."""
    out = []
    for r in server.request_log:
        if r["path"].endswith("/batch") or r["path"].endswith("/batch.json"):
            cmd = r["params"].get("cmd") or {}
            if isinstance(cmd, str):
                cmd = json.loads(cmd)
            n = sum(1 for v in cmd.values() if str(v).startswith("crm.activity.binding.list"))
        else:
            n = int("crm.activity.binding.list" in r["path"])
        if n:
            out.append(n)
    return out


def test_bindings_cost_one_request_per_page_of_activities_not_one_per_activity(tmp_path):
    ds = generate(seed=2, size=300)
    with Bitrix24Sandbox(ds, limits=False, cost_model=False) as server:
        m = synced(server, tmp_path / "m.db")
        per_request = binding_subcalls(server)
    activities = len(ds.calls) + sum(1 for a in ds.activities if not a["is_deleted"])
    assert sum(per_request) == activities  # each activity's bindings asked once
    assert max(per_request) <= 50
    # One batch per page of 50 read (pages come in chunks of several), plus one probe call.
    assert len(per_request) <= math.ceil(activities / 50) * 2 + 1
    assert m.conn.execute("SELECT count(DISTINCT activity_id) FROM activity_bindings").fetchone()[0] > 0
    m.close()
