"""`survey_answers` as h13data's schema will create it (until that lands in connector/schema.py)."""

SURVEY_DDL = """
CREATE TABLE IF NOT EXISTS survey_answers (
    source TEXT NOT NULL, id TEXT NOT NULL, kind TEXT, score REAL, at TEXT,
    entity_type TEXT, entity_id INTEGER, origin TEXT, raw TEXT,
    PRIMARY KEY (source, id))
"""


def add_survey_answers(m, source: str, rows) -> None:
    """rows: (id, kind, score, at, entity_type, entity_id)."""
    m.conn.execute(SURVEY_DDL)
    m.conn.executemany("INSERT INTO survey_answers (source, id, kind, score, at, entity_type, entity_id, "
                       "origin) VALUES (?, ?, ?, ?, ?, ?, ?, 'test')", [(source, *r) for r in rows])
    m.conn.commit()
