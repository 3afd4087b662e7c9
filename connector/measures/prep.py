"""Scratch tables the measure queries (`measures/sql/`) read, built once per source in TEMP.

- `m_months(period, start, stop)`: every month from the source's first dated record to now, as
  local month starts ('YYYY-MM-01' in the account's time zone) with their UTC bounds.
- `m_deals(deal_id, pipeline_id, stage_id, step, status, amount, manager, client, channel,
  created_at, won_at, closed_month)`: live deals, `amount` in the source's currency (NULL
  when no rate is known), `client` the deal's company ('company:ID') else its main contact
  ('contact:ID'), `won_at` the close of a won deal (its creation when never closed), `closed_month`
  the local month a won or lost deal closed in.
- `m_wins(seq, client, won_at, month, deal_id, amount, channel)`: won deals of clients in
  (client, won_at, deal_id) order, `seq` numbering them: a client's previous / next win is
  seq -/+ 1; `month` the local month of the win.
- `m_clients(client, first_won_at, cohort, channel, ltv)`: clients with a won deal: the first
  one's close, its month (the acquisition cohort) and channel, and the sum of won amounts.
- `m_steps(step, pipeline_id, stage_id)`: the funnel's stages (open ones by sort, the won one
  last, lost ones left out), `step` numbering them in pipeline order.
- `m_moves(seq, deal_id, pipeline_id, stage_id, step, changed_at)`: the stage history of live
  deals in their current pipeline, in (deal, time) order: a deal's next move is seq + 1. `step`
  (here and in `m_deals`): the stage's `m_steps.step`, NULL for a lost stage.
- `m_stays(pos, pipeline_id, stage_id, days)`: each stay in a stage that ended (entering it to
  the deal's next move), in (pipeline, stage, days) order: a stage's stays are one run of `pos`,
  so its median is one or two lookups.
- `m_spend(period, channel, amount)`: the spend file, converted like deal amounts.
- `m_survey(kind, score, at, period)`: every survey answer (`survey_answers` and card fields).
- `m_acts(seq, entity_type, entity_id, turn, at, manager)`: a conversation's turns as the KPIs
  read them (`connector.kpi.prep.turn_rows`) in (card or deal, time) order, the one before is
  seq - 1. `turn` is `ask` (the client's question) or `answer` (a manager's answer).

Sequences instead of window functions: a PRIMARY KEY lookup of seq +- 1 costs far less than
partitioning millions of rows (1M deals: seconds instead of tens of seconds).

`local_month(ts)` is a SQL function for the queries: the local month of a UTC timestamp.
"""

from __future__ import annotations

import bisect
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from connector.kpi import prep as kpi_prep

TABLES = (
    "m_months",
    "m_deals",
    "m_wins",
    "m_clients",
    "m_spend",
    "m_survey",
    "m_rates",
    "m_acts",
    "m_steps",
    "m_moves",
    "m_stays",
)
NONE_CHANNEL = "(none)"


def month_starts(tz: str, first: str, now: str) -> list[tuple[str, str]]:
    """(period, UTC start) of every local month from the one holding `first` to the one after
    `now` (both UTC ISO timestamps)."""
    zone = ZoneInfo(tz)
    y, m = _local(first, zone)
    end_y, end_m = _local(now, zone)
    out = []
    while (y, m) <= (end_y + (end_m == 12), end_m % 12 + 1):
        start = datetime(y, m, 1, tzinfo=zone).astimezone(timezone.utc)
        out.append((f"{y:04d}-{m:02d}-01", start.strftime("%Y-%m-%dT%H:%M:%SZ")))
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return out


def _local(ts: str, zone) -> tuple[int, int]:
    t = datetime.strptime(ts[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc).astimezone(zone)
    return t.year, t.month


def month_function(starts: list[tuple[str, str]]):
    """`local_month(ts)`: the period whose UTC start is the last at or before `ts` (NULL for a
    timestamp before the first month or NULL)."""
    bounds = [s for _, s in starts]
    periods = [p for p, _ in starts]

    def local_month(ts):
        if not ts:
            return None
        i = bisect.bisect_right(bounds, ts) - 1
        return periods[i] if i >= 0 else None

    return local_month


def first_timestamp(conn, source: str, spend) -> str | None:
    """The earliest date the measures could use (deals, leads, survey answers, spend months)."""
    found = [
        r[0]
        for r in conn.execute(
            "SELECT min(created_at) FROM deals WHERE source = :s AND is_deleted = 0 "
            "UNION ALL SELECT min(created_at) FROM leads WHERE source = :s AND is_deleted = 0 "
            "UNION ALL SELECT min(at) FROM temp.kpi_card_survey "
            "UNION ALL SELECT min(at) FROM survey_answers WHERE source = :s",
            {"s": source},
        )
        if r[0]
    ]
    found += [f"{s.month}T12:00:00Z" for s in spend]
    return min(found) if found else None


_DEALS = """
INSERT INTO temp.m_deals
SELECT d.id, d.pipeline_id, d.stage_id, s.step, d.status,
       CASE WHEN coalesce(d.currency, '') IN ('', :base) THEN coalesce(d.amount, 0)
            ELSE coalesce(d.amount, 0) * r.rate END,
       d.responsible_user_id,
       CASE WHEN d.company_id IS NOT NULL THEN 'company:' || d.company_id
            WHEN d.contact_id IS NOT NULL THEN 'contact:' || d.contact_id END,
       coalesce(nullif(trim(lower(d.channel)), ''), :none),
       d.created_at,
       CASE WHEN d.status = 'won' THEN coalesce(d.closed_at, d.created_at) END,
       local_month(CASE WHEN d.status IN ('won', 'lost') THEN coalesce(d.closed_at, d.created_at) END)
FROM main.deals d LEFT JOIN temp.m_rates r ON r.currency = upper(d.currency)
LEFT JOIN temp.m_steps s ON s.pipeline_id = d.pipeline_id AND s.stage_id = d.stage_id
WHERE d.source = :source AND d.is_deleted = 0
"""

_WINS = """
INSERT INTO temp.m_wins (client, won_at, month, deal_id, amount, channel)
SELECT client, won_at, closed_month, deal_id, amount, channel FROM temp.m_deals
WHERE status = 'won' AND client IS NOT NULL ORDER BY client, won_at, deal_id
"""

# The first won deal of each client decides its cohort and channel (ties: the lowest deal id).
_CLIENTS = """
INSERT INTO temp.m_clients
SELECT w.client, w.won_at, w.month, w.channel,
       (SELECT sum(x.amount) FROM temp.m_wins x WHERE x.client = w.client)
FROM temp.m_wins w LEFT JOIN temp.m_wins p ON p.seq = w.seq - 1 AND p.client = w.client
WHERE p.seq IS NULL
"""

_STEPS = """
INSERT INTO temp.m_steps (pipeline_id, stage_id)
SELECT pipeline_id, id FROM main.stages
WHERE source = :source AND coalesce(entity, 'deal') = 'deal' AND coalesce(semantics, 'open') != 'lost'
ORDER BY pipeline_id, semantics = 'won', sort, id
"""

_MOVES = """
INSERT INTO temp.m_moves (deal_id, pipeline_id, stage_id, step, changed_at)
SELECT c.entity_id, c.pipeline_id, c.stage_id, s.step, c.changed_at
FROM main.stage_changes c NOT INDEXED
JOIN temp.m_deals d ON d.deal_id = c.entity_id AND d.pipeline_id = c.pipeline_id
LEFT JOIN temp.m_steps s ON s.pipeline_id = c.pipeline_id AND s.stage_id = c.stage_id
WHERE c.source = :source AND c.entity = 'deal' AND c.changed_at IS NOT NULL
ORDER BY c.entity_id, c.changed_at, c.id
"""

_STAYS = """
INSERT INTO temp.m_stays (pipeline_id, stage_id, days)
SELECT a.pipeline_id, a.stage_id, julianday(b.changed_at) - julianday(a.changed_at)
FROM temp.m_moves a JOIN temp.m_moves b ON b.seq = a.seq + 1 AND b.deal_id = a.deal_id
ORDER BY 1, 2, 3
"""

_SURVEY = """
INSERT INTO temp.m_survey
SELECT kind, score, at, local_month(at) FROM temp.kpi_card_survey WHERE at IS NOT NULL
"""
_SURVEY_ANSWERS = """
INSERT INTO temp.m_survey
SELECT kind, score, at, local_month(at) FROM main.survey_answers
WHERE source = :source AND score IS NOT NULL AND at IS NOT NULL
"""


def drop(conn) -> None:
    for t in TABLES:
        conn.execute(f"DROP TABLE IF EXISTS temp.{t}")


def build(
    conn,
    source: str,
    base_currency: str,
    rates: dict[str, float],
    spend,
    starts: list[tuple[str, str]],
    now: str,
) -> None:
    """Every scratch table (the `kpi_card_survey` table must be loaded before); `now`: the run's
    clock (UTC ISO)."""
    drop(conn)
    p = {"source": source, "base": base_currency.upper(), "none": NONE_CHANNEL}
    conn.execute("CREATE TEMP TABLE m_months (period TEXT PRIMARY KEY, start TEXT, stop TEXT)")
    conn.executemany(
        "INSERT INTO temp.m_months VALUES (?, ?, ?)",
        [(p_, s, e) for (p_, s), (_, e) in zip(starts, starts[1:])],
    )
    conn.execute("CREATE TEMP TABLE m_rates (currency TEXT PRIMARY KEY, rate REAL)")
    conn.executemany("INSERT INTO temp.m_rates VALUES (?, ?)", [(c.upper(), r) for c, r in rates.items()])
    conn.execute(
        "CREATE TEMP TABLE m_steps (step INTEGER PRIMARY KEY, pipeline_id INTEGER, stage_id NUMERIC)"
    )
    conn.execute(_STEPS, p)
    conn.execute("CREATE UNIQUE INDEX temp.m_steps_stage ON m_steps (pipeline_id, stage_id)")
    conn.execute(
        "CREATE TEMP TABLE m_deals (deal_id INTEGER PRIMARY KEY, pipeline_id INTEGER, "
        "stage_id NUMERIC, step INTEGER, status TEXT, amount REAL, manager INTEGER, client TEXT, "
        "channel TEXT, created_at TEXT, won_at TEXT, closed_month TEXT)"
    )
    conn.execute(_DEALS, p)
    conn.execute(
        "CREATE TEMP TABLE m_wins (seq INTEGER PRIMARY KEY, client TEXT, won_at TEXT, month TEXT, "
        "deal_id INTEGER, amount REAL, channel TEXT)"
    )
    conn.execute(_WINS)
    conn.execute("CREATE INDEX temp.m_wins_client ON m_wins (client, amount)")
    conn.execute(
        "CREATE TEMP TABLE m_clients (client TEXT PRIMARY KEY, first_won_at TEXT, "
        "cohort TEXT, channel TEXT, ltv REAL)"
    )
    conn.execute(_CLIENTS)
    conn.execute(
        "CREATE TEMP TABLE m_moves (seq INTEGER PRIMARY KEY, deal_id INTEGER, pipeline_id INTEGER, "
        "stage_id NUMERIC, step INTEGER, changed_at TEXT)"
    )
    conn.execute(_MOVES, p)
    conn.execute(
        "CREATE TEMP TABLE m_stays (pos INTEGER PRIMARY KEY, pipeline_id INTEGER, stage_id NUMERIC, "
        "days REAL)"
    )
    conn.execute(_STAYS)
    conn.execute(
        "CREATE TEMP TABLE m_spend (period TEXT, channel TEXT, amount REAL, PRIMARY KEY (period, channel))"
    )
    conn.executemany("INSERT INTO temp.m_spend VALUES (?, ?, ?)", _spend_rows(spend, p["base"], rates))
    conn.execute("CREATE TEMP TABLE m_survey (kind TEXT, score REAL, at TEXT, period TEXT)")
    conn.execute(_SURVEY)
    conn.execute(_SURVEY_ANSWERS, p)
    build_activities(conn, source, now)


def _spend_rows(spend, base: str, rates: dict[str, float]) -> list[tuple]:
    """Spend in the source's currency; a line in a currency without a rate is left out."""
    upper = {c.upper(): r for c, r in rates.items()}
    out = []
    for s in spend:
        if s.currency in ("", base):
            out.append((s.month, s.channel, s.amount))
        elif s.currency in upper:
            out.append((s.month, s.channel, s.amount * upper[s.currency]))
    return out


def unconverted_spend(spend, base: str, rates: dict[str, float]) -> list[str]:
    known = {base.upper(), "", *(c.upper() for c in rates)}
    return sorted({s.currency for s in spend if s.currency not in known})


_ACTS = f"""
INSERT INTO temp.m_acts (entity_type, entity_id, turn, at, manager)
SELECT entity_type, entity_id, CASE asks WHEN 1 THEN 'ask' ELSE 'answer' END, at, manager
FROM ({kpi_prep.turn_rows("NOT INDEXED").format(ascope="", cscope="")})
WHERE entity_id IS NOT NULL
ORDER BY entity_type, entity_id, at, id
"""


def build_activities(conn, source: str, now: str) -> None:
    """`m_acts`, indexed for "the next outgoing interaction on this card or deal"."""
    conn.execute(
        "CREATE TEMP TABLE m_acts (seq INTEGER PRIMARY KEY, entity_type TEXT, entity_id INTEGER, "
        "turn TEXT, at TEXT, manager INTEGER)"
    )
    conn.execute(_ACTS, {"source": source, "now": now})
    conn.execute("CREATE INDEX temp.m_acts_answer ON m_acts (entity_type, entity_id, turn, seq)")
