"""Single-column keys and links (for Datasette): filled however a row is written, computed the
same in Python and SQL, added to a mirror made before them without losing a row."""

from __future__ import annotations

import sqlite3

from adapters.base import Page
from connector.mirror import keys
from connector.mirror.store import Mirror

# The keyed tables as a mirror made before the keys had them (primary key (source, id)).
OLD = """
CREATE TABLE users (source TEXT NOT NULL, id INTEGER NOT NULL, name TEXT, email TEXT,
    is_active INTEGER, raw TEXT, PRIMARY KEY (source, id));
CREATE TABLE pipelines (source TEXT NOT NULL, id INTEGER NOT NULL, entity TEXT, name TEXT,
    sort INTEGER, is_default INTEGER, raw TEXT, PRIMARY KEY (source, id));
CREATE TABLE stages (source TEXT NOT NULL, pipeline_id INTEGER NOT NULL, id NUMERIC NOT NULL,
    entity TEXT, name TEXT, sort INTEGER, semantics TEXT, raw TEXT,
    PRIMARY KEY (source, pipeline_id, id));
CREATE TABLE deals (source TEXT NOT NULL, id INTEGER NOT NULL, name TEXT, pipeline_id INTEGER,
    stage_id NUMERIC, status TEXT, amount REAL, currency TEXT, responsible_user_id INTEGER,
    contact_id INTEGER, company_id INTEGER, channel TEXT, created_at TEXT, updated_at TEXT,
    closed_at TEXT, is_deleted INTEGER NOT NULL DEFAULT 0, raw TEXT, PRIMARY KEY (source, id));
CREATE INDEX idx_deals_contact ON deals (source, contact_id);
CREATE TABLE tasks (source TEXT NOT NULL, id INTEGER NOT NULL, text TEXT,
    responsible_user_id INTEGER, entity_type TEXT, entity_id INTEGER, is_completed INTEGER,
    due_at TEXT, completed_at TEXT, created_at TEXT, updated_at TEXT,
    is_deleted INTEGER NOT NULL DEFAULT 0, raw TEXT, PRIMARY KEY (source, id));
INSERT INTO users (source, id, name) VALUES ('amo', 7, 'Olga');
INSERT INTO pipelines (source, id, name) VALUES ('amo', 3, 'Sales'), ('b24', 0, 'General');
INSERT INTO stages (source, pipeline_id, id, name) VALUES ('amo', 3, 142, 'Won'), ('b24', 0, 'C0:WON', 'Won');
INSERT INTO deals (source, id, name, pipeline_id, stage_id, responsible_user_id, contact_id, raw)
    VALUES ('amo', 1, 'Order', 3, 142, 7, 5, '{"id": 1}'), ('b24', 1, 'Deal', 0, 'C0:WON', NULL, NULL, NULL);
INSERT INTO tasks (source, id, entity_type, entity_id) VALUES ('amo', 9, 'deal', 1);
CREATE VIEW my_deals AS SELECT name FROM deals;
"""


def _old_mirror(path: str) -> None:
    conn = sqlite3.connect(path)
    conn.executescript(OLD)
    conn.close()


def test_a_mirror_made_before_the_keys_gets_them_on_open_with_every_row_kept(tmp_path):
    path = str(tmp_path / "m.db")
    _old_mirror(path)
    with Mirror(path) as m:
        deals = m.conn.execute(
            "SELECT source, id, name, raw, key, pipeline_key, stage_key, contact_key, "
            "responsible_user_key FROM deals ORDER BY source"
        ).fetchall()
        assert deals == [
            ("amo", 1, "Order", '{"id": 1}', "amo:1", "amo:3", "amo:3:142", "amo:5", "amo:7"),
            ("b24", 1, "Deal", None, "b24:1", "b24:0", "b24:0:C0:WON", None, None),
        ]
        assert m.conn.execute("SELECT key FROM stages ORDER BY key").fetchall() == [
            ("amo:3:142",),
            ("b24:0:C0:WON",),
        ]
        assert m.conn.execute("SELECT deal_key FROM tasks").fetchall() == [("amo:1",)]
        # its indexes are made anew, a user's view still reads it, the old table is gone
        names = {r[0] for r in m.conn.execute("SELECT name FROM sqlite_master")}
        assert {"idx_deals_contact", "idx_deals_updated", "deals_key", "my_deals"} <= names
        assert not [n for n in names if n.startswith("_rekey")]
        assert m.conn.execute("SELECT name FROM my_deals ORDER BY 1").fetchall() == [("Deal",), ("Order",)]
        # the store goes on upserting on (source, id)
        m.save_page("amo", "deals", Page(rows={"deals": [{"id": 1, "name": "Order 2", "pipeline_id": 3}]}))
        assert m.conn.execute("SELECT name, key FROM deals WHERE source = 'amo'").fetchall() == [
            ("Order 2", "amo:1")
        ]
    with Mirror(path) as m:  # a second open changes nothing
        assert m.conn.execute("SELECT count(*) FROM deals").fetchone() == (2,)


def test_keys_are_the_same_whoever_writes_the_row(tmp_path):
    with Mirror(str(tmp_path / "m.db")) as m:
        m.save_page(
            "amo",
            "stages",
            Page(
                rows={
                    "stages": [
                        {"pipeline_id": 3, "id": 142, "name": "Won"},
                        {"pipeline_id": 3, "id": "0143", "name": "Lost"},  # stored as 143
                        {"pipeline_id": 4, "id": "C4:NEW", "name": "New"},
                    ]
                }
            ),
        )
        with m.db.atomic():
            m.conn.execute("INSERT INTO contacts (source, id, name) VALUES ('amo', 5, 'Ivan')")
        again = [
            {"pipeline_id": 3, "id": 142, "name": "Won"},
            {"pipeline_id": 4, "id": "C4:NEW", "name": "New!"},
        ]
        m.save_page("amo", "stages", Page(rows={"stages": again}))  # upserted, keys kept
        rows = m.conn.execute("SELECT key, source || ':' || pipeline_id || ':' || id FROM stages").fetchall()
        assert sorted(r[0] for r in rows) == ["amo:3:142", "amo:3:143", "amo:4:C4:NEW"]
        assert all(k == sql for k, sql in rows)
        assert m.conn.execute("SELECT key FROM contacts").fetchall() == [("amo:5",)]


def test_every_link_is_a_single_column_foreign_key_to_a_key(tmp_path):
    with Mirror(str(tmp_path / "m.db")) as m:
        for table, links in keys.LINKS.items():
            fks = {r[3]: (r[2], r[4]) for r in m.conn.execute(f"PRAGMA foreign_key_list([{table}])")}
            for column, target, _ in links:
                assert fks[column] == (target, "key"), (table, column)
                assert target in keys.KEYS
