"""Tables of the KPI engine and write-back, applied with the mirror's schema."""

DDL = """
CREATE TABLE IF NOT EXISTS kpi_values (
    source TEXT NOT NULL, entity_type TEXT NOT NULL, entity_id INTEGER NOT NULL,
    kpi TEXT NOT NULL, value REAL, computed_at TEXT NOT NULL,
    PRIMARY KEY (source, entity_type, entity_id, kpi, computed_at));
CREATE INDEX IF NOT EXISTS idx_kpi_values_latest ON kpi_values (source, entity_type, kpi, computed_at);

CREATE TABLE IF NOT EXISTS writeback_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    source TEXT NOT NULL, entity_type TEXT NOT NULL, entity_id INTEGER NOT NULL,
    field TEXT NOT NULL, old_value REAL, new_value REAL,
    status TEXT NOT NULL, error TEXT, at TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS idx_writeback_log_entity ON writeback_log (source, entity_type, entity_id, field);
"""
