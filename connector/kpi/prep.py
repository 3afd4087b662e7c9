"""Scratch tables the KPI queries read, built once per (source, target) in the TEMP schema.

Every KPI in `kpi/sql/` is written against these, so one query serves contacts and companies:

- `kpi_clients(entity_id)`: the target's cards that are not deleted.
- `kpi_deals(entity_id, deal_id, status, amount, created_at, closed_at, answered_at)`: each
  client's deals (contact: `deal_contacts` or the deal's main contact; company:
  `deals.company_id`), deleted deals left out, `amount` in the source's base currency (NULL
  when no rate is known), `answered_at` the first outgoing call or completed task on the deal
  itself at or after its creation.
- `kpi_calls(entity_id, call_id, direction, status, duration_s, started_at)`: a manager's calls
  (not automated) of the last `calls_days` days on the client's card or on its deals, the
  records its activity is bound to (`activity_bindings`) included. `kpi_tasks(entity_id, task_id,
  is_completed, due_at)`: open tasks likewise.
- `kpi_acts(ref_id, at)`: a manager's outgoing calls and completed tasks on client cards (first
  response).
- `kpi_activities(entity_id, act_id, channel, direction, at)`: every live interaction
  (`activities` done, or due by `now`; not an automated call's) on the client's card or on its
  deals, bindings included, all time.
- `kpi_turns(entity_id, turn_id, asks, at)`: the same interactions as turns of a conversation,
  for response time: `asks` 1 for the client's question (an incoming message, e-mail or SMS, or
  an incoming call nobody answered), 0 for an answer (anything outgoing, or an incoming call a
  manager took). Calls come from `calls`, which knows whether a call was answered; the other
  channels from `activities` (whose call rows are the same calls). Bindings count, planned
  activities ahead and automated calls do not, as for `kpi_activities`.
- `kpi_survey(entity_id, answer_id, kind, score, at)`: survey answers on the client's card or
  deals (`survey_answers`, when the mirror has it) and the scores in its card fields
  (`temp.kpi_card_survey`, read from the cards by `connector.kpi.survey` before the run).
- `kpi_deal_totals(entity_id, deals, won, lost, open, won_amount, won_amount_avg, won_cycle_days,
  last_won_at)`: every client's deal aggregates from one pass over `kpi_deals` (the deal-count
  and revenue KPIs read their column from here instead of each grouping the deals again).

`build_source` reads the mirror once for both targets: each live deal (`kpi_d`), the answers on
deals and client cards (`kpi_all_acts`), and the turns, recent calls and open tasks on client
cards and deals (`kpi_turn_picks`, `kpi_call_picks`, `kpi_task_picks`). `build` then makes the
per-target tables from those, matching a row on a deal to the deal's clients through an index of
`kpi_deals` on deal_id. The KPIs are then small GROUP BYs or key seeks over client-clustered rows.
"""

from __future__ import annotations

import json
import logging

log = logging.getLogger(__name__)

SOURCE_TABLES = (
    "kpi_rates",
    "kpi_d",
    "kpi_all_acts",
    "kpi_deal_acts",
    "kpi_card_survey",
    "kpi_want",
    "kpi_dids",
    "kpi_subset",
    "kpi_turn_picks",
    "kpi_call_picks",
    "kpi_task_picks",
    "kpi_scope_calls",
    "kpi_ids",
)
TABLES = (
    "kpi_clients",
    "kpi_deals",
    "kpi_deal_totals",
    "kpi_calls",
    "kpi_tasks",
    "kpi_acts",
    "kpi_custom",
    "kpi_recent",
    "kpi_changed",
    "kpi_activities",
    "kpi_turns",
    "kpi_survey",
)

CLIENTS = {
    "contact": "SELECT id FROM contacts WHERE source = :source AND is_deleted = 0",
    "company": "SELECT id FROM companies WHERE source = :source AND is_deleted = 0",
}

# Every live deal once, amount converted, with the first answer on the deal itself.
_SOURCE_DEALS = """
INSERT INTO temp.kpi_d
SELECT d.id, d.contact_id, d.company_id, d.status,
       CASE WHEN coalesce(d.currency, '') IN ('', :base) THEN coalesce(d.amount, 0)
            ELSE coalesce(d.amount, 0) * r.rate END,
       d.created_at, d.closed_at,
       (SELECT min(a.at) FROM temp.kpi_deal_acts a WHERE a.ref_id = d.id AND a.at >= d.created_at)
FROM main.deals d {hint}
LEFT JOIN temp.kpi_rates r ON r.currency = upper(d.currency)
WHERE d.source = :source AND d.is_deleted = 0 {scope}
"""

# NOT INDEXED: one sequential pass beats millions of index-to-row hops for these columns. For a
# few clients (`scoped`), the index on (source, entity_type, entity_id) finds just their rows.
# A manager's outgoing call (an automated one is no answer) on the record, or bound to it, or a
# completed task on it: (record type, record id, when), for the record types `{kinds}`. The bound
# calls are found from the bindings through the index on activity_id (whatever the statistics
# say: with no call bound to an activity they call that index useless), not by a pass over calls.
_ANSWERS = """
SELECT entity_type, entity_id, started_at FROM {calls} {hint}
WHERE source = :source AND entity_type IN ({kinds}) AND direction = 'out' AND is_deleted = 0
      AND is_automated = 0 AND started_at IS NOT NULL {scope}
UNION ALL
SELECT b.entity_type, b.entity_id, c.started_at FROM main.activity_bindings b
CROSS JOIN main.calls c INDEXED BY idx_calls_activity ON c.source = b.source AND c.activity_id = b.activity_id
WHERE b.source = :source AND b.entity_type IN ({kinds}) AND c.direction = 'out' AND c.is_deleted = 0
      AND c.is_automated = 0 AND c.started_at IS NOT NULL {bscope}
UNION ALL
SELECT entity_type, entity_id, completed_at FROM main.tasks {hint}
WHERE source = :source AND entity_type IN ({kinds}) AND is_completed = 1 AND is_deleted = 0
      AND completed_at IS NOT NULL {scope}
"""
# A full pass reads the answers on deals and on both targets' cards in one pass (`kpi_all_acts`).
_ALL_KINDS = "'contact', 'company', 'deal'"

# A pass for some clients reads their calls once (`kpi_scope_calls`, the columns the KPIs use):
# the answers, turns and recent calls then come from it instead of three passes over `calls`.
_SCOPE_CALLS = """
CREATE TEMP TABLE kpi_scope_calls AS
SELECT source, id, entity_type, entity_id, activity_id, direction, status, duration_s, started_at,
       responsible_user_id, is_automated, is_deleted
FROM main.calls NOT INDEXED WHERE source = :source {cscope}
"""

_FULL = {
    "hint": "NOT INDEXED",
    "scope": "",
    "bscope": "",
    "cscope": "",
    "ascope": "",
    "kinds": ":kind",
    "calls": "main.calls",
}


def _scoped(
    sql: str,
    ids: str,
    col: str = "entity_id",
    scan: bool = False,
    kinds: str = ":kind",
    calls: str = "main.calls",
) -> str:
    """`sql` for the rows of some owners (`ids`: a query of their ids) instead of all: found
    by index, or with `scan` by one sequential pass that keeps theirs; `calls`: the table
    holding (at least) their calls."""
    bound = f"SELECT b.activity_id FROM main.activity_bindings b WHERE b.source = :source AND b.entity_id IN ({ids})"
    return sql.format(
        kinds=kinds,
        calls=calls,
        hint="NOT INDEXED" if scan else "",
        scope=f"AND {col} IN ({ids})",
        bscope=f"AND b.entity_id IN ({ids})",
        # a call or an interaction of these owners, or bound to one of them
        cscope=f"AND (entity_id IN ({ids}) OR activity_id IN ({bound}))",
        ascope=f"AND (entity_id IN ({ids}) OR id IN ({bound}))",
    )


# What one index look-up of an owner's rows costs, in rows of a sequential pass (a few random
# page reads against a run through pages in order).
SEEK_ROWS = 15


def _scan_better(conn, table: str, keys: int) -> bool:
    """Whether one pass over `table` beats looking `keys` owners up in its index."""
    rows = conn.execute(f"SELECT max(rowid) FROM main.{table}").fetchone()[0] or 0
    return keys * SEEK_ROWS > rows


_SUBSET_CLIENTS = "SELECT entity_id FROM temp.kpi_clients"
_SUBSET_DEALS = "SELECT deal_id FROM temp.kpi_deals"

# The deals of a few clients (temp.kpi_want: entity_type, entity_id), found by index.
_WANTED_DEALS = """
SELECT d.id FROM temp.kpi_want w JOIN main.deals d ON d.source = :source AND d.contact_id = w.entity_id
WHERE w.entity_type = 'contact'
UNION
SELECT l.deal_id FROM temp.kpi_want w
JOIN main.deal_contacts l ON l.source = :source AND l.contact_id = w.entity_id
WHERE w.entity_type = 'contact'
UNION
SELECT d.id FROM temp.kpi_want w JOIN main.deals d ON d.source = :source AND d.company_id = w.entity_id
WHERE w.entity_type = 'company'
"""

# Each client's deals, clustered by client. The deals are read in deal order (a sequential pass
# over kpi_d, with in-order seeks into deal_contacts' primary key) and the rows sorted once by
# (client, deal): seeking every deal of every client in client order would jump around kpi_d,
# and those random reads grow faster than the data. CROSS JOIN keeps that join order.
_DEAL_COLS = "d.deal_id, d.status, d.amount, d.created_at, d.closed_at, d.answered_at"
_DEALS = {
    # every linked contact, plus the deal's main contact when deal_contacts lacks it
    "contact": f"""
        INSERT OR IGNORE INTO temp.kpi_deals
        SELECT l.contact_id, {_DEAL_COLS}
        FROM temp.kpi_d d
        CROSS JOIN main.deal_contacts l ON l.source = :source AND l.deal_id = d.deal_id
        CROSS JOIN temp.kpi_clients c ON c.entity_id = l.contact_id
        UNION ALL
        SELECT d.contact_id, {_DEAL_COLS}
        FROM temp.kpi_d d CROSS JOIN temp.kpi_clients c ON c.entity_id = d.contact_id
        WHERE NOT EXISTS (SELECT 1 FROM main.deal_contacts l WHERE l.source = :source
                          AND l.deal_id = d.deal_id AND l.contact_id = d.contact_id)
        ORDER BY 1, 2""",
    "company": f"""
        INSERT INTO temp.kpi_deals
        SELECT d.company_id, {_DEAL_COLS}
        FROM temp.kpi_d d CROSS JOIN temp.kpi_clients c ON c.entity_id = d.company_id
        ORDER BY 1, 2""",
}

# Per client, over its live deals (a client without deals gets zero counts and empty aggregates):
# deals: all; won / lost / open: by status; won_amount: sum of won amounts (converted; NULL with
# no known amount); won_amount_avg: their mean; won_cycle_days: mean closed_at - created_at of won
# deals, in days; last_won_at: the latest won deal's close (its creation when never closed).
_DEAL_TOTALS = """
INSERT INTO temp.kpi_deal_totals
SELECT c.entity_id, count(d.deal_id),
       coalesce(sum(d.status = 'won'), 0), coalesce(sum(d.status = 'lost'), 0),
       coalesce(sum(d.status = 'open'), 0),
       sum(CASE WHEN d.status = 'won' THEN d.amount END),
       avg(CASE WHEN d.status = 'won' THEN d.amount END),
       avg(CASE WHEN d.status = 'won' THEN julianday(d.closed_at) - julianday(d.created_at) END),
       max(CASE WHEN d.status = 'won' THEN coalesce(d.closed_at, d.created_at) END)
FROM temp.kpi_clients c LEFT JOIN temp.kpi_deals d ON d.entity_id = c.entity_id
GROUP BY c.entity_id
"""

# Calls inside the [kpi] calls_days window and open tasks: the only ones calls_* and *_tasks read.
# One sequential scan picks them (few rows) for both targets, then `build` matches them to each
# target's clients and their deals.
# A call counts once for its own record and once for each record its activity is bound to
# (`activity_bindings`); automated calls (Bitrix24 informational) are no manager's calls.
_RECENT_CALLS = """
CREATE TEMP TABLE kpi_call_picks AS
WITH picked AS (
    SELECT id, entity_type, entity_id, activity_id, direction, status, duration_s, started_at
    FROM {calls} NOT INDEXED
    WHERE source = :source AND is_deleted = 0 AND is_automated = 0
      AND started_at >= strftime('%Y-%m-%dT%H:%M:%SZ', :now, '-' || :calls_days || ' days') {cscope})
SELECT id, entity_type, entity_id, direction, status, duration_s, started_at
FROM picked WHERE entity_type IN ('contact', 'company', 'deal') {scope}
UNION ALL
SELECT k.id, b.entity_type, b.entity_id, k.direction, k.status, k.duration_s, k.started_at
FROM picked k JOIN main.activity_bindings b ON b.source = :source AND b.activity_id = k.activity_id
WHERE b.entity_type IN ('contact', 'company', 'deal') {bscope}
"""


# Their owners: the client's own card, or a live deal of the client. The deal side starts from
# the picked rows and looks each deal's clients up in `kpi_deals` by its index on deal_id (the
# pairs of client and live deal, built once per target: for contacts the deal's main contact and
# deal_contacts' links), rather than walking every client's deals; the scratch table's key drops a
# row reached both ways. The picked rows are read in one sequential pass (no index on them:
# building one and hopping from it to each row cost more than the scan), so CROSS JOIN keeps them
# the outer loop and the clients a key seek.
def _owned(table: str, cols: str, target: str, picked: str = "kpi_recent") -> str:
    """INSERT every picked row once per client owning it (its card or one of its deals)."""
    return (
        f"INSERT OR IGNORE INTO temp.{table} "
        f"SELECT c.entity_id, {cols} FROM temp.{picked} k NOT INDEXED "
        f"CROSS JOIN temp.kpi_clients c ON c.entity_id = k.entity_id WHERE k.entity_type = :target "
        f"UNION ALL SELECT d.entity_id, {cols} FROM temp.{picked} k NOT INDEXED "
        f"CROSS JOIN temp.kpi_deals d INDEXED BY kpi_deals_deal ON d.deal_id = k.entity_id "
        f"WHERE k.entity_type = 'deal'"
    )


_CALL_COLS = "k.id, k.direction, k.status, k.duration_s, k.started_at"

_OPEN_TASKS = """
CREATE TEMP TABLE kpi_task_picks AS
SELECT id, entity_type, entity_id, due_at FROM main.tasks {hint}
WHERE source = :source AND entity_type IN ('contact', 'company', 'deal') AND is_deleted = 0
  AND coalesce(is_completed, 0) = 0 {scope}
"""

_TASK_COLS = "k.id, 0, k.due_at"

# Interactions: done (or due by now: a planned meeting next week is none yet), not the record of
# an automated call; for their own record and every record they are bound to.
_ACTIVITIES = """
CREATE TEMP TABLE kpi_recent AS
WITH picked AS (
    SELECT id, entity_type, entity_id, channel, direction, at FROM main.activities
    WHERE source = :source AND is_deleted = 0 AND at IS NOT NULL AND (is_completed = 1 OR at <= :now)
      AND id NOT IN (SELECT activity_id FROM main.calls WHERE source = :source AND is_automated = 1
                     AND activity_id IS NOT NULL) {ascope})
SELECT id, entity_type, entity_id, channel, direction, at FROM picked
WHERE entity_type IN (:target, 'deal') {scope}
UNION ALL
SELECT k.id, b.entity_type, b.entity_id, k.channel, k.direction, k.at
FROM picked k JOIN main.activity_bindings b ON b.source = :source AND b.activity_id = k.id
WHERE b.entity_type IN (:target, 'deal') {bscope}
"""

_ACT_COLS = "k.id, k.channel, k.direction, k.at"


def turn_rows(hint: str = "", bound: bool = False, calls: str = "main.calls") -> str:
    """A conversation's turns, for response times here and in the team measures: `asks` 1 for the
    client's question (an incoming message, e-mail or SMS, or an incoming call nobody answered),
    0 for an answer (anything outgoing, or an incoming call a manager took); `manager` the
    responsible user. Calls come from `calls`, which knows whether one was answered, the other
    channels from `activities` (whose call rows are the same calls); a robot's call and an
    activity planned after `:now` are neither. `{ascope}` / `{cscope}` stay to be filled.

    `bound`: the same turns once for each record their activity is bound to
    (`activity_bindings`), that record as the owner (entity_type, entity_id); read from the
    bindings, so only bound turns are touched. `{bscope}` stays to be filled instead."""
    if bound:
        acts = "main.activity_bindings b CROSS JOIN main.activities a ON a.source = b.source AND a.id = b.activity_id"
        # by the index on activity_id whatever the statistics say (all NULL where no call has
        # an activity): a scan of the calls per binding would be quadratic
        calls = (
            "main.activity_bindings b CROSS JOIN main.calls c INDEXED BY idx_calls_activity "
            "ON c.source = b.source AND c.activity_id = b.activity_id"
        )
        a_owner = c_owner = "b.entity_type, b.entity_id"
        a_scope = c_scope = "AND b.source = :source {bscope}"
    else:
        acts, calls = f"main.activities a {hint}", f"{calls} c {hint}"
        a_owner, c_owner = "a.entity_type, a.entity_id", "c.entity_type, c.entity_id"
        a_scope, c_scope = "{ascope}", "{cscope}"
    return f"""
    SELECT 'a' || a.id AS id, a.id AS act_id, {a_owner}, a.direction = 'in' AS asks, a.at,
           a.responsible_user_id AS manager
    FROM {acts}
    WHERE a.source = :source AND a.is_deleted = 0 AND a.at IS NOT NULL AND (a.is_completed = 1 OR a.at <= :now)
      AND a.direction IN ('in', 'out') AND coalesce(a.channel, '') != 'call' {a_scope}
    UNION ALL
    SELECT 'c' || c.id, c.activity_id, {c_owner}, c.direction = 'in' AND c.status IS NOT 'answered',
           c.started_at, c.responsible_user_id
    FROM {calls}
    WHERE c.source = :source AND c.is_deleted = 0 AND c.is_automated = 0
      AND c.started_at IS NOT NULL AND c.direction IN ('in', 'out') {c_scope}"""


# Turns on client cards and deals, and those bound to them (as `_ACTIVITIES` picks interactions),
# read once for both targets: `build` matches them to each target's clients.
_TURNS = f"""
CREATE TEMP TABLE kpi_turn_picks AS
SELECT id, entity_type, entity_id, asks, at FROM ({turn_rows(calls="{calls}")})
WHERE entity_type IN ('contact', 'company', 'deal') {{scope}}
UNION ALL
SELECT id, entity_type, entity_id, asks, at FROM ({turn_rows(bound=True)})
WHERE entity_type IN ('contact', 'company', 'deal')
"""

_TURN_COLS = "k.id, k.asks, k.at"

# Answers from the CRMs' own sources (survey_answers) and from card fields.
_SURVEY_ANSWERS = """
CREATE TEMP TABLE kpi_recent AS
SELECT id, entity_type, entity_id, kind, score, at FROM main.survey_answers {hint}
WHERE source = :source AND entity_type IN (:target, 'deal') AND score IS NOT NULL {scope}
UNION ALL
SELECT 'card:' || kind || ':' || entity_id AS id, entity_type, entity_id, kind, score, at
FROM temp.kpi_card_survey WHERE entity_type = :target
"""

_SURVEY_COLS = "k.id, k.kind, k.score, k.at"


def drop(conn, tables=TABLES + SOURCE_TABLES) -> None:
    for t in tables:
        conn.execute(f"DROP TABLE IF EXISTS temp.{t}")


def build_source(
    conn,
    source: str,
    base_currency: str,
    rates: dict[str, float],
    only: dict[str, list[int]] | None = None,
    now: str | None = None,
    calls_days: int = 90,
) -> None:
    """Read the source's live deals once into `kpi_d`, the answers on deals and client cards
    into `kpi_all_acts`, the turns, recent calls and open tasks into `kpi_turn_picks`,
    `kpi_call_picks` and `kpi_task_picks`, for both targets; `only`: just those of these
    clients (entity type -> ids) and their deals, found by index."""
    drop(conn)
    p = {
        "source": source,
        "base": base_currency.upper(),
        "kind": "deal",
        "now": now,
        "calls_days": calls_days,
    }
    conn.execute("CREATE TEMP TABLE kpi_rates (currency TEXT PRIMARY KEY, rate REAL)")
    conn.executemany("INSERT INTO temp.kpi_rates VALUES (?, ?)", [(c.upper(), r) for c, r in rates.items()])
    answers, deals = _ANSWERS.format(**dict(_FULL, kinds=_ALL_KINDS)), _SOURCE_DEALS.format(**_FULL)
    picks = [_TURNS.format(**_FULL), _RECENT_CALLS.format(**_FULL), _OPEN_TASKS.format(**_FULL)]
    if only is not None:
        conn.execute(
            "CREATE TEMP TABLE kpi_want (entity_type TEXT, entity_id INTEGER, "
            "PRIMARY KEY (entity_type, entity_id)) WITHOUT ROWID"
        )
        conn.executemany(
            "INSERT OR IGNORE INTO temp.kpi_want VALUES (?, ?)",
            [(t, i) for t, ids in only.items() for i in ids],
        )
        conn.execute("CREATE TEMP TABLE kpi_dids (id INTEGER PRIMARY KEY)")
        conn.execute(f"INSERT INTO temp.kpi_dids {_WANTED_DEALS}", p)
        keys = conn.execute(
            "SELECT (SELECT count(*) FROM temp.kpi_dids) + (SELECT count(*) FROM temp.kpi_want)"
        ).fetchone()[0]
        # the clients' and their deals' ids (a card and a deal with the same id: the match to
        # clients in `build` drops the other's rows)
        conn.execute("CREATE TEMP TABLE kpi_ids (id INTEGER PRIMARY KEY)")
        conn.execute(
            "INSERT OR IGNORE INTO temp.kpi_ids SELECT id FROM temp.kpi_dids UNION SELECT entity_id FROM temp.kpi_want"
        )
        ids = "SELECT id FROM temp.kpi_ids"
        # their calls (and those bound to them) in one pass, for the answers, turns and recent calls
        conn.execute(_scoped(_SCOPE_CALLS, ids), p)
        mine = "temp.kpi_scope_calls"
        scan = _scan_better(conn, "calls", 3 * keys)  # each id looked up as a contact's, company's, deal's
        answers = _scoped(_ANSWERS, ids, scan=scan, kinds=_ALL_KINDS, calls=mine)
        deals = _scoped(_SOURCE_DEALS, "SELECT id FROM temp.kpi_dids", "d.id")
        picks = [
            _scoped(_TURNS, ids, calls=mine),
            _scoped(_RECENT_CALLS, ids, calls=mine),
            _scoped(_OPEN_TASKS, ids, scan=_scan_better(conn, "tasks", 3 * keys)),
        ]
    conn.execute("CREATE TEMP TABLE kpi_all_acts (kind TEXT, ref_id INTEGER, at TEXT)")
    conn.execute(f"INSERT INTO temp.kpi_all_acts {answers}", p)
    # each record type's answers apart, indexed by record and time (smaller sorts than one index)
    conn.execute("CREATE TEMP TABLE kpi_deal_acts (ref_id INTEGER, at TEXT)")
    conn.execute(
        "INSERT INTO temp.kpi_deal_acts SELECT ref_id, at FROM temp.kpi_all_acts WHERE kind = 'deal'"
    )
    conn.execute("CREATE INDEX temp.kpi_deal_acts_ref ON kpi_deal_acts (ref_id, at)")
    conn.execute(
        "CREATE TEMP TABLE kpi_d (deal_id INTEGER PRIMARY KEY, contact_id INTEGER, "
        "company_id INTEGER, status TEXT, amount REAL, created_at TEXT, closed_at TEXT, "
        "answered_at TEXT)"
    )
    conn.execute(deals, p)
    for sql in picks:
        conn.execute(sql, p)
    for t in ("kpi_want", "kpi_dids", "kpi_ids", "kpi_scope_calls", "kpi_deal_acts"):
        conn.execute(f"DROP TABLE IF EXISTS temp.{t}")


def _via_recent(
    conn,
    pick: str,
    match: str,
    p: dict,
    scoped: int | None,
    table: str,
    hint: str = "NOT INDEXED",
    order: str = "1, 2",
) -> None:
    """Pick rows of `table` into `kpi_recent`, then match them to their clients; `scoped`: the
    number of clients and deals the build is for (None: every client); `order`: the scratch
    table's key, so its rows go in in key order."""
    conn.execute("DROP TABLE IF EXISTS temp.kpi_recent")
    if scoped is not None:  # the rows on these clients' cards or deals (and a few the match drops)
        ids = f"{_SUBSET_CLIENTS} UNION {_SUBSET_DEALS}"
        conn.execute(_scoped(pick, ids, scan=_scan_better(conn, table, scoped)), p)
    else:
        conn.execute(pick.format(**dict(_FULL, hint=hint)), p)
    conn.execute(f"{match} ORDER BY {order}", p)
    conn.execute("DROP TABLE temp.kpi_recent")


def build(conn, source: str, target: str, now: str, calls_days: int, only: list[int] | None = None) -> None:
    """(Re)build the per-target scratch tables (after `build_source`); `only`: just these
    clients (a refresh), else every live one."""
    drop(conn, TABLES)
    p = {"source": source, "target": target, "now": now, "calls_days": calls_days, "kind": target}
    conn.execute("CREATE TEMP TABLE kpi_clients (entity_id INTEGER PRIMARY KEY)")
    if only is None:
        conn.execute(f"INSERT INTO temp.kpi_clients {CLIENTS[target]}", p)
    else:
        table = {"contact": "contacts", "company": "companies"}[target]
        conn.execute(
            f"INSERT OR IGNORE INTO temp.kpi_clients SELECT c.id FROM json_each(:only) j "
            f"JOIN main.{table} c ON c.source = :source AND c.id = j.value WHERE c.is_deleted = 0 "
            f"ORDER BY c.id",
            dict(p, only=json.dumps(only)),
        )
    # Clustered by client (WITHOUT ROWID, filled in key order): a KPI's GROUP BY reads each
    # client's rows side by side, with no index-to-table hops.
    conn.execute(
        "CREATE TEMP TABLE kpi_deals (entity_id INTEGER, deal_id INTEGER, status TEXT, "
        "amount REAL, created_at TEXT, closed_at TEXT, answered_at TEXT, "
        "PRIMARY KEY (entity_id, deal_id)) "
        "WITHOUT ROWID"
    )
    conn.execute(_DEALS[target], p)
    conn.execute("CREATE INDEX temp.kpi_deals_deal ON kpi_deals (deal_id)")
    conn.execute(
        "CREATE TEMP TABLE kpi_deal_totals (entity_id INTEGER PRIMARY KEY, deals INTEGER, "
        "won INTEGER, lost INTEGER, open INTEGER, won_amount REAL, won_amount_avg REAL, "
        "won_cycle_days REAL, last_won_at TEXT)"
    )
    conn.execute(_DEAL_TOTALS)
    conn.execute(
        "CREATE TEMP TABLE kpi_calls (entity_id INTEGER, call_id INTEGER, direction TEXT, "
        "status TEXT, duration_s INTEGER, started_at TEXT, PRIMARY KEY (entity_id, call_id)) "
        "WITHOUT ROWID"
    )
    scoped = None
    if only is not None:
        scoped = conn.execute(
            f"SELECT (SELECT count(*) FROM temp.kpi_clients) + (SELECT count(*) FROM ({_SUBSET_DEALS}))"
        ).fetchone()[0]
    conn.execute(f"{_owned('kpi_calls', _CALL_COLS, target, 'kpi_call_picks')} ORDER BY 1, 2", p)
    conn.execute(
        "CREATE TEMP TABLE kpi_tasks (entity_id INTEGER, task_id INTEGER, is_completed INTEGER, "
        "due_at TEXT, PRIMARY KEY (entity_id, task_id)) WITHOUT ROWID"
    )
    conn.execute(f"{_owned('kpi_tasks', _TASK_COLS, target, 'kpi_task_picks')} ORDER BY 1, 2", p)
    conn.execute("CREATE TEMP TABLE kpi_acts (ref_id INTEGER, at TEXT)")
    conn.execute("INSERT INTO temp.kpi_acts SELECT ref_id, at FROM temp.kpi_all_acts WHERE kind = :kind", p)
    conn.execute("CREATE INDEX temp.kpi_acts_ref ON kpi_acts (ref_id, at)")
    _build_interactions(conn, target, p, scoped)


def _build_interactions(conn, target: str, p: dict, scoped: int | None) -> None:
    """`kpi_activities` and `kpi_survey` (see the module docstring)."""
    conn.execute(
        "CREATE TEMP TABLE kpi_activities (entity_id INTEGER, act_id TEXT, channel TEXT, "
        "direction TEXT, at TEXT, PRIMARY KEY (entity_id, act_id)) WITHOUT ROWID"
    )
    _via_recent(
        conn, _ACTIVITIES, _owned("kpi_activities", _ACT_COLS, target), p, scoped, "activities", hint=""
    )
    conn.execute("CREATE INDEX temp.kpi_activities_at ON kpi_activities (entity_id, direction, at)")
    # Keyed in conversation order (a turn has one `at`, so the key still drops a turn reached
    # both ways): response_minutes finds a question's previous turn and the next answer by key
    # seeks, with no sort and no other index.
    conn.execute(
        "CREATE TEMP TABLE kpi_turns (entity_id INTEGER, turn_id TEXT, asks INTEGER, at TEXT, "
        "PRIMARY KEY (entity_id, at, turn_id)) WITHOUT ROWID"
    )
    conn.execute(f"{_owned('kpi_turns', _TURN_COLS, target, 'kpi_turn_picks')} ORDER BY 1, 4, 2", p)
    conn.execute(
        "CREATE TEMP TABLE kpi_survey (entity_id INTEGER, answer_id TEXT, kind TEXT, "
        "score REAL, at TEXT, PRIMARY KEY (entity_id, answer_id)) WITHOUT ROWID"
    )
    conn.execute(CARD_SURVEY_DDL)  # made by connector.kpi.survey when cards hold scores
    _via_recent(
        conn,
        _SURVEY_ANSWERS,
        _owned("kpi_survey", _SURVEY_COLS, target),
        p,
        scoped,
        "survey_answers",
        hint="",
    )


CARD_SURVEY_DDL = (
    "CREATE TEMP TABLE IF NOT EXISTS kpi_card_survey (entity_type TEXT, entity_id INTEGER, "
    "kind TEXT, score REAL, at TEXT)"
)


def unconverted_currencies(
    conn, source: str, base_currency: str, rates: dict[str, float], scoped: bool = False
) -> list[str]:
    """Currencies of live deals that are neither the base currency nor in the rates; `scoped`:
    of the deals read into `kpi_d` (a pass for some clients) rather than of all."""
    known = {base_currency.upper(), *(c.upper() for c in rates)}
    among = " AND id IN (SELECT deal_id FROM temp.kpi_d)" if scoped else ""
    rows = conn.execute(
        "SELECT DISTINCT upper(currency) FROM deals WHERE source = ? "
        f"AND is_deleted = 0 AND coalesce(currency, '') != ''{among}",
        (source,),
    ).fetchall()
    return sorted(r[0] for r in rows if r[0] not in known)
