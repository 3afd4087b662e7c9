"""Single-column keys and links, for tools that follow only single-column foreign keys.

Every CRM row is keyed by `(source, id)`; tools such as Datasette follow a foreign key only
when it is one column, and link to a row by its primary key. So the tables other rows point
at (`KEYS`) have a `key` primary key, `<source>:<id>` (stages `<source>:<pipeline_id>:<id>`),
with `(source, id)` unique beside it (what rows are upserted on), and the tables pointing at
them have link columns (`LINKS`): generated, never stored, so writing a row costs nothing more,
each with a single-column foreign key to a `key`. `deals.contact_key` is `amo:5` when the
deal's contact is contact 5 of source `amo`; `tasks.deal_key` is set when the task is about a
deal (`entity_type = 'deal'`), NULL otherwise.

The store writes `key` with the row when its parts are integers (`key_of`); a trigger fills
it when a row comes without it (a text stage id, a test's or a user's own INSERT). A mirror made before keys
existed gets them on its next open for writing: each keyed table is rebuilt once, in one
transaction, every row and column kept (`rekey`); link columns are added in place.
"""

from __future__ import annotations

import sqlite3

# Table -> the columns its key joins (after `source`), in order.
KEYS: dict[str, tuple[str, ...]] = {
    "users": ("id",),
    "pipelines": ("id",),
    "stages": ("pipeline_id", "id"),
    "contacts": ("id",),
    "companies": ("id",),
    "deals": ("id",),
    "leads": ("id",),
}


def _joined(*parts: str) -> str:
    """SQL joining `source` and `parts` with ':' (NULL when any part is NULL: no link)."""
    return " || ':' || ".join(("source", *parts))


def _about(kind: str, type_col: str = "entity_type") -> str:
    """The key of a polymorphic row's entity when it is of `kind`, else NULL."""
    return f"CASE WHEN {type_col} = '{kind}' THEN {_joined('entity_id')} END"


_CLIENTS = tuple(
    (f"{kind}_key", table, _about(kind))
    for kind, table in (
        ("deal", "deals"),
        ("lead", "leads"),
        ("contact", "contacts"),
        ("company", "companies"),
    )
)
_MANAGER = (("responsible_user_key", "users", _joined("responsible_user_id")),)

# Table -> (link column, the table it points at, the SQL that computes it).
LINKS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "stages": (("pipeline_key", "pipelines", _joined("pipeline_id")),),
    "contacts": (("company_key", "companies", _joined("company_id")), *_MANAGER),
    "companies": _MANAGER,
    "deals": (
        ("pipeline_key", "pipelines", _joined("pipeline_id")),
        ("stage_key", "stages", _joined("pipeline_id", "stage_id")),
        ("contact_key", "contacts", _joined("contact_id")),
        ("company_key", "companies", _joined("company_id")),
        ("lead_key", "leads", _joined("lead_id")),
        *_MANAGER,
    ),
    "deal_contacts": (
        ("deal_key", "deals", _joined("deal_id")),
        ("contact_key", "contacts", _joined("contact_id")),
    ),
    # Bitrix24 lead statuses are the stages of the pseudo-pipeline -1.
    "leads": (
        ("status_key", "stages", _joined("'-1'", "status_id")),
        ("contact_key", "contacts", _joined("contact_id")),
        ("company_key", "companies", _joined("company_id")),
        *_MANAGER,
    ),
    "tasks": (*_MANAGER, *_CLIENTS),
    "calls": (*_MANAGER, *_CLIENTS),
    "activities": (*_MANAGER, *_CLIENTS),
    "activity_bindings": _CLIENTS,
    "survey_answers": _CLIENTS,
    "stage_changes": (
        ("deal_key", "deals", _about("deal", "entity")),
        ("lead_key", "leads", _about("lead", "entity")),
        ("pipeline_key", "pipelines", _joined("pipeline_id")),
        ("stage_key", "stages", _joined("pipeline_id", "stage_id")),
    ),
}


def key_sql(table: str, row: str = "") -> str:
    """The SQL computing `table`'s key from its columns (prefixed `row.`, e.g. `NEW.`)."""
    return " || ':' || ".join(f"{row}{c}" for c in ("source", *KEYS[table]))


def key_of(source: str, parts: list) -> str | None:
    """A row's key as `key_sql` makes it, when Python's text of its parts is surely SQLite's
    (integers); else None, and the insert trigger computes it (a stage id of `'0142'` is stored
    as 142)."""
    if all(type(p) is int for p in parts):
        return ":".join((source, *map(str, parts)))
    return None


# After an insert without the key, and after an upsert that set it NULL (a page whose rows
# the store could key in Python mixed with rows it could not: the batch's missing keys are NULL).
TRIGGERS = "".join(
    f"""
CREATE TRIGGER IF NOT EXISTS {t}_key AFTER INSERT ON {t} WHEN NEW.key IS NULL
BEGIN UPDATE {t} SET key = {key_sql(t, "NEW.")} WHERE rowid = NEW.rowid; END;
CREATE TRIGGER IF NOT EXISTS {t}_key_kept AFTER UPDATE OF key ON {t} WHEN NEW.key IS NULL
BEGIN UPDATE {t} SET key = {key_sql(t, "NEW.")} WHERE rowid = NEW.rowid; END;
"""
    for t in KEYS
)


def _columns(conn: sqlite3.Connection, table: str, stored: bool = False) -> list[str]:
    """The table's columns (empty when it does not exist); `stored`: not the generated ones."""
    return [r[1] for r in conn.execute(f"PRAGMA table_xinfo([{table}])") if not (stored and r[6] in (2, 3))]


def rekey(conn: sqlite3.Connection, ddl: str) -> list[str]:
    """Rebuild each keyed table of an existing mirror that has no `key` yet, as `ddl` declares
    it: one transaction per table (all its rows or none), every column the old table has kept.
    Its indexes and triggers go with the old table: applying `ddl` afterwards makes them anew.
    Returns the tables rebuilt."""
    todo = [t for t in KEYS if (cols := _columns(conn, t)) and "key" not in cols]
    if not todo:
        return []
    scratch = sqlite3.connect(":memory:")
    try:
        scratch.executescript(ddl)
        declared = dict(scratch.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'"))
        wanted = {t: _columns(scratch, t) for t in todo}
    finally:
        scratch.close()
    conn.execute("PRAGMA legacy_alter_table = ON")  # a user's view on the table must not block it
    try:
        for t in todo:
            _rebuild(conn, t, declared[t], wanted[t])
    finally:
        conn.execute("PRAGMA legacy_alter_table = OFF")
    return todo


def _rebuild(conn: sqlite3.Connection, table: str, create_sql: str, wanted: list[str]) -> None:
    old = _columns(conn, table, stored=True)
    lost = [c for c in old if c not in wanted]
    if lost:
        raise sqlite3.OperationalError(
            f"table {table} has columns this version does not know ({', '.join(lost)}); "
            f"was the mirror made by a newer version?"
        )
    new = f"_rekey_{table}"
    cols = ", ".join(old)
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(f"DROP TABLE IF EXISTS [{new}]")
        conn.execute(create_sql.replace(f"CREATE TABLE {table} (", f"CREATE TABLE [{new}] (", 1))
        conn.execute(f"INSERT INTO [{new}] ({cols}, key) SELECT {cols}, {key_sql(table)} FROM [{table}]")
        conn.execute(f"DROP TABLE [{table}]")
        conn.execute(f"ALTER TABLE [{new}] RENAME TO [{table}]")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def add_links(conn: sqlite3.Connection) -> None:
    """Add the link columns a table lacks (generated: no row is rewritten)."""
    for table, links in LINKS.items():
        have = set(_columns(conn, table))
        for column, target, sql in links:
            if column not in have:
                conn.execute(
                    f"ALTER TABLE [{table}] ADD COLUMN {column} TEXT "
                    f"GENERATED ALWAYS AS ({sql}) VIRTUAL REFERENCES {target} (key)"
                )
