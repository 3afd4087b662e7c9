"""The mirror store: private file, idempotent schema, one transaction per page."""

import os
import stat

import pytest

from adapters.base import Page
from adapters.streams import Stream
from adapters.tables import TABLES
from connector.mirror.keys import KEYS
from connector.mirror.store import Mirror


def test_file_is_private_wal_and_schema_idempotent(tmp_path):
    path = str(tmp_path / "m.db")
    Mirror(path).close()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with Mirror(path) as m:  # applying the schema again is a no-op
        assert m.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in m.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {
        "deals",
        "deal_contacts",
        "stages",
        "sync_state",
        "sync_runs",
        "kpi_values",
        "writeback_log",
    } <= tables


def test_each_tables_upsert_key_is_the_one_its_contract_declares(tmp_path):
    """The contract's key is the table's primary key, or (tables with a single-column `key`
    for Datasette, `connector.mirror.keys`) a unique constraint beside it."""
    with Mirror(str(tmp_path / "m.db")) as m:
        for t in TABLES.values():
            cols = m.conn.execute(f"PRAGMA table_info([{t.name}])").fetchall()
            pk = tuple(c[1] for c in sorted(cols, key=lambda c: c[5]) if c[5])
            unique = [
                tuple(r[2] for r in m.conn.execute(f"PRAGMA index_info([{ix[1]}])"))
                for ix in m.conn.execute(f"PRAGMA index_list([{t.name}])")
                if ix[2] and ix[3] == "u"
            ]
            if t.name in KEYS:
                assert pk == ("key",) and t.primary_key in unique, t.name
            else:
                assert pk == t.primary_key, t.name


def test_a_stream_feeds_only_tables_with_a_contract():
    with pytest.raises(ValueError, match="invoices"):
        Stream("invoices", ("invoices",), "changes", None)


def test_upsert_updates_in_place_and_keeps_raw_json(tmp_path):
    with Mirror(str(tmp_path / "m.db")) as m:
        m.save_page(
            "s", "deals", Page(rows={"deals": [{"id": 1, "name": "a", "amount": 10, "raw": {"x": 1}}]})
        )
        m.save_page("s", "deals", Page(rows={"deals": [{"id": 1, "name": "b", "raw": {"x": 2}}]}))
        m.save_page("other", "deals", Page(rows={"deals": [{"id": 1, "name": "c"}]}))
        rows = m.conn.execute("SELECT source, id, name, amount, raw FROM deals ORDER BY source").fetchall()
    assert rows == [("other", 1, "c", None, None), ("s", 1, "b", 10.0, '{"x":2}')]


def test_deal_links_replaced_as_a_whole(tmp_path):
    with Mirror(str(tmp_path / "m.db")) as m:
        m.save_page(
            "s",
            "deals",
            Page(
                rows={
                    "deals": [{"id": 1}, {"id": 2}],
                    "deal_contacts": [
                        {"deal_id": 1, "contact_id": 10, "is_main": 1},
                        {"deal_id": 1, "contact_id": 11, "is_main": 0},
                        {"deal_id": 2, "contact_id": 10, "is_main": 1},
                    ],
                }
            ),
        )
        m.save_page(
            "s",
            "deals",
            Page(
                rows={"deals": [{"id": 1}], "deal_contacts": [{"deal_id": 1, "contact_id": 12, "is_main": 1}]}
            ),
        )
        links = m.conn.execute("SELECT deal_id, contact_id FROM deal_contacts ORDER BY 1, 2").fetchall()
    assert links == [(1, 12), (2, 10)]


def test_stage_ids_keep_crm_types(tmp_path):
    with Mirror(str(tmp_path / "m.db")) as m:
        m.save_page(
            "s",
            "p",
            Page(
                rows={
                    "stages": [
                        {"pipeline_id": 1, "id": 142, "semantics": "won"},
                        {"pipeline_id": 2, "id": 142, "semantics": "won"},
                        {"pipeline_id": 0, "id": "C1:WON", "semantics": "won"},
                    ]
                }
            ),
        )
        rows = m.conn.execute("SELECT pipeline_id, id, typeof(id) FROM stages ORDER BY 1").fetchall()
    assert rows == [(0, "C1:WON", "text"), (1, 142, "integer"), (2, 142, "integer")]


def test_deleted_restored_and_reconciled(tmp_path):
    with Mirror(str(tmp_path / "m.db")) as m:
        m.save_page("s", "c", Page(rows={"contacts": [{"id": i} for i in range(1, 6)]}))
        m.save_page("s", "e", Page(deleted={"contacts": [1, 2]}, restored={"contacts": [2]}))
        m.save_page("s", "r", Page(present={"contacts": [1, 2, 3]}))
        flags = dict(m.conn.execute("SELECT id, is_deleted FROM contacts").fetchall())
    assert flags == {1: 0, 2: 0, 3: 0, 4: 1, 5: 1}


def test_a_dated_deletion_loses_only_to_a_later_change(tmp_path):
    """amoCRM tasks (no restore event): a row changed after its deletion was listed alive
    since, so restored, and stays; a deletion at or after the row's last change, or of a row
    with no moment, or undated, deletes it."""
    at = "2026-11-23T10:00:05Z"
    with Mirror(str(tmp_path / "m.db")) as m:
        m.save_page(
            "s",
            "t",
            Page(
                rows={
                    "tasks": [
                        {"id": 1, "updated_at": at},
                        {"id": 2, "updated_at": at},
                        {"id": 3, "updated_at": at},
                        {"id": 4, "updated_at": None},
                        {"id": 5, "updated_at": at},
                    ]
                }
            ),
        )
        m.save_page("other", "t", Page(rows={"tasks": [{"id": 2, "updated_at": None}]}))
        m.save_page(
            "s",
            "e",
            Page(
                deleted_at={
                    "tasks": {
                        1: "2026-11-23T10:00:04Z",
                        2: at,
                        3: "2026-11-23T10:00:06Z",
                        4: "2026-11-23T10:00:00Z",
                        5: None,
                    }
                }
            ),
        )
        flags = m.conn.execute("SELECT source, id, is_deleted FROM tasks ORDER BY 1, 2").fetchall()
    assert flags == [("other", 2, 0), ("s", 1, 0), ("s", 2, 1), ("s", 3, 1), ("s", 4, 1), ("s", 5, 1)]


def test_page_merge_a_restore_and_a_dated_deletion_the_later_wins():
    page = Page(deleted_at={"tasks": {1: "A", 2: "B"}}).merge(Page(restored={"tasks": [1]}))
    assert (page.deleted_at, page.restored) == ({"tasks": {2: "B"}}, {"tasks": [1]})
    page.merge(Page(deleted_at={"tasks": {1: "C"}}))
    assert (page.deleted_at, page.restored) == ({"tasks": {2: "B", 1: "C"}}, {})
    assert page.count() == 2 and page.entities("tasks") == 2


def test_activities_with_text_ids_reconcile_against_a_listing_of_integer_ids(tmp_path):
    """Bitrix24's ID listing gives integers; activities keep ids as text (amoCRM's are
    `note:1` / `event:...`): the listing must still keep the listed rows alive."""
    with Mirror(str(tmp_path / "m.db")) as m:
        m.save_page(
            "s", "a", Page(rows={"activities": [{"id": str(i), "channel": "email"} for i in (801, 802, 803)]})
        )
        m.save_page("t", "a", Page(rows={"activities": [{"id": "note:5", "channel": "sms"}]}))
        m.save_page("s", "r", Page(present={"activities": [801, 803]}))
        flags = dict(m.conn.execute("SELECT id, is_deleted FROM activities").fetchall())
    assert flags == {"801": 0, "802": 1, "803": 0, "note:5": 0}


def test_survey_answers_table(tmp_path):
    with Mirror(str(tmp_path / "m.db")) as m:
        m.save_page(
            "s",
            "e",
            Page(
                rows={
                    "survey_answers": [
                        {
                            "id": "event:01ab",
                            "kind": "nps",
                            "score": 9.0,
                            "at": "2026-11-23T10:00:00Z",
                            "entity_type": "contact",
                            "entity_id": 12,
                            "origin": "amocrm_event",
                            "raw": {"x": 1},
                        }
                    ]
                }
            ),
        )
        row = m.conn.execute("SELECT source, id, kind, score, origin, raw FROM survey_answers").fetchone()
    assert row == ("s", "event:01ab", "nps", 9.0, "amocrm_event", '{"x":1}')


def test_failed_page_leaves_nothing_half_written(tmp_path):
    with Mirror(str(tmp_path / "m.db")) as m:
        m.save_page("s", "deals", Page(rows={"deals": [{"id": 1, "name": "kept"}]}, bookmark="b1"))
        bad = Page(
            rows={"deals": [{"id": 2, "name": "new"}], "stages": [{"pipeline_id": 1, "id": None}]},
            bookmark="b2",
        )
        with pytest.raises(Exception):
            m.save_page("s", "deals", bad)
        assert m.conn.execute("SELECT id FROM deals").fetchall() == [(1,)]
        assert m.get_bookmark("s", "deals") == "b1"


def test_runs_and_status(tmp_path):
    with Mirror(str(tmp_path / "m.db")) as m:
        r = m.start_run("run1", "s", "deals", "2026-11-23T02:00:00Z")
        m.finish_run(r, "failed", 5, 3, "boom")
        r = m.start_run("run2", "s", "deals", "2026-11-23T03:00:00Z")
        m.finish_run(r, "ok", 7, 2)
        (row,) = m.status()
    assert row["last_status"] == "ok" and row["last_rows"] == 7 and row["last_error"] is None
    assert row["last_run_started_at"] == "2026-11-23T03:00:00Z" and row["last_success_at"]


def test_previous_stage_filled_from_earlier_change(tmp_path):
    with Mirror(str(tmp_path / "m.db")) as m:
        first = {
            "id": "deal:1",
            "entity": "deal",
            "entity_id": 7,
            "stage_id": "NEW",
            "previous_stage_id": None,
            "changed_at": "2026-01-01T00:00:00Z",
        }
        m.save_page("s", "stage_history", Page(rows={"stage_changes": [first]}))
        later = {
            "id": "deal:2",
            "entity": "deal",
            "entity_id": 7,
            "stage_id": "WON",
            "previous_stage_id": None,
            "changed_at": "2026-02-01T00:00:00Z",
        }
        other = {
            "id": "deal:3",
            "entity": "deal",
            "entity_id": 8,
            "stage_id": "LOSE",
            "previous_stage_id": "NEW",
            "changed_at": "2026-02-01T00:00:00Z",
        }
        m.save_page("s", "stage_history", Page(rows={"stage_changes": [later, other]}))
        rows = m.conn.execute("SELECT id, previous_stage_id FROM stage_changes ORDER BY id").fetchall()
    assert rows == [("deal:1", None), ("deal:2", "NEW"), ("deal:3", "NEW")]


def test_a_mirror_made_before_a_column_was_declared_gets_it_on_open(tmp_path):
    """A column added to the schema since the file was made is added on open; rows keep their data."""
    import sqlite3

    from connector.mirror import schema

    old = (
        schema.DDL.replace(" lead_id INTEGER,", "")
        .replace("    FOREIGN KEY (source, lead_id) REFERENCES leads (source, id),\n", "")
        .replace("CREATE INDEX IF NOT EXISTS idx_deals_lead ON deals (source, lead_id);", "")
    )
    assert "lead_id" not in old
    path = str(tmp_path / "old.db")
    conn = sqlite3.connect(path)
    conn.executescript(old)  # the shape of a mirror made before deals.lead_id
    conn.execute("INSERT INTO deals (source, id, name) VALUES ('s', 1, 'kept')")
    conn.commit()
    conn.close()
    m = Mirror(path)
    try:
        cols = {r[1] for r in m.conn.execute("PRAGMA table_info(deals)")}
        assert "lead_id" in cols
        assert m.conn.execute("SELECT name, lead_id FROM deals").fetchall() == [("kept", None)]
    finally:
        m.close()
