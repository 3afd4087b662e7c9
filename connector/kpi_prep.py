"""Scratch tables the KPI queries read, built once per (source, target) in the TEMP schema.

Every KPI in `kpi_sql/` is written against these, so one query serves contacts and companies:

- `kpi_clients(entity_id)`: the target's cards that are not deleted.
- `kpi_deals(entity_id, deal_id, status, amount, created_at, closed_at)`: each client's deals
  (contact: `deal_contacts` or the deal's main contact; company: `deals.company_id`), deleted
  deals left out, `amount` in the source's base currency (NULL when no rate is known).
- `kpi_calls(entity_id, direction, status, duration_s, started_at)`: calls on the client's card
  or on its deals. `kpi_tasks(entity_id, is_completed, due_at)`: tasks likewise.
- `kpi_acts(kind, ref_id, at)`: answers for first response: outgoing calls and completed tasks,
  `kind` = 'deal' (ref_id a deal) or 'client' (ref_id a client card).

Building them costs one pass over each mirror table; the KPIs are then small GROUP BYs.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

TABLES = ("kpi_clients", "kpi_rates", "kpi_deals", "kpi_calls", "kpi_tasks", "kpi_acts")

_CLIENTS = {
    "contact": "SELECT id FROM contacts WHERE source = :source AND is_deleted = 0",
    "company": "SELECT id FROM companies WHERE source = :source AND is_deleted = 0",
}

# (client id, deal id) pairs; UNION removes a link seen both ways.
_LINKS = {
    "contact": """SELECT contact_id AS entity_id, deal_id FROM deal_contacts WHERE source = :source
                  UNION SELECT contact_id, id FROM deals
                  WHERE source = :source AND contact_id IS NOT NULL""",
    "company": """SELECT company_id AS entity_id, id AS deal_id FROM deals
                  WHERE source = :source AND company_id IS NOT NULL""",
}

_DEALS = """
INSERT INTO temp.kpi_deals
SELECT l.entity_id, d.id, d.status,
       CASE WHEN coalesce(d.currency, '') IN ('', :base) THEN coalesce(d.amount, 0)
            ELSE coalesce(d.amount, 0) * r.rate END,
       d.created_at, d.closed_at
FROM ({links}) l
JOIN temp.kpi_clients c ON c.entity_id = l.entity_id
JOIN main.deals d ON d.source = :source AND d.id = l.deal_id AND d.is_deleted = 0
LEFT JOIN temp.kpi_rates r ON r.currency = upper(d.currency)
"""

_CALLS = """
INSERT INTO temp.kpi_calls
SELECT k.entity_id, k.direction, k.status, k.duration_s, k.started_at
FROM main.calls k JOIN temp.kpi_clients c ON c.entity_id = k.entity_id
WHERE k.source = :source AND k.entity_type = :target AND k.is_deleted = 0
UNION ALL
SELECT d.entity_id, k.direction, k.status, k.duration_s, k.started_at
FROM temp.kpi_deals d JOIN main.calls k
     ON k.source = :source AND k.entity_type = 'deal' AND k.entity_id = d.deal_id
WHERE k.is_deleted = 0
"""

_TASKS = """
INSERT INTO temp.kpi_tasks
SELECT t.entity_id, coalesce(t.is_completed, 0), t.due_at
FROM main.tasks t JOIN temp.kpi_clients c ON c.entity_id = t.entity_id
WHERE t.source = :source AND t.entity_type = :target AND t.is_deleted = 0
UNION ALL
SELECT d.entity_id, coalesce(t.is_completed, 0), t.due_at
FROM temp.kpi_deals d JOIN main.tasks t
     ON t.source = :source AND t.entity_type = 'deal' AND t.entity_id = d.deal_id
WHERE t.is_deleted = 0
"""

_ACTS = """
INSERT INTO temp.kpi_acts
SELECT CASE entity_type WHEN 'deal' THEN 'deal' ELSE 'client' END, entity_id, started_at
FROM main.calls WHERE source = :source AND entity_type IN (:target, 'deal')
     AND direction = 'out' AND is_deleted = 0 AND started_at IS NOT NULL
UNION ALL
SELECT CASE entity_type WHEN 'deal' THEN 'deal' ELSE 'client' END, entity_id, completed_at
FROM main.tasks WHERE source = :source AND entity_type IN (:target, 'deal')
     AND is_completed = 1 AND is_deleted = 0 AND completed_at IS NOT NULL
"""


def drop(conn) -> None:
    for t in TABLES:
        conn.execute(f"DROP TABLE IF EXISTS temp.{t}")


def build(conn, source: str, target: str, base_currency: str, rates: dict[str, float]) -> None:
    """(Re)build the scratch tables for one source and target."""
    drop(conn)
    p = {"source": source, "target": target, "base": base_currency.upper()}
    conn.execute("CREATE TEMP TABLE kpi_clients (entity_id INTEGER PRIMARY KEY)")
    conn.execute(f"INSERT INTO temp.kpi_clients {_CLIENTS[target]}", p)
    conn.execute("CREATE TEMP TABLE kpi_rates (currency TEXT PRIMARY KEY, rate REAL)")
    conn.executemany("INSERT INTO temp.kpi_rates VALUES (?, ?)",
                     [(c.upper(), r) for c, r in rates.items()])
    conn.execute("CREATE TEMP TABLE kpi_deals (entity_id INTEGER, deal_id INTEGER, status TEXT, "
                 "amount REAL, created_at TEXT, closed_at TEXT)")
    conn.execute(_DEALS.format(links=_LINKS[target]), p)
    conn.execute("CREATE INDEX temp.kpi_deals_entity ON kpi_deals (entity_id, status)")
    conn.execute("CREATE TEMP TABLE kpi_calls (entity_id INTEGER, direction TEXT, status TEXT, "
                 "duration_s INTEGER, started_at TEXT)")
    conn.execute(_CALLS, p)
    conn.execute("CREATE INDEX temp.kpi_calls_entity ON kpi_calls (entity_id, started_at)")
    conn.execute("CREATE TEMP TABLE kpi_tasks (entity_id INTEGER, is_completed INTEGER, due_at TEXT)")
    conn.execute(_TASKS, p)
    conn.execute("CREATE INDEX temp.kpi_tasks_entity ON kpi_tasks (entity_id)")
    conn.execute("CREATE TEMP TABLE kpi_acts (kind TEXT, ref_id INTEGER, at TEXT)")
    conn.execute(_ACTS, p)
    conn.execute("CREATE INDEX temp.kpi_acts_ref ON kpi_acts (kind, ref_id, at)")


def unconverted_currencies(conn, source: str, base_currency: str, rates: dict[str, float]) -> list[str]:
    """Currencies of live deals that are neither the base currency nor in the rates."""
    known = {base_currency.upper(), *(c.upper() for c in rates)}
    rows = conn.execute("SELECT DISTINCT upper(currency) FROM deals WHERE source = ? "
                        "AND is_deleted = 0 AND coalesce(currency, '') != ''", (source,)).fetchall()
    return sorted(r[0] for r in rows if r[0] not in known)
