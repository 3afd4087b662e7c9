"""Tables of the KPI engine and write-back, applied with the mirror's schema."""

DDL = """
CREATE TABLE IF NOT EXISTS kpi_values (
    source TEXT NOT NULL, entity_type TEXT NOT NULL, entity_id INTEGER NOT NULL,
    kpi TEXT NOT NULL, value REAL, computed_at TEXT NOT NULL,
    PRIMARY KEY (source, entity_type, kpi, entity_id, computed_at)) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS writeback_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    source TEXT NOT NULL, entity_type TEXT NOT NULL, entity_id INTEGER NOT NULL,
    field TEXT NOT NULL, old_value REAL, new_value REAL,
    status TEXT NOT NULL, error TEXT, at TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS idx_writeback_log_entity ON writeback_log (source, entity_type, entity_id, field);
"""

# kpi_values keeps history as changes: a row when a client's KPI gets a new value, so the value at
# time T is the newest row at or before T, and the current value (the diff base for history and
# write-back) the newest of all: the kpi_latest view. Its key is KPI-major (kpi before entity_id):
# a run diffs one KPI at a time in client order, so its lookups and inserts walk the B-tree in
# order, and a client's newest value is one seek from the end of its range.
# kpi_runs: one row per computation.
DDL += """
CREATE VIEW IF NOT EXISTS kpi_latest AS
SELECT source, entity_type, entity_id, kpi, value, max(computed_at) AS computed_at
FROM kpi_values GROUP BY source, entity_type, kpi, entity_id;

CREATE TABLE IF NOT EXISTS kpi_runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    source TEXT NOT NULL, computed_at TEXT NOT NULL, kpis TEXT NOT NULL,
    clients INTEGER NOT NULL, values_changed INTEGER NOT NULL, seconds REAL NOT NULL);

CREATE TABLE IF NOT EXISTS kpi_fields (
    source TEXT NOT NULL, entity_type TEXT NOT NULL, kpi TEXT NOT NULL,
    label TEXT NOT NULL, field_key TEXT NOT NULL, code TEXT, type TEXT, resolved_at TEXT NOT NULL,
    PRIMARY KEY (source, entity_type, kpi));

-- Team and business measures (funnel, managers, channels, churn, ...), one row per measure,
-- period (month start in the account's time zone, or 'all') and dimension value.
CREATE TABLE IF NOT EXISTS metrics (
    source TEXT NOT NULL, measure TEXT NOT NULL, period TEXT NOT NULL,
    dimension TEXT NOT NULL, dimension_value TEXT NOT NULL,
    value REAL, computed_at TEXT NOT NULL,
    PRIMARY KEY (source, measure, period, dimension, dimension_value));

CREATE TABLE IF NOT EXISTS kpi_written (
    source TEXT NOT NULL, entity_type TEXT NOT NULL, entity_id INTEGER NOT NULL,
    field_key TEXT NOT NULL, kpi TEXT NOT NULL, value REAL, written_at TEXT NOT NULL,
    PRIMARY KEY (source, entity_type, field_key, entity_id)) WITHOUT ROWID;
"""

# What changed since the last KPI pass, for incremental passes (connector.kpi.incremental):
# triggers on every table a KPI reads note the clients (and deals) a written row belongs to,
# before and after the write, so a deal moved from one contact to another marks both, and a
# hard DELETE is seen too. A KPI pass over the whole source empties the source's rows.
DDL += """
CREATE TABLE IF NOT EXISTS kpi_dirty (
    source TEXT NOT NULL, entity_type TEXT NOT NULL, entity_id INTEGER NOT NULL,
    PRIMARY KEY (source, entity_type, entity_id)) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS kpi_passes (
    source TEXT NOT NULL PRIMARY KEY, computed_at TEXT NOT NULL, full_at TEXT NOT NULL,
    basis TEXT NOT NULL);

CREATE TABLE IF NOT EXISTS kpi_anchors (
    source TEXT NOT NULL, entity_type TEXT NOT NULL, kpi TEXT NOT NULL, entity_id INTEGER NOT NULL,
    at REAL,
    PRIMARY KEY (source, entity_type, kpi, entity_id)) WITHOUT ROWID;
"""

# The records an activity (or the call it is) is bound to also own it.
_BOUND = (
    "SELECT b.source AS s, b.entity_type AS t, b.entity_id AS i FROM activity_bindings b "
    "WHERE b.source = {{r}}.source AND b.activity_id = {key}"
)

# table -> a row's owners, `{r}` standing for OLD/NEW: (entity_type, entity_id) expressions, or
# a query of them
_OWNERS = {
    "contacts": (("'contact'", "{r}.id"),),
    "companies": (("'company'", "{r}.id"),),
    "deals": (("'deal'", "{r}.id"), ("'contact'", "{r}.contact_id"), ("'company'", "{r}.company_id")),
    "deal_contacts": (("'contact'", "{r}.contact_id"),),
    "calls": (
        ("{r}.entity_type", "{r}.entity_id"),
        _BOUND.format(key="{r}.activity_id"),
        # an automated call's activity is no interaction: the activity's own record too
        "SELECT a.source AS s, a.entity_type AS t, a.entity_id AS i FROM activities a "
        "WHERE a.source = {r}.source AND a.id = {r}.activity_id",
    ),
    "tasks": (("{r}.entity_type", "{r}.entity_id"),),
    "activities": (("{r}.entity_type", "{r}.entity_id"), _BOUND.format(key="{r}.id")),
    "activity_bindings": (("{r}.entity_type", "{r}.entity_id"),),
    "survey_answers": (("{r}.entity_type", "{r}.entity_id"),),
}


WATCHED = tuple(_OWNERS)  # the tables whose writes kpi_dirty notes


def _trigger(table: str, event: str, rows: tuple[str, ...], columns: list[str]) -> str:
    owners = " UNION ".join(
        o.format(r=r)
        if isinstance(o, str)
        else f"SELECT {r}.source AS s, {o[0].format(r=r)} AS t, {o[1].format(r=r)} AS i"
        for r in rows
        for o in _OWNERS[table]
    )
    # Only once the source has had a KPI pass (its first is full: a first sync notes nothing),
    # and for an update only when the row changed (a re-synced unchanged row notes nothing).
    when = f"EXISTS (SELECT 1 FROM kpi_passes p WHERE p.source = {rows[-1]}.source)"
    if event == "UPDATE":
        when += " AND (" + " OR ".join(f"OLD.[{c}] IS NOT NEW.[{c}]" for c in columns) + ")"
    # No OR IGNORE: a trigger's conflict policy gives way to the outer statement's (an upsert's
    # would fail on a row noted already), so the query leaves out the rows noted already.
    return (
        f"CREATE TRIGGER kpi_dirty_{table}_{event.lower()} AFTER {event} ON {table} "
        f"WHEN {when} "
        f"BEGIN INSERT INTO kpi_dirty (source, entity_type, entity_id) SELECT s, t, i FROM ({owners}) "
        f"WHERE t IS NOT NULL AND i IS NOT NULL AND NOT EXISTS (SELECT 1 FROM kpi_dirty d "
        f"WHERE d.source = s AND d.entity_type = t AND d.entity_id = i); END"
    )


def apply_triggers(conn) -> None:
    """The triggers filling `kpi_dirty` (after the tables they watch exist); one that differs
    from its declaration (a column added since, a new owner) is made again."""
    have = dict(conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'").fetchall())
    ddl = ""
    for t in _OWNERS:
        columns = [r[1] for r in conn.execute(f"PRAGMA table_info([{t}])")]
        for event, rows in (("INSERT", ("NEW",)), ("UPDATE", ("OLD", "NEW")), ("DELETE", ("OLD",))):
            name, sql = f"kpi_dirty_{t}_{event.lower()}", _trigger(t, event, rows, columns)
            if have.get(name) != sql:
                ddl += f"DROP TRIGGER IF EXISTS {name}; {sql};\n"
    if ddl:
        conn.executescript(ddl)
