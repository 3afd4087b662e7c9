"""The read-only guard for custom KPI SQL (`[[kpi.custom]]`): checked when the config loads and
enforced again when the KPI engine runs the query."""

from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from pathlib import Path

from connector.mirror import schema

# The built-in KPIs, one query per file (read by the KPI engine; named here for the config).
KPI_SQL_DIR = Path(__file__).with_name("sql")

_READ_ACTIONS = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION,
                 getattr(sqlite3, "SQLITE_RECURSIVE", 33)}


def builtin_kpi_names() -> list[str]:
    """The built-in KPIs' names (`kpi/sql/<name>.sql`), which custom KPIs sit beside."""
    return sorted(p.stem for p in KPI_SQL_DIR.glob("*.sql"))


def read_only(action, *_):
    """An SQLite authorizer that allows reads and denies everything else."""
    return sqlite3.SQLITE_OK if action in _READ_ACTIONS else sqlite3.SQLITE_DENY


def _dummy_params() -> dict:
    return {"source": "x", "now": "2000-01-01T00:00:00Z", "target": "contact",
            "calls_days": 90, "churn_days": 180}


@contextmanager
def _empty_mirror(authorizer):
    """An in-memory mirror with no rows, guarded by `authorizer`: where custom SQL is tried."""
    conn = sqlite3.connect(":memory:")
    try:
        schema.apply(conn)
        conn.set_authorizer(authorizer)
        yield conn
    finally:
        conn.close()


def _statement(sql: str) -> str:
    return sql.strip().rstrip(";")


def check_custom_sql(sql: str) -> str | None:
    """None when `sql` is one read-only query returning two columns; else the problem in a few words.

    It is run against an empty in-memory mirror with an authorizer that denies anything but reads.
    """
    with _empty_mirror(read_only) as conn:
        try:
            cur = conn.execute(_statement(sql), _dummy_params())
        except sqlite3.DatabaseError as err:
            msg = str(err)
            return "must only read the mirror (one SELECT or WITH query)" if "authoriz" in msg \
                else f"SQL does not run: {msg}"
        except (sqlite3.ProgrammingError, sqlite3.Warning) as err:
            return f"SQL does not run: {err}"
        if cur.description is None or len(cur.description) != 2:
            return "must return two columns: entity_id, value"
        return None


def tables_read(sql: str) -> tuple[str, ...]:
    """The mirror's entity tables a custom query reads, as SQLite itself reports them
    (an authorizer on an empty mirror)."""
    seen: set[str] = set()

    def note(action, table, *rest):
        if action == sqlite3.SQLITE_READ and table in schema.ENTITY_TABLES:
            seen.add(table)
        return read_only(action, table, *rest)
    with _empty_mirror(note) as conn:
        try:
            conn.execute(_statement(sql), _dummy_params()).fetchall()
        except sqlite3.Error:
            pass   # the config check reports a query that does not run
    return tuple(sorted(seen))
