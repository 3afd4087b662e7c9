"""A Datasette metadata file for a mirror: tables and columns described, labels, canned queries.

`metadata(db_name)` is the document (`datasette mirror.db -m mirror.metadata.json`); Datasette
names a database after its file's stem, and the document describes that name. What each
column means is said here in a line; docs/mirror.md says it at length. A unit test checks
that every table and column of the schema has its line.
"""

from __future__ import annotations

import json
import os

from connector.mirror import keys

_ENTITY = "`deal`, `lead`, `contact` or `company` (amoCRM also `customer`)"

# Columns most tables share; a table's own line for a column wins.
COMMON = {
    "key": "This row's key, `source:id`: what the `*_key` links of other tables point at",
    "source": "The `[[sources]] name` of the CRM account the row comes from",
    "id": "The CRM's own id",
    "raw": "The CRM's item exactly as received (JSON); custom field values are here",
    "name": "The name, as in the CRM",
    "sort": "Sort order, as in the CRM",
    "is_deleted": "1 when the CRM deleted it (the row stays)",
    "created_at": "When it was created (ISO 8601 UTC)",
    "updated_at": "When it was last changed (ISO 8601 UTC)",
    "responsible_user_id": "The manager (`users.id`)",
    "company_id": "The company (`companies.id`)",
    "contact_id": "The contact (`contacts.id`)",
    "pipeline_id": "The pipeline (`pipelines.id`)",
    "amount": "Value, in `currency`",
    "currency": "Currency of `amount`",
    "channel": "Acquisition channel: the UTM source, else the CRM's source name (lower case)",
    "entity_type": f"What it is about: {_ENTITY}",
    "entity_id": "The id of what it is about (see `entity_type`)",
    "at": "When it happened (ISO 8601 UTC)",
    "computed_at": "When it was computed (ISO 8601 UTC)",
    "kpi": "The KPI's name",
    "value": "The value",
    "field_key": "The CRM's key of the card field (amoCRM field id, Bitrix24 `UF_CRM_...`)",
}

TABLES: dict[str, tuple[str, dict[str, str]]] = {
    "users": (
        "The account's people",
        {"email": "E-mail address", "is_active": "1 while the user may sign in"},
    ),
    "pipelines": (
        "Sales pipelines (Bitrix24 lead statuses hang off the pseudo-pipeline -1)",
        {"entity": "`deal` or `lead`: what moves through it", "is_default": "1 for the main pipeline"},
    ),
    "stages": (
        "The stages of each pipeline",
        {
            "id": "The stage id as the CRM gives it (amoCRM 142 won, 143 lost; Bitrix24 e.g. `C1:WON`)",
            "entity": "`deal` or `lead`",
            "semantics": "`open`, `won` or `lost`",
            "key": "This row's key, `source:pipeline_id:id`",
        },
    ),
    "deals": (
        "Deals (amoCRM calls them leads)",
        {
            "name": "The deal's title",
            "stage_id": "The stage it is in now",
            "status": "`open`, `won` or `lost` (its stage's semantics)",
            "contact_id": "The main contact (`contacts.id`)",
            "closed_at": "When it entered its final (won or lost) stage; empty while open",
            "lead_id": "The lead it was converted from (`leads.id`; Bitrix24 only)",
        },
    ),
    "deal_contacts": (
        "Every contact linked to a deal",
        {"deal_id": "The deal (`deals.id`)", "is_main": "1 for the deal's main contact"},
    ),
    "leads": (
        "Bitrix24 leads (amoCRM has none)",
        {
            "title": "The lead's title",
            "status_id": "Its status (a stage of the pseudo-pipeline -1)",
            "status": "`open`, `converted` or `junk`",
            "closed_at": "When it was converted or junked; empty while open",
        },
    ),
    "contacts": ("Contact cards (KPIs are computed per contact)", {}),
    "companies": ("Company cards (KPIs are computed per company)", {}),
    "tasks": (
        "Tasks",
        {
            "text": "The task's text",
            "responsible_user_id": "Who must do it (`users.id`)",
            "is_completed": "1 when done",
            "due_at": "The deadline (ISO 8601 UTC)",
            "completed_at": "When it was completed",
        },
    ),
    "calls": (
        "Phone calls",
        {
            "direction": "`in` or `out`",
            "status": "`answered`, `missed` (incoming, unanswered) or `failed` (outgoing, not connected)",
            "duration_s": "Talk time, seconds",
            "started_at": "When the call started (ISO 8601 UTC)",
            "phone": "The client's number",
            "activity_id": "The timeline activity recording the call (`activities.id`)",
            "is_automated": "1 for an automated call no manager took part in (Bitrix24 CALL_TYPE 5)",
        },
    ),
    "activities": (
        "Every client interaction, calls included",
        {
            "id": "amoCRM `note:<id>` or `event:<id>`; Bitrix24 the activity's id",
            "channel": "`call`, `email`, `chat`, `meeting` or `sms`",
            "direction": "`in` or `out`; empty for meetings",
            "is_completed": "1 done; 0 planned, not done yet (`at` is then the planned start)",
        },
    ),
    "activity_bindings": (
        "Every record an activity concerns (Bitrix24 binds one to several; amoCRM: none here)",
        {"activity_id": "The activity (`activities.id`)"},
    ),
    "survey_answers": (
        "Survey scores the CRMs record themselves",
        {
            "id": "amoCRM `event:<id>`; Bitrix24 `call_vote:<call id>`",
            "kind": "`nps` (0-10) or `csat` (1-5)",
            "score": "The score",
            "origin": "`amocrm_event` or `call_vote`",
        },
    ),
    "stage_changes": (
        "Every stage a deal or Bitrix24 lead entered",
        {
            "id": "amoCRM the event's id; Bitrix24 `deal:<id>` or `lead:<id>`",
            "entity": "`deal` or `lead`",
            "entity_id": "The deal's or lead's id",
            "stage_id": "The stage entered",
            "previous_stage_id": "The stage before; empty for the entry row",
            "changed_at": "When (ISO 8601 UTC)",
        },
    ),
    "sync_state": (
        "Per source and stream: where the next incremental read starts",
        {
            "stream": "The stream",
            "bookmark": "Where the next read starts (JSON)",
            "last_run_started_at": "Start of the stream's last run",
            "last_success_at": "End of its last successful run",
        },
    ),
    "sync_runs": (
        "A log of every stream run",
        {
            "id": "Row id",
            "run_id": "The sync run it belongs to",
            "stream": "The stream",
            "started_at": "When it started",
            "finished_at": "When it ended",
            "status": "`running`, `ok`, `failed`, `skipped` or `interrupted`",
            "rows": "Entities written, deleted or restored",
            "requests": "HTTP requests made",
            "error": "Why it failed, was skipped or interrupted",
            "warnings": "Values not stored as sent (JSON: count and a sample)",
        },
    ),
    "kpi_values": (
        "KPI history: one row per change of a client's value (the value at T is the newest row at or before T)",
        {"entity_type": "`contact` or `company`", "entity_id": "The client's id"},
    ),
    "kpi_runs": (
        "One row per KPI computation",
        {
            "id": "Row id",
            "kpis": "The KPIs computed (comma-separated)",
            "clients": "Cards computed",
            "values_changed": "Values that changed",
            "seconds": "How long it took",
        },
    ),
    "kpi_dirty": (
        "Clients and deals whose rows were written since the source's last KPI pass (incremental passes)",
        {"entity_type": "`contact`, `company` or `deal`", "entity_id": "Its id"},
    ),
    "kpi_passes": (
        "The last KPI pass over all of a source's clients",
        {
            "computed_at": "Its clock",
            "full_at": "The last full pass's clock",
            "basis": "What its values follow from (JSON: settings, digests of the KPI definitions)",
        },
    ),
    "kpi_anchors": (
        "The moment each day-count KPI counts from, per client (incremental passes)",
        {
            "entity_type": "`contact` or `company`",
            "entity_id": "The client's id",
            "at": "The moment, as a Julian day; empty when there is none",
        },
    ),
    "kpi_fields": (
        "The CRM card field each KPI is written to",
        {
            "entity_type": "`contact` or `company`",
            "label": "The field's name (`[kpi.fields]`)",
            "code": "The field's code in the CRM",
            "type": "The field's type in the CRM",
            "resolved_at": "When it was found or created",
        },
    ),
    "kpi_written": (
        "The last value written to each card's field (a value is sent only when it differs)",
        {
            "entity_type": "`contact` or `company`",
            "entity_id": "The card's id",
            "written_at": "When it was written",
        },
    ),
    "writeback_log": (
        "Every write-back attempt, one row per card and field",
        {
            "id": "Row id",
            "entity_type": "`contact` or `company`",
            "entity_id": "The card's id",
            "field": "The field's key (`kpi_fields.field_key`)",
            "old_value": "The value last written",
            "new_value": "The value sent",
            "status": "`sending`, `ok`, `failed` or `unknown`",
            "error": "Why it failed",
        },
    ),
    "metrics": (
        "Team and business measures (funnel, managers, revenue, churn, LTV, CAC, surveys)",
        {
            "measure": "The measure (defined in connector/measures/sql/)",
            "period": "A month start in the account's time zone, or `all`",
            "dimension": "What the value is broken down by (`pipeline`, `stage`, `manager`, `channel`), or `all`",
            "dimension_value": "The pipeline, stage, manager, channel ... or `all`",
        },
    ),
}

# The column a link to the table shows (what Datasette would guess, said outright), and the
# label of tables without a name.
LABELS = {
    **{t: "name" for t in keys.KEYS},
    "leads": "title",
    "sync_runs": "stream",
    "kpi_fields": "label",
}

# Facets offered on a table's page (plain columns: a facet on a generated one scans the table).
FACETS = {
    "deals": ["source", "status", "channel"],
    "leads": ["source", "status", "channel"],
    "tasks": ["source", "is_completed"],
    "calls": ["source", "direction", "status"],
    "activities": ["source", "channel", "direction"],
    "sync_runs": ["source", "stream", "status"],
}

QUERIES = {
    "funnel": {
        "title": "Funnel: deals per stage",
        "description": "Per pipeline and stage: deals that entered the stage since :since "
        "(empty: ever), and deals in it now. Dates as 2026-01-01.",
        "sql": """SELECT s.source, p.name AS pipeline, s.name AS stage, s.semantics,
  (SELECT count(DISTINCT sc.entity_id) FROM stage_changes sc
    WHERE sc.source = s.source AND sc.entity = 'deal' AND sc.pipeline_id = s.pipeline_id
      AND sc.stage_id = s.id AND sc.changed_at >= :since) AS deals_entered,
  (SELECT count(*) FROM deals d WHERE d.source = s.source AND d.pipeline_id = s.pipeline_id
      AND d.stage_id = s.id AND d.is_deleted = 0) AS deals_now
FROM stages s JOIN pipelines p ON p.source = s.source AND p.id = s.pipeline_id
WHERE s.entity = 'deal'
ORDER BY s.source, p.sort, p.id, s.sort, s.id""",
    },
    "manager_league": {
        "title": "Manager league",
        "description": "Per manager: deals won and lost, win rate and revenue won, of the deals "
        "closed since :since (empty: ever).",
        "sql": """SELECT d.source, u.name AS manager, d.responsible_user_id,
  sum(d.status = 'won') AS won, sum(d.status = 'lost') AS lost,
  round(100.0 * sum(d.status = 'won') / sum(d.status IN ('won', 'lost')), 1) AS win_rate_pct,
  round(sum(CASE WHEN d.status = 'won' THEN d.amount END), 2) AS revenue_won, d.currency
FROM deals d LEFT JOIN users u ON u.source = d.source AND u.id = d.responsible_user_id
WHERE d.is_deleted = 0 AND d.status IN ('won', 'lost') AND d.closed_at >= :since
GROUP BY d.source, d.responsible_user_id, d.currency
ORDER BY revenue_won DESC""",
    },
    "churn": {
        "title": "Churn by month",
        "description": "Clients active at the month's start, churned during it, and the churn "
        "rate: the `churn` measures (computed with the KPIs; [kpi] churn_days).",
        "sql": """SELECT source, period,
  max(CASE WHEN measure = 'active_clients' THEN value END) AS active_clients,
  max(CASE WHEN measure = 'churned_clients' THEN value END) AS churned_clients,
  max(CASE WHEN measure = 'churn_rate' THEN value END) AS churn_rate_pct
FROM metrics
WHERE measure IN ('active_clients', 'churned_clients', 'churn_rate') AND dimension = 'all'
GROUP BY source, period
ORDER BY source, period DESC""",
    },
    "lapsed_clients": {
        "title": "Lapsed clients",
        "description": "Contacts whose last won deal is more than :days days old (empty: 180), "
        "most valuable first.",
        "sql": """SELECT c.source, c.id, c.name, u.name AS manager, max(d.closed_at) AS last_won_at,
  count(*) AS deals_won, round(sum(d.amount), 2) AS revenue_won
FROM contacts c
JOIN deals d ON d.source = c.source AND d.contact_id = c.id AND d.status = 'won' AND d.is_deleted = 0
LEFT JOIN users u ON u.source = c.source AND u.id = c.responsible_user_id
WHERE c.is_deleted = 0
GROUP BY c.source, c.id
HAVING max(d.closed_at) < strftime('%Y-%m-%dT%H:%M:%SZ', 'now',
  '-' || coalesce(nullif(:days, ''), 180) || ' days')
ORDER BY revenue_won DESC""",
    },
}


def _link_lines(table: str) -> dict[str, str]:
    return {
        column: f"Link to `{target}` (generated from the ids: `source:id`)"
        for column, target, _ in keys.LINKS.get(table, ())
    }


def describe(table: str) -> tuple[str, dict[str, str]]:
    """A table's description and every column's (the common lines, its own, its links')."""
    text, own = TABLES[table]
    return text, {**COMMON, **_link_lines(table), **own}


def db_name(mirror_path: str) -> str:
    """The name Datasette gives the mirror: its file name without the extension."""
    return os.path.splitext(os.path.basename(mirror_path))[0]


def metadata(name: str, columns: dict[str, list[str]]) -> dict:
    """The metadata document for the database `name` whose tables have `columns`
    (table -> column names; tables not described here are left out)."""
    tables = {}
    for table, cols in columns.items():
        if table not in TABLES:
            continue
        text, lines = describe(table)
        entry = {"description": text, "columns": {c: lines[c] for c in cols if c in lines}}
        if table in LABELS:
            entry["label_column"] = LABELS[table]
        if table in FACETS:
            entry["facets"] = [c for c in FACETS[table] if c in cols]
        tables[table] = entry
    return {
        "title": "CRM mirror",
        "description": "amoCRM and Bitrix24 accounts mirrored by crm-connector. Every row has "
        "`source` (the account) and the CRM's `id`; the `*_key` columns link rows.",
        "databases": {name: {"tables": tables, "queries": QUERIES}},
    }


def default_path(mirror_path: str) -> str:
    """Where the metadata goes by default: beside the mirror, `<stem>.metadata.json`."""
    return os.path.join(
        os.path.dirname(os.path.abspath(mirror_path)), f"{db_name(mirror_path)}.metadata.json"
    )


def write(mirror_path: str, out: str | None = None) -> str:
    """Write the metadata of the mirror at `mirror_path` (read only: nothing in it changes) to
    `out` (default: `default_path`); its path."""
    from connector.mirror.store import Mirror

    with Mirror(mirror_path, read_only=True) as m:
        names = [r[0] for r in m.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        columns = {t: [r[1] for r in m.conn.execute(f"PRAGMA table_xinfo([{t}])")] for t in names}
    out = out or default_path(mirror_path)
    doc = metadata(db_name(mirror_path), columns)
    tmp = f"{out}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, ensure_ascii=False, indent=2)
        fh.write("\n")
    os.replace(tmp, out)
    return out
