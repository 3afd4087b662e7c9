"""The KPI engine: per-client KPIs computed from the mirror with one SQL query per KPI.

Built-in KPIs live in `kpi/sql/<name>.sql` (the comment at the top is the definition shown to
users, its `-- reads:` line the mirror tables the KPI is computed from); each returns (entity_id, value) for every client of the scratch tables built by
`kpi_prep`, so the same query serves contacts and companies. Custom KPIs (`[[kpi.custom]]`) run
read-only against the mirror itself. Parameters: `:source`, `:now`, `:target`, `:calls_days`,
`:churn_days`, `:interactions_days`, `:utc_offset` (the account's, as a date modifier: `+180 minutes`).
A `-- type: date` line makes a date KPI: its value is the date as the number YYYYMMDD.
Besides SQLite's own functions they may call the aggregate `median(x)` (`Median`: NULLs left
out, the mean of the two middle values for an even count, empty for none).

`compute()` appends the values that changed since the last run to `kpi_values` (history: a
client's current value is its newest row there, which the `kpi_latest` view shows), all in one
transaction. A KPI in `withheld` (see `kpi_inputs`) is left out; a dry run writes its values
to a shadow of `kpi_values` in the TEMP schema (`shadow_history`), so the mirror is untouched.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from adapters.times import iso
from connector.kpi import prep as kpi_prep
from connector.kpi import survey
from connector.kpi.custom_sql import KPI_SQL_DIR as SQL_DIR
from connector.kpi.custom_sql import LimitExceeded, bounded, read_only, tables_read
from connector.kpi.incremental import ANCHORED, DAY_COUNTS, save_anchors
from connector.kpi.incremental import basis as incremental_basis
from connector.kpi.incremental import plan as incremental_plan
from connector.kpi.incremental import record as record_pass
from connector.kpi.inputs import TARGETS

log = logging.getLogger(__name__)


class KpiError(Exception):
    """A KPI could not be computed; the message names the KPI."""


@dataclass
class Kpi:
    name: str
    sql: str
    description: str
    targets: tuple[str, ...] = TARGETS
    custom: bool = False
    reads: tuple[str, ...] = ()  # mirror tables it is computed from (its clients' table aside)
    date: bool = False  # `-- type: date`: the value is a date as the number YYYYMMDD


def is_date(kpi: str, kpis: dict[str, Kpi]) -> bool:
    """Whether KPI `kpi` holds a date (YYYYMMDD), written to a date field on the cards."""
    return kpi in kpis and kpis[kpi].date


@dataclass
class ComputeResult:
    source: str
    computed_at: str
    clients: dict[str, int] = field(default_factory=dict)  # target -> clients computed
    changed: int = 0  # values that differ from the last run
    warnings: list[str] = field(default_factory=list)
    withheld: dict[str, str] = field(default_factory=dict)  # KPI -> why it was not computed
    broken: dict[str, str] = field(default_factory=dict)  # custom KPI -> the limit it passed
    seconds: float = 0.0
    mode: str = "full"  # full, incremental (only clients that may have changed), clients (a refresh)
    full_reason: str = ""  # why an incremental pass was a full one


READS = "reads:"
TYPE = "type:"  # `-- type: date`: a date KPI (the default is a number)


def header(sql: str) -> list[str]:
    """The leading `--` comment lines of a SQL file, without the dashes: its definition and
    its `key:` lines (`reads:`, and for measure groups `measures:`)."""
    lines = []
    for line in sql.splitlines():
        if not line.startswith("--"):
            break
        lines.append(line[2:].strip())
    return lines


def listed(sql: str, key: str) -> tuple[str, ...]:
    """The comma-separated names on the header's `key` line (e.g. the tables after `reads:`)."""
    for line in header(sql):
        if line.startswith(key):
            return tuple(t.strip() for t in line[len(key) :].split(",") if t.strip())
    return ()


def definition(sql: str, *keys: str) -> str:
    """The header's prose: every line but the `key:` ones."""
    return " ".join(line for line in header(sql) if not line.startswith((READS, *keys)))


def catalogue() -> dict[str, Kpi]:
    """The built-in KPIs by name, in file-name order."""
    out = {}
    for path in sorted(SQL_DIR.glob("*.sql")):
        sql = path.read_text(encoding="utf-8")
        out[path.stem] = Kpi(
            path.stem,
            sql,
            definition(sql, TYPE),
            reads=listed(sql, READS),
            date=listed(sql, TYPE) == ("date",),
        )
    return out


def all_kpis(kpi_cfg) -> dict[str, Kpi]:
    """Built-in plus the config's custom KPIs (a custom KPI may replace a built-in one)."""
    kpis = catalogue()
    for c in kpi_cfg.custom:
        kpis[c.name] = Kpi(
            c.name, c.sql, c.description or "custom KPI", (c.target,), custom=True, reads=tables_read(c.sql)
        )
    return kpis


def utc_offset(tz: str | None, now: str) -> str:
    """The account's offset from UTC at `now` as an SQLite date modifier (`+180 minutes`), for
    date KPIs: a day is the account's day. (An offset that changed since, with daylight saving,
    can move an event within an hour of midnight to the next or previous day.)"""
    moment = datetime.strptime(now, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    offset = moment.astimezone(ZoneInfo(tz or "UTC")).utcoffset() or timedelta(0)
    return f"{int(offset.total_seconds()) // 60:+d} minutes"


# -- compute ------------------------------------------------------------------------------------


def compute(
    mirror,
    source: str,
    kpi_cfg,
    base_currency: str = "RUB",
    *,
    now: datetime | None = None,
    only: list[str] | None = None,
    withheld: dict[str, str] | None = None,
    dry_run: bool = False,
    card_survey=(),
    clients: dict[str, list[int]] | None = None,
    incremental: bool = False,
) -> ComputeResult:
    """Compute the KPIs of one source for every target client and store them.

    `now` fixes the clock (tests); `only` limits the run to these KPI names; `withheld`: KPIs
    left out, with why. `dry_run`: no `kpi_runs` row (values go to the shadow history, which
    the caller set up with `shadow_history`). `card_survey`: scores read from card fields
    (`survey.card_scores`). `clients`: only these (entity type -> ids; a refresh after a
    change), computed from the whole mirror as a full pass would, and no `kpi_runs` row.
    `incremental`: recompute only the clients whose values may have changed since the last
    pass, unless a full pass is due (`kpi.incremental`); the result is the same.
    """
    started = time.monotonic()
    kpis = all_kpis(kpi_cfg)
    if only:
        unknown = sorted(set(only) - set(kpis))
        if unknown:
            raise KpiError(f"unknown KPI: {', '.join(unknown)} (have: {', '.join(kpis)})")
        kpis = {k: v for k, v in kpis.items() if k in only}
    res = ComputeResult(source, iso(now))
    res.withheld = {k: why for k, why in (withheld or {}).items() if k in kpis}
    kpis = {k: v for k, v in kpis.items() if k not in res.withheld}
    conn = mirror.conn
    params = {
        "source": source,
        "now": res.computed_at,
        "calls_days": kpi_cfg.calls_days,
        "churn_days": kpi_cfg.churn_days,
        "interactions_days": kpi_cfg.interactions_days,
        "utc_offset": utc_offset(getattr(kpi_cfg, "timezone", None), res.computed_at),
    }
    with tuned(conn), mirror.db.atomic():
        plan = None
        if incremental and clients is None:
            plan = incremental_plan(
                conn,
                source,
                list(kpis.values()),
                kpi_cfg,
                base_currency,
                res.computed_at,
                params["utc_offset"],
            )
            res.mode = "full" if plan.full else "incremental"
            res.full_reason = plan.reason
            if plan.full:
                log.info("source '%s': full KPI pass: %s", source, plan.reason)
            else:
                n = {t: len(ids) for t, ids in plan.clients.items()}
                log.info("source '%s': incremental KPI pass since %s: clients %s", source, plan.then, n)
        elif clients is not None:
            res.mode = "clients"
        subset = clients if plan is None or plan.full else plan.clients
        kpi_prep.build_source(
            conn, source, base_currency, kpi_cfg.currency_rates, subset, res.computed_at, kpi_cfg.calls_days
        )
        # a pass for some clients warns of the currencies of their deals (a full one of all)
        rates = kpi_cfg.currency_rates
        for cur in kpi_prep.unconverted_currencies(conn, source, base_currency, rates, subset is not None):
            msg = f"source '{source}': deals in {cur} are left out of amounts (add {cur} to [kpi.currency_rates])"
            log.warning(msg)
            res.warnings.append(msg)
        survey.load(conn, card_survey)
        # Targets in key order ('company' < 'contact'): on a first run every KPI range then
        # lands after the ones already written, so kpi_values grows at its end.
        for target in sorted(kpi_cfg.targets):
            if clients is not None and not clients.get(target):
                continue
            ids = None if subset is None else subset.get(target, [])
            p = dict(params, target=target)
            kpi_prep.build(conn, source, target, res.computed_at, kpi_cfg.calls_days, ids)
            res.clients[target] = conn.execute("SELECT count(*) FROM temp.kpi_clients").fetchone()[0]
            for k in kpis.values():
                if target not in k.targets or (k.custom and plan is not None and not plan.full):
                    continue
                _run_one(conn, k, p, kpi_cfg, res, source)
                if k.name in DAY_COUNTS and not dry_run:
                    save_anchors(conn, source, target, k.name, p, every=ids is None)
            if plan is not None and not plan.full:
                _rest(conn, source, target, kpis, p, kpi_cfg, res, moved=plan.then != res.computed_at)
        kpi_prep.drop(conn)
        res.seconds = round(time.monotonic() - started, 3)
        if dry_run or clients is not None:
            return res
        conn.execute(
            "INSERT INTO kpi_runs (source, computed_at, kpis, clients, values_changed, seconds) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (source, res.computed_at, ",".join(kpis), sum(res.clients.values()), res.changed, res.seconds),
        )
        if not only:  # a pass over every KPI: the next incremental one may start from here
            record_pass(
                conn,
                source,
                res.computed_at,
                plan is None or plan.full,
                incremental_basis(conn, source, kpis.values(), kpi_cfg, base_currency, params["utc_offset"]),
            )
    return res


def _run_one(conn, k: Kpi, p: dict, kpi_cfg, res: ComputeResult, source: str) -> None:
    try:
        res.changed += _update_one(conn, k, p, kpi_cfg.precision, kpi_cfg)
    except LimitExceeded as err:  # that KPI fails, the others go on
        res.broken[k.name] = f"KPI '{k.name}' ({p['target']}): {err}"
        log.warning("source '%s': %s", source, res.broken[k.name])


def _rest(
    conn, source: str, target: str, kpis: dict, p: dict, kpi_cfg, res: ComputeResult, moved: bool
) -> None:
    """In an incremental pass, after the clients that may have changed: the others' day counts
    (from their anchors, when the clock moved) and the custom KPIs of every client."""
    day_counts = [k for k in kpis.values() if target in k.targets and k.name in DAY_COUNTS and moved]
    custom = [k for k in kpis.values() if target in k.targets and k.custom]
    if not day_counts and not custom:
        return
    conn.execute("DROP TABLE IF EXISTS temp.kpi_subset")
    conn.execute("ALTER TABLE temp.kpi_clients RENAME TO kpi_subset")
    conn.execute("CREATE TEMP TABLE kpi_clients (entity_id INTEGER PRIMARY KEY)")
    conn.execute(f"INSERT INTO temp.kpi_clients {kpi_prep.CLIENTS[target]}", p)
    for k in day_counts:
        sql = ANCHORED.format(value=DAY_COUNTS[k.name][1])
        _run_one(conn, Kpi(k.name, sql, k.description), p, kpi_cfg, res, source)
    for k in custom:
        _run_one(conn, k, p, kpi_cfg, res, source)
    conn.execute("DROP TABLE temp.kpi_subset")


class Median:
    """SQLite aggregate `median(x)`: the middle non-NULL value, or the mean of the two middle
    ones (as `avg()` of them), NULL when there is none. One Python sort per client beats
    SQLite's window functions (a numbering and a count over every row, then a GROUP BY)."""

    def __init__(self):
        self.xs = []

    def step(self, x):
        if x is not None:
            self.xs.append(x)

    def finalize(self):
        xs = sorted(self.xs)
        h = len(xs) // 2
        if not xs:
            return None
        return xs[h] if len(xs) % 2 else (xs[h - 1] + xs[h]) / 2


_MIB = 1024 * 1024
# The mirror's own page cache during a run, in KiB. It is read through mmap and written in key
# order, so it needs few pages; and SQLite sizes its sorter's in-memory runs from this cache.
# Small runs, sorted by a helper thread and merged, beat one huge in-memory sort whose pointer
# chasing outgrows the CPU caches: at 1M deals the scratch-table build takes 7.6 s instead of
# 10.8 s, and twice the data 2.0x the time instead of 2.2x (benchmarks/bench_kpi.py).
_MAIN_CACHE_KIB = 4096


def _scratch_kib(conn) -> int:
    """A page cache for the TEMP schema that holds the run's scratch tables: they grow with the
    data, and once they outgrow the cache every query re-reads and spills pages (time then grows
    faster than the data). Twice the database file, at least 256 MiB and at most a quarter of
    the free memory; the cache only takes memory as pages are actually used."""
    pages, size = (conn.execute(f"PRAGMA main.{p}").fetchone()[0] for p in ("page_count", "page_size"))
    want = max(256 * _MIB, 2 * pages * size)
    try:
        import psutil

        want = min(want, max(256 * _MIB, psutil.virtual_memory().available // 4))
    except Exception:  # no psutil or no figure: the floor still applies
        pass
    return want // 1024


@contextmanager
def tuned(conn):
    """Per-run settings for the bulk work, put back afterwards: a scratch cache sized to the data
    (see `_scratch_kib`), a small cache for the mirror itself (see `_MAIN_CACHE_KIB`), a helper
    thread for sorting, and memory-mapped reads of the mirror."""
    kib = _scratch_kib(conn)
    old = {f"{s}.cache_size": conn.execute(f"PRAGMA {s}.cache_size").fetchone()[0] for s in ("main", "temp")}
    old["threads"] = conn.execute("PRAGMA threads").fetchone()[0]
    mmap = conn.execute("PRAGMA main.mmap_size").fetchone()  # None for an in-memory mirror
    if mmap is not None:
        old["main.mmap_size"] = mmap[0]
        conn.execute(f"PRAGMA main.mmap_size = {kib * 1024}")
    conn.execute(f"PRAGMA temp.cache_size = -{kib}")
    conn.execute(f"PRAGMA main.cache_size = -{_MAIN_CACHE_KIB}")
    conn.execute(f"PRAGMA threads = {min(os.cpu_count() or 1, 4)}")
    conn.create_aggregate("median", 1, Median)
    try:
        yield
    finally:
        for k, v in old.items():
            conn.execute(f"PRAGMA {k} = {v}")


# One KPI's new values (rounded) against the stored ones, in one pass in client order: each
# client's current value is the newest kpi_values row of its key range, found by one key seek
# (the range is walked KPI by KPI in client order, so the seeks move forward through the B-tree).
# An empty value where none was stored is no difference (a missing row and a stored NULL compare
# the same). Only the differences land in the scratch table, keyed by client so they append in order.
_DIFF = """
INSERT INTO temp.kpi_changed (entity_id, value)
SELECT n.entity_id, n.value
FROM (SELECT entity_id, round(value, :precision) AS value FROM ({sql})) n
WHERE n.value IS NOT (SELECT v.value FROM kpi_values v
                      WHERE v.source = :source AND v.entity_type = :target AND v.kpi = :kpi_name
                        AND v.entity_id = n.entity_id
                      ORDER BY v.computed_at DESC LIMIT 1)
"""

# Changes go in key order (source, entity_type, kpi, entity_id): only the pages of changed
# clients are touched. REPLACE: a second run within the same second overwrites its own row.
_HISTORY = """
INSERT OR REPLACE INTO kpi_values (source, entity_type, entity_id, kpi, value, computed_at)
SELECT :source, :target, entity_id, :kpi_name, value, :now FROM temp.kpi_changed ORDER BY entity_id
"""

_ANY_STORED = (
    "SELECT 1 FROM kpi_values WHERE source = :source AND entity_type = :target AND kpi = :kpi_name LIMIT 1"
)
# No ORDER BY: the KPI queries return clients in id order (they read tables keyed by client), so
# the rows already arrive in key order and a sort of the whole range would be wasted.
_FIRST_HISTORY = """
INSERT INTO kpi_values (source, entity_type, entity_id, kpi, value, computed_at)
SELECT :source, :target, entity_id, :kpi_name, value, :now
FROM (SELECT entity_id, round(value, :precision) AS value FROM ({sql}))
WHERE value IS NOT NULL
"""

# A custom KPI's rows, spread over every client like a built-in one: clients it does not return
# get an empty value, rows for unknown or deleted cards are dropped.
_CUSTOM = "SELECT c.entity_id, x.value FROM temp.kpi_clients c LEFT JOIN temp.kpi_custom x USING (entity_id)"


def _update_one(conn, kpi: Kpi, params: dict, precision: int, kpi_cfg=None) -> int:
    """Compute one KPI for one target, append its changes to history;
    returns how many values changed. A custom KPI's query runs within `[kpi]`
    custom_timeout_s and custom_memory_mb (LimitExceeded past either)."""
    sql = kpi.sql.strip().rstrip(";")
    p = dict(params, kpi_name=kpi.name, precision=precision)
    try:
        if kpi.custom:
            conn.execute("DROP TABLE IF EXISTS temp.kpi_custom")
            conn.execute("CREATE TEMP TABLE kpi_custom (entity_id INTEGER PRIMARY KEY, value REAL)")
            with bounded(
                conn, getattr(kpi_cfg, "custom_timeout_s", 60.0), getattr(kpi_cfg, "custom_memory_mb", 512)
            ):
                conn.set_authorizer(read_only)  # custom SQL may only read, at run time too
                try:
                    rows = conn.execute(sql, params).fetchall()
                finally:
                    conn.set_authorizer(None)
            if rows and len(rows[0]) != 2:
                raise KpiError(f"KPI '{kpi.name}': must return two columns: entity_id, value")
            conn.executemany("INSERT OR REPLACE INTO temp.kpi_custom VALUES (?, ?)", rows)
            sql = _CUSTOM
        if conn.execute(_ANY_STORED, p).fetchone() is None:
            # Nothing stored yet for this KPI and target (first run, or a new KPI): every
            # non-empty value is a change, so they go straight in, with no diff and no scratch table.
            return conn.execute(_FIRST_HISTORY.format(sql=sql), p).rowcount
        conn.execute("DROP TABLE IF EXISTS temp.kpi_changed")
        conn.execute("CREATE TEMP TABLE kpi_changed (entity_id INTEGER PRIMARY KEY, value REAL)")
        conn.execute(_DIFF.format(sql=sql), p)
    except sqlite3.Error as err:
        raise KpiError(f"KPI '{kpi.name}' ({params['target']}): {err}") from None
    changed = conn.execute("SELECT count(*) FROM temp.kpi_changed").fetchone()[0]
    if changed:
        conn.execute(_HISTORY, p)
    conn.execute("DROP TABLE temp.kpi_changed")
    return changed


def shadow_history(conn, source: str) -> None:
    """A TEMP `kpi_values` holding the source's current values: it hides the mirror's table
    from unqualified names, so a dry run computes and plans against it and writes nothing."""
    drop_shadow(conn)
    conn.execute(
        "CREATE TEMP TABLE kpi_values (source TEXT NOT NULL, entity_type TEXT NOT NULL, "
        "entity_id INTEGER NOT NULL, kpi TEXT NOT NULL, value REAL, computed_at TEXT NOT NULL, "
        "PRIMARY KEY (source, entity_type, kpi, entity_id, computed_at)) WITHOUT ROWID"
    )
    conn.execute(
        "INSERT INTO temp.kpi_values SELECT source, entity_type, entity_id, kpi, value, "
        "max(computed_at) FROM main.kpi_values WHERE source = ? "
        "GROUP BY source, entity_type, kpi, entity_id",
        (source,),
    )
    conn.commit()  # the INSERT opened a transaction (on the TEMP schema only)


def drop_shadow(conn) -> None:
    conn.execute("DROP TABLE IF EXISTS temp.kpi_values")


def latest(mirror, source: str, entity_type: str, entity_id: int) -> list[dict]:
    """One client's current KPI values: [{kpi, value, computed_at}] sorted by KPI name."""
    # kpi_values is keyed KPI first: walk the distinct KPIs (a loose index scan), then take
    # the client's newest row of each with one seek from the end of its range.
    cur = mirror.conn.execute(
        """
        WITH RECURSIVE k(kpi) AS (
            SELECT min(kpi) FROM kpi_values WHERE source = :s AND entity_type = :t
            UNION ALL
            SELECT (SELECT min(kpi) FROM kpi_values WHERE source = :s AND entity_type = :t
                    AND kpi > k.kpi) FROM k WHERE k.kpi IS NOT NULL)
        SELECT k.kpi, v.value, v.computed_at FROM k
        JOIN kpi_values v ON v.source = :s AND v.entity_type = :t
             AND v.kpi = k.kpi AND v.entity_id = :id
             AND v.computed_at = (SELECT max(computed_at) FROM kpi_values x WHERE x.source = :s
                                  AND x.entity_type = :t AND x.kpi = k.kpi AND x.entity_id = :id)
        ORDER BY k.kpi""",
        {"s": source, "t": entity_type, "id": entity_id},
    )
    return [dict(zip(("kpi", "value", "computed_at"), r)) for r in cur.fetchall()]
