"""Survey answers from the CRMs' own sources, written straight into a test mirror."""


def add_survey_answers(m, source: str, rows) -> None:
    """rows: (id, kind, score, at, entity_type, entity_id)."""
    m.conn.executemany(
        "INSERT INTO survey_answers (source, id, kind, score, at, entity_type, entity_id, "
        "origin) VALUES (?, ?, ?, ?, ?, ?, ?, 'test')",
        [(source, *r) for r in rows],
    )
    m.conn.commit()
