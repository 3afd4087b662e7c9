"""Survey scores in card fields ([kpi.survey]): found once in the CRM, read from the mirrored
cards, used by the KPIs and the measures; a dry run sends nothing."""

from __future__ import annotations

import json
from types import SimpleNamespace

from adapters.base import CrmField
from connector.config.kpi import KpiConfig, SurveyConfig
from connector.config.loader import SourceConfig
from connector.kpi import engine as kpi
from connector.kpi import survey
from connector.run.kpi_job import run_kpi_job
from tests.fakes import FakeAdapter
from tests.unit.test_kpi import NOW, S, build_mirror, values

NPS = CrmField(key="UF_CRM_NPS", name="NPS", type="double")
CSAT = CrmField(key="UF_CRM_CSAT", name="CSAT", type="double")


def cards(m, rows) -> None:
    """rows: (table, id, raw dict, updated_at)."""
    for table, i, raw, at in rows:
        m.conn.execute(
            f"UPDATE {table} SET raw = ?, updated_at = ? WHERE source = ? AND id = ?",
            (json.dumps(raw), at, S, i),
        )
    m.conn.commit()


def setup():
    m = build_mirror()
    cards(
        m,
        [
            ("contacts", 1, {"UF_CRM_NPS": "9", "UF_CRM_CSAT": 4}, "2026-11-01T00:00:00Z"),
            ("contacts", 2, {"UF_CRM_NPS": "11"}, "2026-11-01T00:00:00Z"),  # off the scale
            ("contacts", 3, {"UF_CRM_NPS": "", "UF_CRM_CSAT": "five"}, "2026-11-01T00:00:00Z"),
            ("contacts", 5, {"UF_CRM_NPS": "3"}, "2026-11-01T00:00:00Z"),  # deleted card
            ("companies", 10, {"UF_CRM_NPS": 6}, "2026-10-01T00:00:00Z"),
        ],
    )
    adapter = FakeAdapter(S, fields=[NPS, CSAT])
    adapter.fields["company"] = [NPS, CSAT]
    cfg = SimpleNamespace(
        kpi=KpiConfig(currency_rates={"USD": 90.0}, survey=SurveyConfig("NPS", "CSAT")), timezone="UTC"
    )
    src = SourceConfig(name=S, kind="bitrix24", webhook_url="https://p.bitrix24.ru/rest/1/abc/")
    return m, adapter, cfg, src


def test_scores_on_the_scale_only():
    assert [survey.score(v, "nps") for v in ("9", 0, "7,5", " 10 ", "11", "-1", "x", None, ["8"])] == [
        9,
        0,
        7.5,
        10,
        None,
        None,
        None,
        None,
        8,
    ]
    assert [survey.score(v, "csat") for v in (1, 5, 0, 6)] == [1, 5, None, None]


def test_card_fields_feed_kpis_and_measures_and_are_looked_up_once():
    m, adapter, cfg, src = setup()
    res = run_kpi_job(cfg, m, src, adapter, now=NOW)
    assert adapter.requests == 2  # one field listing per card type, no writes
    assert values(m, "contact", 1)["nps_latest"] == 9 and values(m, "contact", 1)["csat_latest"] == 4
    assert "nps_latest" not in values(m, "contact", 2) and "csat_latest" not in values(m, "contact", 3)
    assert values(m, "company", 10)["nps_latest"] == 6
    assert "csat_latest" not in values(m, "company", 10)  # no CSAT on that card
    measures = {
        (r[0], r[1]): r[2]
        for r in m.conn.execute(
            "SELECT measure, period, value FROM metrics WHERE measure IN ('nps', 'nps_answers', 'csat')"
        )
    }
    # contact 1 (9: promoter) and company 10 (6: detractor); the deleted card does not count
    assert measures[("nps_answers", "all")] == 2 and measures[("nps", "all")] == 0
    assert measures[("nps", "2026-11-01")] == 100 and measures[("nps", "2026-10-01")] == -100
    assert measures[("csat", "all")] == 100
    assert res.metrics.rows > 0

    again = run_kpi_job(cfg, m, src, adapter, now=NOW)
    assert adapter.requests == 2 and again.metrics.rows == res.metrics.rows  # keys remembered


def test_a_dry_run_asks_the_crm_nothing():
    m, adapter, cfg, src = setup()
    plan = run_kpi_job(cfg, m, src, adapter, now=NOW, dry_run=True)
    assert adapter.requests == 0 and plan.metrics is None
    assert m.conn.execute("SELECT count(*) FROM metrics").fetchone()[0] == 0


def test_a_renamed_field_is_looked_up_again():
    m, adapter, cfg, src = setup()
    run_kpi_job(cfg, m, src, adapter, now=NOW)
    adapter.fields["contact"].append(CrmField(key="UF_CRM_SCORE", name="Score", type="double"))
    cards(m, [("contacts", 4, {"UF_CRM_SCORE": 2}, "2026-11-02T00:00:00Z")])
    cfg.kpi.survey = SurveyConfig("Score", None)
    run_kpi_job(cfg, m, src, adapter, now=NOW)
    assert adapter.requests == 4  # both card types listed again for the new name
    assert values(m, "contact", 4)["nps_latest"] == 2
    run_kpi_job(cfg, m, src, adapter, now=NOW)
    assert adapter.requests == 5  # companies lack it: asked again, with a warning


def test_amocrm_cards_hold_values_in_their_custom_field_list():
    m = build_mirror()
    raw = {"custom_fields_values": [{"field_id": 77, "values": [{"value": "8"}]}]}
    cards(m, [("contacts", 2, raw, "2026-11-01T00:00:00Z")])
    rows = survey.card_scores(m.conn, S, "amocrm", {"contact": {"nps": "77"}})
    assert rows == [("contact", 2, "nps", 8.0, "2026-11-01T00:00:00Z")]
    kpi.compute(m, S, KpiConfig(), now=NOW, card_survey=rows)
    assert values(m, "contact", 2)["nps_latest"] == 8
