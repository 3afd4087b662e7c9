"""The KPI engine: per-client KPIs computed from the mirror with one SQL query per KPI.

Built-in KPIs live in `kpi_sql/<name>.sql` (the comment at the top is the definition shown to
users); each returns (entity_id, value) for every client of the scratch tables built by
`kpi_prep`, so the same query serves contacts and companies. Custom KPIs (`[[kpi.custom]]`) run
read-only against the mirror itself. Parameters: `:source`, `:now`, `:target`, `:calls_days`,
`:churn_days`.

`compute()` stores the current values in `kpi_latest` and appends the values that changed to
`kpi_values` (history), all in one transaction.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from connector import kpi_prep

log = logging.getLogger(__name__)

SQL_DIR = Path(__file__).with_name("kpi_sql")
TARGETS = ("contact", "company")


class KpiError(Exception):
    """A KPI could not be computed; the message names the KPI."""


@dataclass
class Kpi:
    name: str
    sql: str
    description: str
    targets: tuple[str, ...] = TARGETS
    custom: bool = False


@dataclass
class ComputeResult:
    source: str
    computed_at: str
    clients: dict[str, int] = field(default_factory=dict)   # target -> clients computed
    changed: int = 0                                        # values that differ from the last run
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _description(sql: str) -> str:
    lines = []
    for line in sql.splitlines():
        if not line.startswith("--"):
            break
        lines.append(line[2:].strip())
    return " ".join(lines)


def catalogue() -> dict[str, Kpi]:
    """The built-in KPIs by name, in file-name order."""
    out = {}
    for path in sorted(SQL_DIR.glob("*.sql")):
        sql = path.read_text(encoding="utf-8")
        out[path.stem] = Kpi(path.stem, sql, _description(sql))
    return out


def all_kpis(kpi_cfg) -> dict[str, Kpi]:
    """Built-in plus the config's custom KPIs (a custom KPI may replace a built-in one)."""
    kpis = catalogue()
    for c in kpi_cfg.custom:
        kpis[c.name] = Kpi(c.name, c.sql, c.description or "custom KPI", (c.target,), custom=True)
    return kpis


# -- read-only guard for custom SQL ------------------------------------------------------------

_READ_ACTIONS = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION,
                 getattr(sqlite3, "SQLITE_RECURSIVE", 33)}


def _read_only(action, *_):
    return sqlite3.SQLITE_OK if action in _READ_ACTIONS else sqlite3.SQLITE_DENY


def _dummy_params() -> dict:
    return {"source": "x", "now": "2000-01-01T00:00:00Z", "target": "contact",
            "calls_days": 90, "churn_days": 180}


def check_custom_sql(sql: str) -> str | None:
    """None when `sql` is one read-only query returning two columns; else the problem in a few words.

    It is run against an empty in-memory mirror with an authorizer that denies anything but reads.
    """
    from connector import schema

    conn = sqlite3.connect(":memory:")
    try:
        schema.apply(conn)
        conn.set_authorizer(_read_only)
        try:
            cur = conn.execute(sql.strip().rstrip(";"), _dummy_params())
        except sqlite3.DatabaseError as err:
            msg = str(err)
            return "must only read the mirror (one SELECT or WITH query)" if "authoriz" in msg \
                else f"SQL does not run: {msg}"
        except (sqlite3.ProgrammingError, sqlite3.Warning) as err:
            return f"SQL does not run: {err}"
        if cur.description is None or len(cur.description) != 2:
            return "must return two columns: entity_id, value"
        return None
    finally:
        conn.close()


# -- compute ------------------------------------------------------------------------------------

def utc_iso(now: datetime | None = None) -> str:
    now = now or datetime.now(timezone.utc)
    return now.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def compute(mirror, source: str, kpi_cfg, base_currency: str = "RUB", *,
            now: datetime | None = None, only: list[str] | None = None) -> ComputeResult:
    """Compute the KPIs of one source for every target client and store them.

    `now` fixes the clock (tests); `only` limits the run to these KPI names.
    """
    started = time.monotonic()
    kpis = all_kpis(kpi_cfg)
    if only:
        unknown = sorted(set(only) - set(kpis))
        if unknown:
            raise KpiError(f"unknown KPI: {', '.join(unknown)} (have: {', '.join(kpis)})")
        kpis = {k: v for k, v in kpis.items() if k in only}
    res = ComputeResult(source, utc_iso(now))
    conn = mirror.conn
    for cur in kpi_prep.unconverted_currencies(conn, source, base_currency, kpi_cfg.currency_rates):
        msg = (f"source '{source}': deals in {cur} are left out of amounts "
               f"(add {cur} to [kpi.currency_rates])")
        log.warning(msg)
        res.warnings.append(msg)
    params = {"source": source, "now": res.computed_at, "calls_days": kpi_cfg.calls_days,
              "churn_days": kpi_cfg.churn_days}
    with mirror.db.atomic():
        for target in kpi_cfg.targets:
            kpi_prep.build(conn, source, target, base_currency, kpi_cfg.currency_rates)
            res.clients[target] = conn.execute("SELECT count(*) FROM temp.kpi_clients").fetchone()[0]
            conn.execute("DROP TABLE IF EXISTS temp.kpi_new")
            conn.execute("CREATE TEMP TABLE kpi_new (entity_id INTEGER NOT NULL, kpi TEXT NOT NULL, "
                         "value REAL, PRIMARY KEY (entity_id, kpi)) WITHOUT ROWID")
            names = [k for k in kpis.values() if target in k.targets]
            for k in names:
                _run_one(conn, k, dict(params, target=target), kpi_cfg.precision)
            res.changed += _store(conn, source, target, [k.name for k in names], res.computed_at)
        kpi_prep.drop(conn)
        conn.execute("DROP TABLE IF EXISTS temp.kpi_new")
        res.seconds = round(time.monotonic() - started, 3)
        conn.execute("INSERT INTO kpi_runs (source, computed_at, kpis, clients, values_changed, seconds) "
                     "VALUES (?, ?, ?, ?, ?, ?)",
                     (source, res.computed_at, ",".join(kpis), sum(res.clients.values()),
                      res.changed, res.seconds))
    return res


def _run_one(conn, kpi: Kpi, params: dict, precision: int) -> None:
    sql = kpi.sql.strip().rstrip(";")
    try:
        if kpi.custom:
            # Custom SQL reads the mirror under a read-only guard; rows of unknown or deleted
            # clients are dropped by the join.
            conn.set_authorizer(_read_only)
            try:
                rows = conn.execute(sql, params).fetchall()
            finally:
                conn.set_authorizer(None)
            conn.executemany(
                "INSERT OR REPLACE INTO temp.kpi_new SELECT entity_id, ?, round(?, ?) "
                "FROM temp.kpi_clients WHERE entity_id = ?",
                [(kpi.name, r[1], precision, r[0]) for r in rows if len(r) >= 2])
        else:
            conn.execute(f"INSERT INTO temp.kpi_new SELECT entity_id, :kpi_name, round(value, :precision) "
                         f"FROM ({sql})", dict(params, kpi_name=kpi.name, precision=precision))
    except sqlite3.Error as err:
        raise KpiError(f"KPI '{kpi.name}' ({params['target']}): {err}") from None


def _store(conn, source: str, target: str, names: list[str], computed_at: str) -> int:
    """Append changed values to history and refresh kpi_latest; returns the number changed.

    A client missing from this run's results for a KPI it had a value for (e.g. a custom query no
    longer returns it) counts as having become empty.
    """
    marks = ",".join("?" * len(names))
    p = [source, target]
    conn.execute(f"""
        INSERT INTO temp.kpi_new (entity_id, kpi, value)
        SELECT l.entity_id, l.kpi, NULL FROM kpi_latest l JOIN temp.kpi_clients c USING (entity_id)
        WHERE l.source = ? AND l.entity_type = ? AND l.kpi IN ({marks}) AND l.value IS NOT NULL
          AND NOT EXISTS (SELECT 1 FROM temp.kpi_new n WHERE n.entity_id = l.entity_id AND n.kpi = l.kpi)
        """, p + names)
    conn.execute("DROP TABLE IF EXISTS temp.kpi_changed")
    conn.execute("""
        CREATE TEMP TABLE kpi_changed AS
        SELECT n.entity_id, n.kpi, n.value FROM temp.kpi_new n
        LEFT JOIN kpi_latest l ON l.source = ? AND l.entity_type = ? AND l.entity_id = n.entity_id
             AND l.kpi = n.kpi
        WHERE l.value IS NOT n.value AND NOT (l.entity_id IS NULL AND n.value IS NULL)
        """, p)
    changed = conn.execute("SELECT count(*) FROM temp.kpi_changed").fetchone()[0]
    conn.execute("""
        INSERT INTO kpi_values (source, entity_type, entity_id, kpi, value, computed_at)
        SELECT ?, ?, entity_id, kpi, value, ? FROM temp.kpi_changed
        """, p + [computed_at])
    conn.execute("""
        INSERT INTO kpi_latest (source, entity_type, entity_id, kpi, value, computed_at)
        SELECT ?, ?, entity_id, kpi, value, ? FROM temp.kpi_changed WHERE true
        ON CONFLICT (source, entity_type, entity_id, kpi) DO UPDATE
        SET value = excluded.value, computed_at = excluded.computed_at
        """, p + [computed_at])
    conn.execute("DROP TABLE temp.kpi_changed")
    return changed


def latest(mirror, source: str, entity_type: str, entity_id: int) -> list[dict]:
    """One client's current KPI values: [{kpi, value, computed_at}] sorted by KPI name."""
    cur = mirror.conn.execute(
        "SELECT kpi, value, computed_at FROM kpi_latest WHERE source = ? AND entity_type = ? "
        "AND entity_id = ? ORDER BY kpi", (source, entity_type, entity_id))
    return [dict(zip(("kpi", "value", "computed_at"), r)) for r in cur.fetchall()]
