"""End to end on both sandboxes: survey scores typed into card fields, sync, the KPI job (new
per-client KPIs written back and read through the CRM's API, the measures stored), then the
report opened in headless Chromium: no console errors, every chart drawn, numbers = metrics."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from adapters.base import FieldWrite
from connector.config.kpi import KpiConfig, Spend, SpendConfig, SurveyConfig
from connector.mirror.store import Mirror
from connector.report import page as report
from connector.run.kpi_job import run_kpi_job
from connector.run.sync import sync_source
from tests.browser import check_report
from tests.e2e.test_kpi_e2e import NOW, amo, b24, expected, sync_later

NEW_FIELDS = {
    "interactions_30d": "KPI: Interactions, 30 days",
    "response_minutes": "KPI: Response, min",
    "days_since_last_interaction": "KPI: Days since contact",
    "nps_latest": "KPI: NPS",
    "csat_latest": "KPI: CSAT",
}
SURVEY = {"nps": "Survey: NPS", "csat": "Survey: CSAT"}
SCORES = {"nps": [10, 9, 3, 7, 0, 9], "csat": [5, 4, 2]}


def cfg() -> SimpleNamespace:
    spend = [
        Spend(f"2026-{m:02d}-01", c, 1000.0 * m, "") for m in range(1, 12) for c in ("google", "website")
    ]
    kpi = KpiConfig(
        fields={k: {"contact": v, "company": v} for k, v in NEW_FIELDS.items()},
        survey=SurveyConfig(SURVEY["nps"], SURVEY["csat"]),
        spend=SpendConfig("spend.csv", spend),
    )
    return SimpleNamespace(kpi=kpi, timezone="Europe/Moscow")


def type_scores(adapter, ds) -> dict[tuple[str, int], float]:
    """Survey fields made and filled through the CRM's API, as an admin's form would:
    (kind, contact id) -> score."""
    contacts = [c["id"] for c in ds.contacts if not c["is_deleted"]][:6]
    typed = {}
    for kind, label in SURVEY.items():
        f = adapter.create_field("contact", f"SURVEY_{kind.upper()}", label)
        writes = [FieldWrite(cid, {f.key: s}) for cid, s in zip(contacts, SCORES[kind])]
        assert all(r.ok for r in adapter.write_values("contact", writes))
        typed.update({(kind, w.entity_id): w.values[f.key] for w in writes})
    return typed


@pytest.fixture(params=["amocrm", "bitrix24"])
def crm(request, tmp_path):
    make = amo if request.param == "amocrm" else b24
    server = request.getfixturevalue("amo_sandbox" if request.param == "amocrm" else "b24_sandbox")
    src, adapter, read = make(server, tmp_path)
    typed = type_scores(adapter, server.dataset)
    mirror = Mirror(str(tmp_path / "mirror.db"))
    results = sync_source(mirror, adapter)
    assert all(r.status == "ok" for r in results), [(r.stream, r.error) for r in results]
    sync_later(mirror, adapter)  # the typed cards: the sandbox dates changes a little ahead
    yield SimpleNamespace(
        kind=request.param,
        server=server,
        ds=server.dataset,
        src=src,
        adapter=adapter,
        read=read,
        mirror=mirror,
        cfg=cfg(),
        typed=typed,
        tmp=tmp_path,
    )
    adapter.close()
    mirror.close()


def stored(conn) -> dict:
    return {
        tuple(r[:4]): r[4]
        for r in conn.execute(
            "SELECT measure, period, dimension, dimension_value, value FROM metrics WHERE source = 'main'"
        )
    }


def test_sync_kpi_report_in_a_browser(crm):
    res = run_kpi_job(crm.cfg, crm.mirror, crm.src, crm.adapter, now=NOW)
    assert res.failed == 0 and res.metrics is not None and res.metrics.withheld == {}
    assert "team and business measures" in res.line()

    # the survey scores typed into the cards are the clients' latest NPS / CSAT, on the cards too
    keys = dict(
        crm.mirror.conn.execute(
            "SELECT kpi, field_key FROM kpi_fields WHERE entity_type = 'contact'"
        ).fetchall()
    )
    for (kind, cid), score in crm.typed.items():
        assert crm.read("contact", cid, keys[f"{kind}_latest"]) == pytest.approx(score)
    want = expected(crm.mirror)
    assert {k[2] for k in want} >= {keys["nps_latest"], keys["csat_latest"], keys["interactions_30d"]}
    for t, i, key in sorted(want)[:: max(1, len(want) // 15)]:
        assert crm.read(t, i, key) == pytest.approx(want[(t, i, key)]), (t, i, key)

    # the measures: every group computed
    rows = stored(crm.mirror.conn)
    measures = {k[0] for k in rows}
    assert {
        "funnel_deals",
        "revenue",
        "new_clients",
        "manager_win_rate",
        "churn_rate",
        "spend",
        "cac",
        "nps",
        "csat",
    } <= measures
    # every answer: the typed card scores and the CRM's own (amoCRM NPS events, Bitrix24 call
    # votes), which the portal check compares with the sandbox
    own = {
        kind: [
            s
            for (s,) in crm.mirror.conn.execute(
                "SELECT score FROM survey_answers WHERE source = 'main' AND kind = ?", (kind,)
            )
        ]
        for kind in SCORES
    }
    nps, csat = SCORES["nps"] + own["nps"], SCORES["csat"] + own["csat"]
    assert rows[("nps", "all", "all", "all")] == round(
        100 * (sum(s >= 9 for s in nps) - sum(s <= 6 for s in nps)) / len(nps), 2
    )
    assert rows[("csat", "all", "all", "all")] == round(100 * sum(s >= 4 for s in csat) / len(csat), 2)
    won = [d for d in crm.ds.deals if d["status"] == "won" and not d["is_deleted"]]
    assert rows[("deals_won", "all", "all", "all")] == len(won)

    # the report, opened in a real browser
    path = Path(crm.tmp) / "report.html"
    text = report.build(
        crm.mirror.conn, [crm.src], language="en", months=12, churn_days=180, tz="Europe/Moscow"
    )
    report.write(str(path), text)
    page = check_report(path, rows, f"e2e-report-{crm.kind}.png")
    assert int(page.dom.split('data-charts="')[1].split('"')[0]) >= 6

    # diff-only: a sync and a second run send nothing for the new fields either
    sync_later(crm.mirror, crm.adapter)
    again = run_kpi_job(crm.cfg, crm.mirror, crm.src, crm.adapter, now=NOW)
    assert (again.writeback.values, again.failed) == (0, 0)
    assert stored(crm.mirror.conn) == rows
