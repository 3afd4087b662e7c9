"""Team and business measures into the `metrics` table: one SQL file per group in `measures/sql/`.

Each file's header is its definition (shown in the report), its `-- measures:` line the measures
it returns and its `-- reads:` line the mirror tables it is computed from. A query returns rows
(measure, period, dimension, dimension_value, value) over the scratch tables of
`metrics_prep`; parameters `:source`, `:now`, `:churn_days`. Periods are local month starts
('YYYY-MM-01', in the account's time zone) or 'all'.

`compute()` replaces each group's rows of the source in one transaction. A group reading a table
some stream has not completely filled is withheld like a KPI (`kpi_inputs.withheld`): its rows
stay as they were.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from adapters.times import iso
from connector.kpi import survey
from connector.kpi.engine import READS, definition, listed, tuned
from connector.measures import prep as metrics_prep

log = logging.getLogger(__name__)

SQL_DIR = Path(__file__).with_name("sql")
MEASURES = "measures:"


class MetricsError(Exception):
    """A measure group could not be computed; the message names it."""


@dataclass
class Group:
    """One SQL file: the measures it computes, what it reads, what they mean."""

    name: str
    sql: str
    description: str
    measures: tuple[str, ...]
    reads: tuple[str, ...]
    targets: tuple[str, ...] = ()  # no client table of its own (for kpi_inputs.withheld)


@dataclass
class MetricsResult:
    source: str
    computed_at: str
    rows: int = 0
    withheld: dict[str, str] = field(default_factory=dict)  # group -> why
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0


def catalogue() -> dict[str, Group]:
    """The measure groups by file name."""
    out = {}
    for path in sorted(SQL_DIR.glob("*.sql")):
        sql = path.read_text(encoding="utf-8")
        out[path.stem] = Group(
            path.stem, sql, definition(sql, MEASURES), listed(sql, MEASURES), listed(sql, READS)
        )
    return out


def compute(
    mirror,
    source: str,
    kpi_cfg,
    base_currency: str,
    tz: str,
    *,
    now: datetime | None = None,
    withheld: dict[str, str] | None = None,
    card_survey=(),
) -> MetricsResult:
    """Compute every measure group of one source not withheld and store its rows."""
    started = time.monotonic()
    res = MetricsResult(source, iso(now))
    groups = catalogue()
    res.withheld = {k: why for k, why in (withheld or {}).items() if k in groups}
    conn = mirror.conn
    for cur in metrics_prep.unconverted_spend(kpi_cfg.spend.rows, base_currency, kpi_cfg.currency_rates):
        res.warnings.append(
            f"source '{source}': spend in {cur} is left out (add {cur} to [kpi.currency_rates])"
        )
        log.warning(res.warnings[-1])
    params = {"source": source, "now": res.computed_at, "churn_days": kpi_cfg.churn_days}
    with tuned(conn), mirror.db.atomic():
        survey.load(conn, card_survey)
        first = metrics_prep.first_timestamp(conn, source, kpi_cfg.spend.rows) or res.computed_at
        starts = metrics_prep.month_starts(tz, min(first, res.computed_at), res.computed_at)
        conn.create_function("local_month", 1, metrics_prep.month_function(starts), deterministic=True)
        metrics_prep.build(
            conn, source, base_currency, kpi_cfg.currency_rates, kpi_cfg.spend.rows, starts, res.computed_at
        )
        for g in groups.values():
            if g.name not in res.withheld:
                res.rows += _store(conn, g, params, kpi_cfg.precision)
        metrics_prep.drop(conn)
        conn.execute("DROP TABLE IF EXISTS temp.kpi_card_survey")
    res.seconds = round(time.monotonic() - started, 3)
    return res


def _store(conn, g: Group, params: dict, precision: int) -> int:
    """Replace the group's rows of the source with its query's; returns how many."""
    try:
        rows = conn.execute(g.sql.strip().rstrip(";"), params).fetchall()
    except Exception as err:
        raise MetricsError(f"measures '{g.name}': {err}") from None
    unknown = sorted({r[0] for r in rows} - set(g.measures))
    if unknown:
        raise MetricsError(f"measures '{g.name}': returns {', '.join(unknown)}, not on its measures line")
    marks = ", ".join("?" * len(g.measures))
    conn.execute(
        f"DELETE FROM metrics WHERE source = ? AND measure IN ({marks})", (params["source"], *g.measures)
    )
    conn.executemany(
        "INSERT OR REPLACE INTO metrics (source, measure, period, dimension, dimension_value, value, "
        "computed_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            (params["source"], m, p, d, str(v), None if x is None else round(x, precision), params["now"])
            for m, p, d, v, x in rows
        ],
    )
    return len(rows)


def rows(mirror, source: str) -> list[dict]:
    """The source's stored measures, sorted."""
    cur = mirror.conn.execute(
        "SELECT measure, period, dimension, dimension_value, value, computed_at FROM metrics "
        "WHERE source = ? ORDER BY measure, period, dimension, dimension_value",
        (source,),
    )
    keys = ("measure", "period", "dimension", "dimension_value", "value", "computed_at")
    return [dict(zip(keys, r)) for r in cur.fetchall()]
