"""The mirror's tables, indexes and foreign keys, declared once (what they hold: docs/mirror.md).

`apply(conn)` runs on every open; each statement is idempotent. Columns have explicit types
so early NULLs never decide a column's type. Stage ids are NUMERIC: amoCRM's are integers,
Bitrix24's are text like `C1:WON`; NUMERIC keeps both as given and compares them alike.
Bitrix24 lead statuses hang off a pseudo-pipeline with id -1 (entity `lead`).

The tables streams fill, their primary keys and how pages are written into them are declared
in `adapters.tables`; each primary key here is the one declared there (a unit test compares).
"""

from adapters.tables import TABLES
from connector.mirror import keys

ENTITY_TABLES = tuple(TABLES)

DDL = """
CREATE TABLE IF NOT EXISTS users (
    source TEXT NOT NULL, id INTEGER NOT NULL,
    name TEXT, email TEXT, is_active INTEGER, raw TEXT, key TEXT PRIMARY KEY,
    UNIQUE (source, id));

CREATE TABLE IF NOT EXISTS pipelines (
    source TEXT NOT NULL, id INTEGER NOT NULL,
    entity TEXT, name TEXT, sort INTEGER, is_default INTEGER, raw TEXT, key TEXT PRIMARY KEY,
    UNIQUE (source, id));

CREATE TABLE IF NOT EXISTS stages (
    source TEXT NOT NULL, pipeline_id INTEGER NOT NULL, id NUMERIC NOT NULL,
    entity TEXT, name TEXT, sort INTEGER, semantics TEXT, raw TEXT, key TEXT PRIMARY KEY,
    UNIQUE (source, pipeline_id, id),
    FOREIGN KEY (source, pipeline_id) REFERENCES pipelines (source, id));

CREATE TABLE IF NOT EXISTS contacts (
    source TEXT NOT NULL, id INTEGER NOT NULL,
    name TEXT, company_id INTEGER, responsible_user_id INTEGER,
    created_at TEXT, updated_at TEXT, is_deleted INTEGER NOT NULL DEFAULT 0, raw TEXT, key TEXT PRIMARY KEY,
    UNIQUE (source, id),
    FOREIGN KEY (source, company_id) REFERENCES companies (source, id),
    FOREIGN KEY (source, responsible_user_id) REFERENCES users (source, id));

CREATE TABLE IF NOT EXISTS companies (
    source TEXT NOT NULL, id INTEGER NOT NULL,
    name TEXT, responsible_user_id INTEGER,
    created_at TEXT, updated_at TEXT, is_deleted INTEGER NOT NULL DEFAULT 0, raw TEXT, key TEXT PRIMARY KEY,
    UNIQUE (source, id),
    FOREIGN KEY (source, responsible_user_id) REFERENCES users (source, id));

CREATE TABLE IF NOT EXISTS deals (
    source TEXT NOT NULL, id INTEGER NOT NULL,
    name TEXT, pipeline_id INTEGER, stage_id NUMERIC, status TEXT,
    amount REAL, currency TEXT, responsible_user_id INTEGER,
    contact_id INTEGER, company_id INTEGER, channel TEXT,
    created_at TEXT, updated_at TEXT, closed_at TEXT,
    is_deleted INTEGER NOT NULL DEFAULT 0, raw TEXT, lead_id INTEGER, key TEXT PRIMARY KEY,
    UNIQUE (source, id),
    FOREIGN KEY (source, pipeline_id) REFERENCES pipelines (source, id),
    FOREIGN KEY (source, lead_id) REFERENCES leads (source, id),
    FOREIGN KEY (source, contact_id) REFERENCES contacts (source, id),
    FOREIGN KEY (source, company_id) REFERENCES companies (source, id),
    FOREIGN KEY (source, responsible_user_id) REFERENCES users (source, id));

CREATE TABLE IF NOT EXISTS deal_contacts (
    source TEXT NOT NULL, deal_id INTEGER NOT NULL, contact_id INTEGER NOT NULL,
    is_main INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (source, deal_id, contact_id),
    FOREIGN KEY (source, deal_id) REFERENCES deals (source, id),
    FOREIGN KEY (source, contact_id) REFERENCES contacts (source, id));

CREATE TABLE IF NOT EXISTS leads (
    source TEXT NOT NULL, id INTEGER NOT NULL,
    title TEXT, status_id NUMERIC, status TEXT, amount REAL, currency TEXT,
    responsible_user_id INTEGER, contact_id INTEGER, company_id INTEGER, channel TEXT,
    created_at TEXT, updated_at TEXT, closed_at TEXT,
    is_deleted INTEGER NOT NULL DEFAULT 0, raw TEXT, key TEXT PRIMARY KEY,
    UNIQUE (source, id),
    FOREIGN KEY (source, contact_id) REFERENCES contacts (source, id),
    FOREIGN KEY (source, company_id) REFERENCES companies (source, id));

CREATE TABLE IF NOT EXISTS tasks (
    source TEXT NOT NULL, id INTEGER NOT NULL,
    text TEXT, responsible_user_id INTEGER, entity_type TEXT, entity_id INTEGER,
    is_completed INTEGER, due_at TEXT, completed_at TEXT, created_at TEXT, updated_at TEXT,
    is_deleted INTEGER NOT NULL DEFAULT 0, raw TEXT,
    PRIMARY KEY (source, id),
    FOREIGN KEY (source, responsible_user_id) REFERENCES users (source, id));

CREATE TABLE IF NOT EXISTS calls (
    source TEXT NOT NULL, id INTEGER NOT NULL,
    direction TEXT, status TEXT, duration_s INTEGER, started_at TEXT,
    responsible_user_id INTEGER, entity_type TEXT, entity_id INTEGER, phone TEXT,
    activity_id TEXT, is_automated INTEGER NOT NULL DEFAULT 0,
    is_deleted INTEGER NOT NULL DEFAULT 0, raw TEXT,
    PRIMARY KEY (source, id),
    FOREIGN KEY (source, responsible_user_id) REFERENCES users (source, id));

-- Every client interaction (calls too, so one table answers "how often do we talk"):
-- channel `call`, `email`, `chat`, `meeting`, `sms`, ...; direction `in` / `out`.
-- is_completed 0: planned, not done yet (not an interaction until it is).
CREATE TABLE IF NOT EXISTS activities (
    source TEXT NOT NULL, id TEXT NOT NULL,
    channel TEXT, direction TEXT, at TEXT, responsible_user_id INTEGER,
    entity_type TEXT, entity_id INTEGER, is_completed INTEGER NOT NULL DEFAULT 1,
    is_deleted INTEGER NOT NULL DEFAULT 0, raw TEXT,
    PRIMARY KEY (source, id));

-- Every CRM record an activity is bound to, its own entity included (Bitrix24 BINDINGS: a
-- call can concern a lead, a deal and a contact at once). A CRM whose records have one
-- entity each (amoCRM notes) adds none: the activity's own entity_type / entity_id is it.
CREATE TABLE IF NOT EXISTS activity_bindings (
    source TEXT NOT NULL, activity_id TEXT NOT NULL, entity_type TEXT NOT NULL,
    entity_id INTEGER NOT NULL,
    PRIMARY KEY (source, activity_id, entity_type, entity_id),
    FOREIGN KEY (source, activity_id) REFERENCES activities (source, id));

-- Survey scores the CRMs record themselves: `nps` 0-10 (amoCRM `nps_rate_added` events),
-- `csat` 1-5 (Bitrix24 call ratings, CALL_VOTE); origin says which (`amocrm_event`, `call_vote`).
CREATE TABLE IF NOT EXISTS survey_answers (
    source TEXT NOT NULL, id TEXT NOT NULL,
    kind TEXT, score REAL, at TEXT, entity_type TEXT, entity_id INTEGER, origin TEXT, raw TEXT,
    PRIMARY KEY (source, id));

CREATE TABLE IF NOT EXISTS stage_changes (
    source TEXT NOT NULL, id TEXT NOT NULL,
    entity TEXT, entity_id INTEGER, pipeline_id INTEGER,
    stage_id NUMERIC, previous_stage_id NUMERIC, changed_at TEXT, raw TEXT,
    PRIMARY KEY (source, id));

CREATE TABLE IF NOT EXISTS sync_state (
    source TEXT NOT NULL, stream TEXT NOT NULL,
    bookmark TEXT, last_run_started_at TEXT, last_success_at TEXT,
    PRIMARY KEY (source, stream));

CREATE TABLE IF NOT EXISTS sync_runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL, source TEXT NOT NULL, stream TEXT NOT NULL,
    started_at TEXT NOT NULL, finished_at TEXT, status TEXT NOT NULL,
    rows INTEGER NOT NULL DEFAULT 0, requests INTEGER NOT NULL DEFAULT 0, error TEXT,
    warnings TEXT);

CREATE INDEX IF NOT EXISTS idx_stages_pipeline ON stages (source, pipeline_id);
CREATE INDEX IF NOT EXISTS idx_contacts_company ON contacts (source, company_id);
CREATE INDEX IF NOT EXISTS idx_contacts_user ON contacts (source, responsible_user_id);
CREATE INDEX IF NOT EXISTS idx_contacts_updated ON contacts (source, updated_at);
CREATE INDEX IF NOT EXISTS idx_companies_user ON companies (source, responsible_user_id);
CREATE INDEX IF NOT EXISTS idx_companies_updated ON companies (source, updated_at);
CREATE INDEX IF NOT EXISTS idx_deals_pipeline ON deals (source, pipeline_id);
CREATE INDEX IF NOT EXISTS idx_deals_contact ON deals (source, contact_id);
CREATE INDEX IF NOT EXISTS idx_deals_company ON deals (source, company_id);
CREATE INDEX IF NOT EXISTS idx_deals_user ON deals (source, responsible_user_id);
CREATE INDEX IF NOT EXISTS idx_deals_updated ON deals (source, updated_at);
CREATE INDEX IF NOT EXISTS idx_deals_lead ON deals (source, lead_id);
CREATE INDEX IF NOT EXISTS idx_deal_contacts_contact ON deal_contacts (source, contact_id);
CREATE INDEX IF NOT EXISTS idx_leads_contact ON leads (source, contact_id);
CREATE INDEX IF NOT EXISTS idx_leads_company ON leads (source, company_id);
CREATE INDEX IF NOT EXISTS idx_tasks_entity ON tasks (source, entity_type, entity_id);
CREATE INDEX IF NOT EXISTS idx_tasks_user ON tasks (source, responsible_user_id);
CREATE INDEX IF NOT EXISTS idx_calls_entity ON calls (source, entity_type, entity_id);
CREATE INDEX IF NOT EXISTS idx_calls_user ON calls (source, responsible_user_id);
CREATE INDEX IF NOT EXISTS idx_activities_entity ON activities (source, entity_type, entity_id);
CREATE INDEX IF NOT EXISTS idx_activities_user ON activities (source, responsible_user_id);
CREATE INDEX IF NOT EXISTS idx_activity_bindings_entity ON activity_bindings (source, entity_type, entity_id);
CREATE INDEX IF NOT EXISTS idx_calls_activity ON calls (source, activity_id);
CREATE INDEX IF NOT EXISTS idx_survey_answers_entity ON survey_answers (source, entity_type, entity_id);
CREATE INDEX IF NOT EXISTS idx_stage_changes_entity ON stage_changes (source, entity, entity_id);
CREATE INDEX IF NOT EXISTS idx_sync_runs_source ON sync_runs (source, stream, id);
"""


def apply(conn) -> None:
    """Create whatever is missing; a no-op on an up-to-date mirror. A mirror made before the
    single-column keys (`connector.mirror.keys`) gets them, its rows kept."""
    from connector.mirror import kpi_schema

    ddl = DDL + kpi_schema.DDL
    keys.rekey(conn, DDL)  # first: a keyless table gets its `key` as primary key, not as a column
    _add_missing_columns(conn, ddl)
    conn.executescript(ddl + keys.TRIGGERS)
    keys.add_links(conn)
    kpi_schema.apply_triggers(conn)


def _add_missing_columns(conn, ddl: str) -> None:
    """Columns declared since a mirror was made are added to its tables (`ALTER TABLE ... ADD
    COLUMN`, so rows keep their data and the new column reads NULL or its default). The
    declared shape is read back from an in-memory database, not parsed from the DDL text."""
    import sqlite3

    have = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not have:
        return
    declared = sqlite3.connect(":memory:")
    try:
        declared.executescript(ddl)
        for table in have:
            cols = declared.execute(f"PRAGMA table_info({_quoted(table)})").fetchall()
            if not cols:
                continue  # not ours (a user's own table)
            present = {r[1] for r in conn.execute(f"PRAGMA table_info({_quoted(table)})")}
            for _, name, kind, notnull, default, _ in cols:
                if name in present:
                    continue
                spec = f"{_quoted(name)} {kind}"
                if default is not None:
                    spec += f" {'NOT NULL ' if notnull else ''}DEFAULT {default}"
                conn.execute(f"ALTER TABLE {_quoted(table)} ADD COLUMN {spec}")
    finally:
        declared.close()


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
