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
