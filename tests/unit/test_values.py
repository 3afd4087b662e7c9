"""Bad values are never stored as something else.

`adapters.values` parses numbers with units and locale separators when the reading is
unambiguous and refuses the rest; `Item` turns junk into NULL plus a problem, a missing
required field into a skipped item; `records` names stream, item and field when a parser
still fails; the store refuses a stage the pipeline does not have; sync reports it all in the
run result, `sync_runs.warnings` and one log line per stream.
"""

from __future__ import annotations

import json
import logging

import pytest

from adapters.amocrm import parsers as amo
from adapters.base import Page
from adapters.bitrix24 import parsers as b24
from adapters.errors import StreamError
from adapters.streams import Ctx, records
from adapters.values import BadValue, Item, amount, integer, number, offset_moment, unix_moment
from connector.mirror.store import Mirror
from connector.run.sync import sync_source
from tests.unit.test_sync import Scripted


@pytest.mark.parametrize(
    "text, value",
    [
        ("12,5 руб", 12.5),
        ("1 234,50", 1234.5),
        ("1,234.50", 1234.5),
        ("1.234,50", 1234.5),
        ("1500.00", 1500.0),
        ("$ 1,234.50", 1234.5),
        ("100 ₽", 100.0),
        ("-5", -5.0),
        ("0,5", 0.5),
        ("1\u00a0234", 1234.0),
        ("1 234 567", 1234567.0),
        ("1,234,567", 1234567.0),
        (42, 42.0),
        ("", None),
        (None, None),
    ],
)
def test_amounts_with_units_and_locale_separators_parse_when_unambiguous(text, value):
    assert amount(text) == value


def test_only_amounts_may_carry_a_unit():
    assert number("1 234,50") == 1234.5
    for text in ("12 мин", "12,5 руб", "5 min"):
        with pytest.raises(BadValue, match="not a number"):
            number(text)


@pytest.mark.parametrize(
    "text, why",
    [
        ("1,234", "ambiguous"),
        ("1e400", "not a finite number"),
        ("nan", "not a finite number"),
        ("Infinity", "not a finite number"),
        (float("inf"), "not a finite number"),
        ("abc", "not a number"),
        ("12 5", "odd digit groups"),
        ("12.5.6", "odd digit groups"),
        ("1_000", "not a number"),
        ("12 руб 5", "not a number"),
        ([1], "a list"),
        (True, "a boolean"),
        ({"v": 1}, "a dict"),
    ],
)
def test_ambiguous_or_junk_numbers_are_refused_with_a_reason(text, why):
    with pytest.raises(BadValue, match=why):
        amount(text)


def test_whole_numbers_and_moments():
    assert integer("42") == 42 and integer("42.0") == 42
    with pytest.raises(BadValue, match="not a whole number"):
        integer("4.5")
    assert offset_moment("2026-11-23T13:00:00+03:00") == "2026-11-23T10:00:00Z"
    assert unix_moment(1700000000) == unix_moment("1700000000") == "2023-11-14T22:13:20Z"
    assert unix_moment(0) is None and offset_moment("") is None
    for junk in ("yesterday", 123, "2026-13-40"):
        with pytest.raises(BadValue, match="not a time"):
            offset_moment(junk)
    for junk in ("yesterday", -5, 1e20, [1]):
        with pytest.raises(BadValue):
            unix_moment(junk)


def test_item_gives_null_and_a_problem_for_junk_and_default_only_for_absent():
    v = Item({"a": "abc", "b": "", "n": {"x": "7"}})
    assert v.get("a", number, default=0) is None  # junk is not "nothing"
    assert v.get("b", number, default=0) == 0 and v.get("c", number, default=0) == 0
    assert v.get("n.x", integer) == 7
    assert v.problems == [{"field": "a", "value": "abc", "why": "not a number", "skipped": False}]


B24_DEAL = {
    "ID": "12",
    "TITLE": "t",
    "CATEGORY_ID": "0",
    "STAGE_ID": "NEW",
    "STAGE_SEMANTIC_ID": "P",
    "OPPORTUNITY": "100.00",
    "CURRENCY_ID": "RUB",
    "ASSIGNED_BY_ID": "1",
    "DATE_CREATE": "2026-11-01T10:00:00+03:00",
    "DATE_MODIFY": "2026-11-02T10:00:00+03:00",
}


def b24_deals(*items):
    return records(list(items), b24.deal, Ctx(), "deals")


def test_bitrix24_deal_values_that_do_not_parse_are_null_and_reported():
    page = b24_deals(
        dict(B24_DEAL, OPPORTUNITY="12,5 руб"),
        dict(B24_DEAL, ID="13", OPPORTUNITY="1e400"),
        dict(B24_DEAL, ID="14", DATE_CREATE="вчера", ASSIGNED_BY_ID="bob"),
    )
    got = {d["id"]: d for d in page.rows["deals"]}
    assert got[12]["amount"] == 12.5
    assert got[13]["amount"] is None
    assert (got[14]["created_at"], got[14]["responsible_user_id"], got[14]["amount"]) == (None, None, 100.0)
    assert [(p["item"], p["field"], p["value"], p["why"]) for p in page.problems] == [
        ("13", "OPPORTUNITY", "1e400", "not a finite number"),
        ("14", "ASSIGNED_BY_ID", "bob", "not a number"),
        ("14", "DATE_CREATE", "вчера", "not a time"),
    ]


def test_bitrix24_deal_without_stage_or_with_unknown_semantics_is_skipped_not_open():
    page = b24_deals({"ID": "20"}, dict(B24_DEAL, ID="21", STAGE_SEMANTIC_ID="X"), "junk", B24_DEAL)
    assert [d["id"] for d in page.rows["deals"]] == [12]
    assert [(p["item"], p["field"], p["skipped"]) for p in page.problems] == [
        ("20", "CATEGORY_ID", True),
        ("21", "STAGE_SEMANTIC_ID", True),
        ("#3 on the page", None, True),
    ]


def test_amocrm_deal_only_its_id_is_skipped_and_a_trashed_one_only_marks_the_deal_deleted():
    deal = {"id": 5, "status_id": 7, "pipeline_id": 3, "price": 10, "created_at": 1700000000}
    page = records(
        [
            {"id": 6},
            {"id": 7, "is_deleted": True, "updated_at": 1},
            deal,
            dict(deal, id=8, price=float("nan"), created_at="x"),
        ],
        amo.deal_rows,
        Ctx(),
        "deals",
    )
    assert [d["id"] for d in page.rows["deals"]] == [5, 8]
    assert page.rows["deals"][1]["amount"] is None and page.rows["deals"][1]["created_at"] is None
    assert page.deleted == {"deals": [7]}
    assert [(p["item"], p["field"], p["value"], p["skipped"]) for p in page.problems] == [
        (6, "status_id", None, True),
        (8, "price", "nan", False),
        (8, "created_at", "x", False),
    ]


def test_an_unexpected_error_names_stream_item_and_field():
    def parse(item, ctx):
        v = Item(item)
        return Page(rows={"t": [{"id": v.get("owner", lambda x: x.get("id"))}]})

    with pytest.raises(
        StreamError,
        match=r"stream 'deals': cannot read item 9, field owner: "
        r"AttributeError: 'str' object has no attribute 'get'",
    ):
        records([{"id": 9, "owner": "bob"}], parse, Ctx(), "deals")


def stages(m: Mirror) -> None:
    m.save_page(
        "s",
        "pipelines",
        Page(
            rows={
                "stages": [
                    {"pipeline_id": 0, "id": "NEW", "entity": "deal"},
                    {"pipeline_id": 0, "id": "WON", "entity": "deal"},
                    {"pipeline_id": -1, "id": "NEW", "entity": "lead"},
                ]
            }
        ),
    )


def test_a_stage_the_pipeline_does_not_have_is_not_stored_and_the_old_row_stays(tmp_path):
    with Mirror(str(tmp_path / "m.db")) as m:
        stages(m)
        old = {"id": 1, "pipeline_id": 0, "stage_id": "NEW", "status": "open"}
        m.save_page(
            "s",
            "deals",
            Page(rows={"deals": [old], "deal_contacts": [{"deal_id": 1, "contact_id": 4, "is_main": 1}]}),
        )
        page = Page(
            rows={
                "deals": [
                    {"id": 1, "pipeline_id": 0, "stage_id": "C9:NOPE", "status": "open"},
                    {"id": 2, "pipeline_id": 0, "stage_id": "WON", "status": "won"},
                    {"id": 3, "pipeline_id": 5, "stage_id": "C5:NEW", "status": "open"},
                ],
                "deal_contacts": [],
            }
        )
        assert m.save_page("s", "deals", page) == 2
        m.save_page("s", "leads", Page(rows={"leads": [{"id": 7, "status_id": "GONE", "status": "open"}]}))
        deals = m.conn.execute("SELECT id, stage_id FROM deals ORDER BY id").fetchall()
        links = m.conn.execute("SELECT deal_id, contact_id FROM deal_contacts").fetchall()
        leads = m.conn.execute("SELECT count(*) FROM leads").fetchone()[0]
    # 1 keeps its old row and links; 3 sits in a pipeline the mirror has no stages for yet.
    assert deals == [(1, "NEW"), (2, "WON"), (3, "C5:NEW")] and links == [(1, 4)] and leads == 0
    assert page.problems == [
        {
            "item": 1,
            "field": "stage_id",
            "value": "C9:NOPE",
            "why": "pipeline 0 has no such stage",
            "skipped": True,
        }
    ]


def test_sync_reports_problems_in_the_result_sync_runs_and_one_log_line(tmp_path, caplog):
    bad = [
        {"item": i, "field": "OPPORTUNITY", "value": "1e400", "why": "not a finite number", "skipped": False}
        for i in range(30)
    ]
    adapter = Scripted(
        {
            "deals": [
                Page(rows={"contacts": [{"id": 1}]}, problems=bad[:25]),
                Page(problems=bad[25:], bookmark="b"),
            ],
            "contacts": [Page(rows={"contacts": [{"id": 2}]}, bookmark="c")],
        }
    )
    caplog.set_level(logging.INFO, logger="crm_connector.sync")
    with Mirror(str(tmp_path / "m.db")) as m:
        results = {r.stream: r for r in sync_source(m, adapter)}
        runs = dict(m.conn.execute("SELECT stream, warnings FROM sync_runs").fetchall())
    assert (results["deals"].warnings, len(results["deals"].sample)) == (30, 20)
    assert results["deals"].sample[0] == {"stream": "deals", **bad[0]}
    assert results["contacts"].warnings == 0 and runs["contacts"] is None
    stored = json.loads(runs["deals"])
    assert stored["count"] == 30 and stored["sample"][19]["item"] == 19
    lines = [r.getMessage() for r in caplog.records if "not stored as sent" in r.getMessage()]
    assert lines == [
        "sync source=fake stream=deals: 30 value(s) not stored as sent (NULL, or the item "
        "skipped); first: item 0 OPPORTUNITY='1e400': not a finite number; item 1 "
        "OPPORTUNITY='1e400': not a finite number; item 2 OPPORTUNITY='1e400': not a "
        "finite number"
    ]
