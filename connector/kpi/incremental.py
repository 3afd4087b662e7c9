"""Incremental KPI passes: recompute only the clients whose KPIs may have changed.

A nightly pass need not recompute every client. Since the source's last pass over all its
clients (`kpi_passes`), a client's values can change only when

- a row it is computed from was written: triggers note the owners of every written row of
  the tables KPIs read (`kpi_dirty`, before and after the write, so a deal that moved from
  one contact to another marks both; deals are expanded to their contacts and company here);
- the clock moved a row across a window edge: a call leaving the `calls_days` window, an
  interaction leaving the `interactions_days` window or reaching `now`, an open task passing
  its due time, a won deal's close leaving the `churn_days` window (`_MOVED`);
- it is a day count (`days_since_*`): these change for every client as days pass. Each pass
  keeps the moment they count from (`kpi_anchors`), so the clients not otherwise recomputed
  get `whole days from the anchor to now` without reading their rows.

Those clients are computed as a full pass would (`engine.compute(clients=...)`); custom KPIs
(`[[kpi.custom]]`), whose inputs cannot be known, run over every client on every pass. A
full pass is made instead when none is recorded, when the last full one is `[kpi]
full_pass_days` old, when the clock went back, when the KPI definitions, their settings or
this engine changed since (`basis`), when a built-in KPI reads the clock in a way not
listed here (`CLOCK_RULES`), or when it reads a table whose writes are not noted.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from connector.mirror.kpi_schema import WATCHED

_SQL = Path(__file__).with_name("sql")
_SINCE = "CAST(julianday(:now) - a.at AS INTEGER)"
_UNTIL_EXPR = "CAST(julianday(min(n.at)) - julianday(:now) AS INTEGER) AS value"


def _until_anchor() -> str | None:
    """days_to_next_contact's own query, giving the moment instead of the days to it."""
    path = _SQL / "days_to_next_contact.sql"
    sql = path.read_text(encoding="utf-8") if path.exists() else ""
    return sql.replace(_UNTIL_EXPR, "julianday(min(n.at)) AS at") if _UNTIL_EXPR in sql else None


# Day counts: the SQL (over the scratch tables of `kpi_prep`) giving each client's anchor as a
# Julian day, and how the value follows from it (`a.at`); each equals the KPI's own query.
DAY_COUNTS = {
    "days_since_last_purchase": (
        "SELECT entity_id, julianday(last_won_at) AS at FROM kpi_deal_totals",
        _SINCE,
    ),
    "days_since_last_interaction": (
        "SELECT c.entity_id, julianday(max(a.at)) AS at FROM kpi_clients c "
        "LEFT JOIN kpi_activities a ON a.entity_id = c.entity_id AND a.at <= :now GROUP BY c.entity_id",
        _SINCE,
    ),
}
if _until_anchor():
    DAY_COUNTS["days_to_next_contact"] = (_until_anchor(), "CAST(a.at - julianday(:now) AS INTEGER)")

# The day counts of clients not recomputed, from their anchors (`temp.kpi_subset`: those that
# were), in one pass over the anchors in client order. Every live client computed since has an
# anchor; one without a moment (NULL) had an empty value and keeps it, so it is left out.
ANCHORED = """
SELECT a.entity_id, {value} AS value FROM main.kpi_anchors a
WHERE a.source = :source AND a.entity_type = :target AND a.kpi = :kpi_name AND a.at IS NOT NULL
  AND a.entity_id IN (SELECT entity_id FROM kpi_clients)
  AND a.entity_id NOT IN (SELECT entity_id FROM temp.kpi_subset)
"""

# Built-in KPIs that read `:now`, and the rows whose crossing of a window edge `_MOVED` finds.
CLOCK_RULES = {
    "calls_90d": "calls leaving the calls_days window",
    "call_minutes_90d": "calls leaving the calls_days window",
    "missed_calls_90d": "calls leaving the calls_days window",
    "interactions_30d": "interactions leaving the interactions_days window",
    "interactions_30d_call": "interactions leaving the interactions_days window",
    "interactions_30d_chat": "interactions leaving the interactions_days window",
    "interactions_30d_email": "interactions leaving the interactions_days window",
    "interactions_30d_meeting": "interactions leaving the interactions_days window",
    "interactions_30d_sms": "interactions leaving the interactions_days window",
    "overdue_tasks": "open tasks passing their due time",
    "churn_risk": "won deals' closes leaving the churn_days window",
    "days_since_last_purchase": "a day count (kpi_anchors)",
    "days_since_last_interaction": "a day count (kpi_anchors); interactions reaching now",
    "last_interaction_on": "interactions reaching now",
}
if "days_to_next_contact" in DAY_COUNTS:
    CLOCK_RULES["days_to_next_contact"] = "a day count (kpi_anchors); planned activities reaching now"

_AGO = "strftime('%Y-%m-%dT%H:%M:%SZ', {t}, '-' || {days} || ' days')"

# (entity_type, entity_id) of the rows whose place relative to a window edge changed between
# the last pass (:then) and now, each window compared as the KPI queries compare it (as text).
_MOVED = f"""
WITH moved_calls AS (
    SELECT entity_type, entity_id, activity_id FROM main.calls NOT INDEXED
    WHERE source = :source AND is_deleted = 0
      AND started_at >= {_AGO.format(t=":then", days=":calls_days")}
      AND started_at < {_AGO.format(t=":now", days=":calls_days")}
), moved_acts AS (
    SELECT entity_type, entity_id, id FROM main.activities NOT INDEXED
    WHERE source = :source AND is_deleted = 0
      AND ((at >= {_AGO.format(t=":then", days=":interactions_days")}
            AND at < {_AGO.format(t=":now", days=":interactions_days")})
           OR (at > :then AND at <= :now))
)
SELECT entity_type, entity_id FROM moved_calls
UNION
SELECT b.entity_type, b.entity_id FROM moved_calls k
JOIN main.activity_bindings b ON b.source = :source AND b.activity_id = k.activity_id
UNION
SELECT entity_type, entity_id FROM moved_acts
UNION
SELECT b.entity_type, b.entity_id FROM moved_acts k
JOIN main.activity_bindings b ON b.source = :source AND b.activity_id = k.id
UNION
SELECT entity_type, entity_id FROM main.tasks NOT INDEXED
WHERE source = :source AND is_deleted = 0 AND coalesce(is_completed, 0) = 0
  AND due_at >= :then AND due_at < :now
UNION
SELECT 'deal', id FROM main.deals NOT INDEXED
WHERE source = :source AND is_deleted = 0 AND status = 'won'
  AND coalesce(closed_at, created_at) >= {_AGO.format(t=":then", days=":churn_days")}
  AND coalesce(closed_at, created_at) < {_AGO.format(t=":now", days=":churn_days")}
"""

# The clients of the noted rows: contacts and companies themselves, and each noted deal's
# contacts (main and linked) and company as the mirror links them now.
_CLIENTS_OF = """
SELECT entity_type, entity_id FROM temp.kpi_touch WHERE entity_type IN ('contact', 'company')
UNION
SELECT 'contact', d.contact_id FROM temp.kpi_touch t
JOIN main.deals d ON d.source = :source AND d.id = t.entity_id
WHERE t.entity_type = 'deal' AND d.contact_id IS NOT NULL
UNION
SELECT 'company', d.company_id FROM temp.kpi_touch t
JOIN main.deals d ON d.source = :source AND d.id = t.entity_id
WHERE t.entity_type = 'deal' AND d.company_id IS NOT NULL
UNION
SELECT 'contact', l.contact_id FROM temp.kpi_touch t
JOIN main.deal_contacts l ON l.source = :source AND l.deal_id = t.entity_id
WHERE t.entity_type = 'deal'
"""


@dataclass
class Plan:
    """What a pass computes: everything (`full`, with why) or `clients` (type -> ids)."""

    full: bool
    reason: str = ""
    then: str | None = None  # the clock of the last pass
    clients: dict[str, list[int]] = field(default_factory=dict)


def basis(conn, source: str, kpis, kpi_cfg, base_currency: str, utc_offset: str = "") -> dict:
    """What the values of a pass follow from, besides the mirror's rows and the clock: the KPI
    definitions, their settings, the card fields found for survey scores, the engine's SQL."""
    found = conn.execute(
        "SELECT entity_type, kpi, field_key FROM kpi_fields WHERE source = ? AND kpi LIKE 'survey:%' "
        "ORDER BY 1, 2",
        (source,),
    ).fetchall()
    here = Path(__file__).parent
    code = hashlib.sha256()
    for name in ("prep.py", "engine.py", "incremental.py"):
        code.update((here / name).read_bytes())
    return {
        "code": code.hexdigest()[:16],
        "settings": {
            "currency": base_currency.upper(),
            "rates": dict(sorted(kpi_cfg.currency_rates.items())),
            "calls_days": kpi_cfg.calls_days,
            "churn_days": kpi_cfg.churn_days,
            "interactions_days": kpi_cfg.interactions_days,
            "precision": kpi_cfg.precision,
            "targets": sorted(kpi_cfg.targets),
            "survey": sorted(kpi_cfg.survey.fields().items()),
            "survey_fields": [list(r) for r in found],
            # date KPIs are the account's days: a new offset (daylight saving) may move them all
            "utc_offset": utc_offset,
        },
        "kpis": {k.name: hashlib.sha256(k.sql.encode()).hexdigest()[:16] for k in kpis if not k.custom},
    }


def _parse(ts: str) -> datetime:
    return datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ")


def plan(conn, source: str, kpis, kpi_cfg, base_currency: str, now: str, utc_offset: str = "") -> Plan:
    """Decide between a full pass and the clients whose values may have changed since the last."""
    row = conn.execute(
        "SELECT computed_at, full_at, basis FROM kpi_passes WHERE source = ?", (source,)
    ).fetchone()
    every = kpi_cfg.full_pass_days
    if every <= 0:
        return Plan(True, "[kpi] full_pass_days = 0")
    if row is None:
        return Plan(True, "no KPI pass recorded yet")
    then, full_at, stored = row[0], row[1], json.loads(row[2])
    want = json.loads(json.dumps(basis(conn, source, kpis, kpi_cfg, base_currency, utc_offset)))  # as stored
    if now < then:
        return Plan(True, f"the clock went back (last pass {then})")
    if _parse(now) - _parse(full_at) >= timedelta(days=every):
        return Plan(True, f"the last full pass ({full_at}) is {every} day(s) old or more")
    if stored["code"] != want["code"] or stored["settings"] != want["settings"]:
        return Plan(True, "the KPI settings or the engine changed since the last pass")
    for name, digest in want["kpis"].items():
        if stored["kpis"].get(name) != digest:
            return Plan(True, f"KPI '{name}' is new or changed since the last pass")
    for k in kpis:
        unwatched = sorted(set(k.reads) - set(WATCHED))
        if not k.custom and unwatched:
            return Plan(True, f"KPI '{k.name}' reads {', '.join(unwatched)}, whose changes are not noted")
    if now != then:
        for k in kpis:
            if not k.custom and ":now" in k.sql and k.name not in CLOCK_RULES:
                return Plan(True, f"KPI '{k.name}' reads the clock in a way incremental passes do not know")
    return Plan(False, then=then, clients=_affected(conn, source, kpi_cfg, then, now))


def _affected(conn, source: str, kpi_cfg, then: str, now: str) -> dict[str, list[int]]:
    p = {
        "source": source,
        "then": then,
        "now": now,
        "calls_days": kpi_cfg.calls_days,
        "interactions_days": kpi_cfg.interactions_days,
        "churn_days": kpi_cfg.churn_days,
    }
    conn.execute("DROP TABLE IF EXISTS temp.kpi_touch")
    conn.execute(
        "CREATE TEMP TABLE kpi_touch (entity_type TEXT, entity_id INTEGER, "
        "PRIMARY KEY (entity_type, entity_id)) WITHOUT ROWID"
    )
    conn.execute(
        "INSERT OR IGNORE INTO temp.kpi_touch "
        "SELECT entity_type, entity_id FROM main.kpi_dirty WHERE source = :source",
        p,
    )
    if now != then:
        conn.execute(f"INSERT OR IGNORE INTO temp.kpi_touch SELECT * FROM ({_MOVED})", p)
    out: dict[str, list[int]] = {t: [] for t in kpi_cfg.targets}
    for entity_type, entity_id in conn.execute(_CLIENTS_OF + " ORDER BY 1, 2", p):
        if entity_type in out:
            out[entity_type].append(int(entity_id))
    conn.execute("DROP TABLE temp.kpi_touch")
    return out


def record(conn, source: str, now: str, full: bool, basis_: dict) -> None:
    """Note a pass over every client of the source: its clock, and the changes it has seen."""
    conn.execute(
        "INSERT INTO kpi_passes (source, computed_at, full_at, basis) VALUES (:s, :now, :now, :b) "
        "ON CONFLICT (source) DO UPDATE SET computed_at = :now, basis = :b"
        + (", full_at = :now" if full else ""),
        {"s": source, "now": now, "b": json.dumps(basis_, sort_keys=True)},
    )
    conn.execute("DELETE FROM kpi_dirty WHERE source = ?", (source,))


def save_anchors(conn, source: str, target: str, kpi: str, params: dict, every: bool) -> None:
    """Keep the computed clients' anchors of a day count (`every`: the pass computed all)."""
    p = dict(params, source=source, target=target, kpi_name=kpi)
    if every:
        conn.execute(
            "DELETE FROM kpi_anchors WHERE source = :source AND entity_type = :target AND kpi = :kpi_name", p
        )
    else:
        conn.execute(
            "DELETE FROM kpi_anchors WHERE source = :source AND entity_type = :target AND kpi = :kpi_name "
            "AND entity_id IN (SELECT entity_id FROM temp.kpi_clients)",
            p,
        )
    conn.execute(
        "INSERT INTO kpi_anchors (source, entity_type, kpi, entity_id, at) "
        f"SELECT :source, :target, :kpi_name, entity_id, at FROM ({DAY_COUNTS[kpi][0]})",
        p,
    )
