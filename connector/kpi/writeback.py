"""Write KPI values back to contact and company cards, diff-only, through the adapters.

Only KPIs mapped in `[kpi.fields]` are written. A value is sent when it differs from the last
value successfully written to that card's field (`kpi_written`), after rounding to `precision`;
so re-reading cards our own writes touched never causes another write. Each card gets one
`FieldWrite` with all its changed fields. Fields are resolved once and remembered in
`kpi_fields`: an existing field with the KPI's label or code (as its CRM spells codes:
`Crm.field_has_code`) is reused when numeric (a date field for a date KPI such as
`last_interaction_on`), a missing one is created.

Every attempt is logged in `writeback_log`, one row per card and field, as it happens: the
cards of one write request (`PER_REQUEST`) get `sending` rows committed before the request
goes out, and the answer turns them into `ok` (with `kpi_written`) or `failed` in one
transaction as soon as it returns. So a process killed during write-back leaves the log
matching the cards: `ok` rows are on the cards, and the one request in flight is `sending`.
The next write-back of the source marks such rows `unknown` (the CRM may or may not have
applied them) and, their values not being in `kpi_written`, sends them again; nothing logged
`ok` is ever sent twice.

The mirror side (cached field keys, saving a resolved field, planning, recording attempts) only
touches SQLite; the CRM side (finding or creating fields, writing values) only calls the adapter.
`write_back`, through `resolve_fields` and `send`, wires one to the other.
"""

from __future__ import annotations

import json
import logging
import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Iterator
from zoneinfo import ZoneInfo

from sqlite_utils.utils import chunks

from adapters import registry
from adapters.base import CrmField, FieldWrite, WriteResult
from adapters.errors import FieldTypeError
from adapters.times import iso
from connector.kpi.engine import all_kpis, is_date
from connector.kpi.inputs import CLIENT_TABLES

log = logging.getLogger(__name__)

NUMERIC_TYPES = {"numeric", "double"}
DATE_TYPES = {"date"}  # amoCRM's and Bitrix24's name for a date-only field
PER_REQUEST = 50  # cards one write request carries (the adapters batch by 50): logged per request
SENDING, UNKNOWN = "sending", "unknown"  # writeback_log statuses beside ok / failed
LOST = "the process ended before the CRM answered (killed or crashed); the value is sent again"


class WritebackError(Exception):
    """Write-back cannot go on; the message names the source and what to do."""


@dataclass
class Change:
    entity_type: str
    entity_id: int
    kpi: str
    field_key: str
    label: str
    old: float | None
    new: float | None
    name: str | None = None  # the client's name in the mirror (for a dry run's listing)


@dataclass
class WritebackReport:
    source: str
    clients: int = 0  # cards with at least one changed value
    values: int = 0  # changed values (sent, or shown in a dry run)
    requests: int = 0  # HTTP requests made, field lookups included
    field_requests: int = 0  # of which listing / creating fields
    failed: int = 0  # cards the CRM rejected
    changes: list[Change] = field(default_factory=list)
    unresolved: dict[str, list[str]] = field(default_factory=dict)  # dry run: type -> labels of
    # fields never resolved, which a real run finds in the CRM or creates


def field_code(kpi: str) -> str:
    """KPI_<NAME>: a stable code, 43 characters at most (a CRM may prefix it within its limit)."""
    return ("KPI_" + re.sub(r"[^A-Z0-9_]", "_", kpi.upper()))[:43]


def mapped_labels(kpi_cfg, entity_type: str) -> dict[str, str]:
    """KPI -> field label for one entity type: only mapped KPIs that exist for that target."""
    kpis = all_kpis(kpi_cfg)
    return {
        k: m[entity_type]
        for k, m in kpi_cfg.fields.items()
        if entity_type in m and k in kpis and entity_type in kpis[k].targets
    }


# -- the mirror side: SQLite only ---------------------------------------------------------------


def cached_fields(mirror, source: str, entity_type: str) -> dict[str, tuple[str, str]]:
    """KPI -> (field key, label) as resolved before."""
    return {
        k: (key, label)
        for k, label, key in mirror.conn.execute(
            "SELECT kpi, label, field_key FROM kpi_fields WHERE source = ? AND entity_type = ?",
            (source, entity_type),
        )
    }


def known_keys(mirror, source: str, entity_type: str, labels: dict[str, str]) -> dict[str, str]:
    """KPI -> field key of the KPIs resolved before under the same label."""
    cached = cached_fields(mirror, source, entity_type)
    return {k: cached[k][0] for k, label in labels.items() if k in cached and cached[k][1] == label}


def dry_run_keys(mirror, source: str, entity_type: str, labels: dict[str, str]) -> dict[str, str]:
    """KPI -> field key as resolved before, else its label (a dry run resolves nothing)."""
    cached = cached_fields(mirror, source, entity_type)
    return {k: cached[k][0] if k in cached else label for k, label in labels.items()}


def save_field(mirror, source: str, entity_type: str, kpi: str, label: str, f: CrmField) -> None:
    """Remember the field a KPI is written to."""
    with mirror.db.atomic():
        mirror.conn.execute(
            "INSERT OR REPLACE INTO kpi_fields (source, entity_type, kpi, label, field_key, code, "
            "type, resolved_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (source, entity_type, kpi, label, f.key, f.code, f.type, iso()),
        )


def plan(
    mirror,
    source: str,
    entity_type: str,
    keys: dict[str, str],
    labels: dict[str, str],
    precision: int,
    cards: list[int] | None = None,
) -> list[Change]:
    """Values whose rounded current value differs from the last successful write to the card
    (`cards`: of these cards only)."""
    conn = mirror.conn
    # In a transaction of its own: the temp-table INSERT would otherwise open one implicitly
    # that nothing commits, and every later write would be rolled back when the mirror closes.
    with mirror.db.atomic():
        conn.execute("DROP TABLE IF EXISTS temp.wb_map")
        conn.execute("CREATE TEMP TABLE wb_map (kpi TEXT PRIMARY KEY, field_key TEXT)")
        conn.executemany("INSERT INTO temp.wb_map VALUES (?, ?)", list(keys.items()))
        # Current values: the newest history row of each mapped KPI and client (with one max()
        # in a GROUP BY, SQLite takes the bare columns from the row holding the max).
        # NULL vs a never-written or cleared field is no change (IS NOT treats NULLs as equal).
        rows = conn.execute(
            f"""
            WITH l AS (
                SELECT v.source, v.entity_type, v.entity_id, v.kpi, v.value, max(v.computed_at)
                FROM temp.wb_map m
                JOIN kpi_values v ON v.source = :source AND v.entity_type = :type AND v.kpi = m.kpi
                {"" if cards is None else "AND v.entity_id IN (SELECT value FROM json_each(:cards))"}
                GROUP BY v.kpi, v.entity_id)
            SELECT l.entity_id, l.kpi, m.field_key, w.value, round(l.value, :precision), c.name
            FROM l
            JOIN temp.wb_map m ON m.kpi = l.kpi
            JOIN {CLIENT_TABLES[entity_type]} c ON c.source = l.source AND c.id = l.entity_id
                 AND c.is_deleted = 0
            LEFT JOIN kpi_written w ON w.source = l.source AND w.entity_type = l.entity_type
                 AND w.entity_id = l.entity_id AND w.field_key = m.field_key
            WHERE round(l.value, :precision) IS NOT w.value
            ORDER BY l.entity_id, l.kpi""",
            {"source": source, "type": entity_type, "precision": precision, "cards": json.dumps(cards)},
        ).fetchall()
        conn.execute("DROP TABLE temp.wb_map")
    return [
        Change(entity_type, eid, k, key, labels[k], old, new, name) for eid, k, key, old, new, name in rows
    ]


def intend(mirror, source: str, entity_type: str, by_card: dict[int, list[Change]], chunk: list[int]) -> None:
    """Log the cards' values as `sending`, committed before the request that carries them."""
    at = iso()
    with mirror.db.atomic():
        mirror.conn.executemany(
            "INSERT INTO writeback_log (source, entity_type, entity_id, field, old_value, new_value, "
            "status, error, at) VALUES (?, ?, ?, ?, ?, ?, ?, NULL, ?)",
            [
                (source, entity_type, eid, c.field_key, c.old, c.new, SENDING, at)
                for eid in chunk
                for c in by_card[eid]
            ],
        )


def close_lost_attempts(mirror, source: str) -> int:
    """Mark `sending` rows a killed process left as `unknown` (call before a source's write-back,
    under its lock); their values are not in `kpi_written`, so they are planned again."""
    with mirror.db.atomic():
        cur = mirror.conn.execute(
            "UPDATE writeback_log SET status = ?, error = ? WHERE source = ? AND status = ?",
            (UNKNOWN, LOST, source, SENDING),
        )
    if cur.rowcount:
        log.warning(
            "source '%s': %d value(s) were being sent when a process died; sending them again",
            source,
            cur.rowcount,
        )
    return cur.rowcount


def record(
    mirror,
    source: str,
    entity_type: str,
    by_card: dict[int, list[Change]],
    chunk: list[int],
    results: dict[int, WriteResult],
    fatal: str | None,
) -> tuple[int, int]:
    """Turn the chunk's `sending` rows into its outcome and remember what was written; (ok, failed).

    `fatal`: the error that stopped the chunk before any result came back.
    """
    at = iso()
    outcomes, written = [], []
    ok = failed = 0
    for eid in chunk:
        r = results.get(eid)
        good = r is not None and r.ok
        error = None if good else (fatal or (r.error if r else "no result from the CRM") or "rejected")
        ok, failed = (ok + 1, failed) if good else (ok, failed + 1)
        for c in by_card[eid]:
            outcomes.append(("ok" if good else "failed", error, at, source, entity_type, eid, c.field_key))
            if good:
                written.append((source, entity_type, eid, c.field_key, c.kpi, c.new, at))
    with mirror.db.atomic():
        mirror.conn.executemany(
            "UPDATE writeback_log SET status = ?, error = ?, at = ? WHERE source = ? AND entity_type = ? "
            f"AND entity_id = ? AND field = ? AND status = '{SENDING}'",
            outcomes,
        )
        mirror.conn.executemany(
            "INSERT OR REPLACE INTO kpi_written (source, entity_type, entity_id, field_key, kpi, value, "
            "written_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            written,
        )
    for eid in chunk:
        r = results.get(eid)
        if r is not None and not r.ok:
            log.warning("source '%s': %s %s rejected: %s", source, entity_type, eid, r.error)
    return ok, failed


# -- the CRM side: the adapter only ------------------------------------------------------------


def find_fields(
    adapter, source: str, entity_type: str, labels: dict[str, str], dates=()
) -> Iterator[tuple[str, CrmField]]:
    """(KPI, field) for each KPI -> label: the CRM's field with that label or the KPI's code
    (numeric, or a date for the KPIs in `dates`; else FieldTypeError), or one created. Lists
    nothing when `labels` is empty."""
    if not labels:
        return
    has_code = registry.get(adapter.kind).field_has_code
    existing = adapter.list_fields(entity_type)
    for kpi, label in labels.items():
        code = field_code(kpi)
        f = next((f for f in existing if f.name == label), None) or next(
            (f for f in existing if has_code(f, code)), None
        )
        date = kpi in dates
        if f is None:
            # only a date KPI names the kind: a numeric field is what every adapter makes by default
            if date:
                f = adapter.create_field(entity_type, code, label, kind="date")
            else:
                f = adapter.create_field(entity_type, code, label)
            existing.append(f)
            log.info("source '%s': created %s field '%s' (%s)", source, entity_type, label, f.key)
        elif f.type not in (DATE_TYPES if date else NUMERIC_TYPES):
            raise FieldTypeError(
                f"source '{source}': {entity_type} field '{f.name}' (for KPI {kpi}) exists with type "
                f"'{f.type}', not {'a date' if date else 'a number'}; change its type in the CRM or "
                f"map the KPI to another field name in [kpi.fields]"
            )
        yield kpi, f


def _number(v: float | None):
    """Whole numbers go out as int, so the CRM shows 3 rather than 3.0."""
    return int(v) if v is not None and float(v).is_integer() else v


def as_date(v: float | None, tz: str | None) -> datetime | None:
    """A date KPI's value (YYYYMMDD) as the start of that day in the account's time zone: each
    adapter sends it as its CRM spells a date."""
    if v is None:
        return None
    day = int(v)
    return datetime(day // 10000, day // 100 % 100, day % 100, tzinfo=ZoneInfo(tz or "UTC"))


def write_cards(
    adapter, entity_type: str, by_card: dict[int, list[Change]], cards: list[int], dates=(), tz=None
) -> dict[int, WriteResult]:
    """Send the cards' changed values, one FieldWrite per card (the KPIs in `dates` as dates in
    time zone `tz`); the results by card id."""

    def value(c: Change):
        return as_date(c.new, tz) if c.kpi in dates else _number(c.new)

    writes = [FieldWrite(eid, {c.field_key: value(c) for c in by_card[eid]}) for eid in cards]
    return {r.entity_id: r for r in adapter.write_values(entity_type, writes)}


# -- the wire ----------------------------------------------------------------------------------


def resolve_fields(
    mirror, adapter, source: str, entity_type: str, labels: dict[str, str], dates=()
) -> dict[str, str]:
    """KPI -> the CRM's field key, listing and creating fields only for KPIs not resolved before
    (the KPIs in `dates` need date fields)."""
    keys = known_keys(mirror, source, entity_type, labels)
    missing = {k: label for k, label in labels.items() if k not in keys}
    # Saved one by one as found: a field of the wrong type further on keeps the ones before.
    for kpi, f in find_fields(adapter, source, entity_type, missing, dates):
        save_field(mirror, source, entity_type, kpi, missing[kpi], f)
        keys[kpi] = f.key
    return keys


def send(
    mirror, adapter, source: str, entity_type: str, changes: list[Change], dates=(), tz=None
) -> tuple[int, int]:
    """Write the changes a request's worth of cards at a time, each logged `sending` before it
    goes and with its outcome as it returns; returns (cards written, failed)."""
    by_card: dict[int, list[Change]] = defaultdict(list)
    for c in changes:
        by_card[c.entity_id].append(c)
    cards = list(by_card)
    ok = failed = 0
    for chunk in map(list, chunks(cards, PER_REQUEST)):
        intend(mirror, source, entity_type, by_card, chunk)
        try:
            results = write_cards(adapter, entity_type, by_card, chunk, dates, tz)
        except Exception as err:  # log the attempt before the error stops the run
            record(mirror, source, entity_type, by_card, chunk, {}, str(err))
            raise
        o, f = record(mirror, source, entity_type, by_card, chunk, results, None)
        ok, failed = ok + o, failed + f
    return ok, failed


def write_back(
    mirror,
    adapter,
    source: str,
    kpi_cfg,
    *,
    dry_run: bool = False,
    only: list[str] | None = None,
    withheld=(),
    clients: dict[str, list[int]] | None = None,
) -> WritebackReport:
    """Resolve fields and send every changed value of one source (dry run: only plan).

    In a dry run nothing is sent, not even a field lookup: fields never resolved show their label
    (and are listed in `unresolved`). `only` limits the run to these KPIs; `withheld` KPIs are
    left alone (their cards keep their value). `clients`: only these cards (entity type -> ids).
    """
    rep = WritebackReport(source)
    start = getattr(adapter, "requests", 0) if adapter is not None else 0
    if not dry_run:
        close_lost_attempts(mirror, source)
    kpis = all_kpis(kpi_cfg)
    dates = {k for k in kpi_cfg.fields if is_date(k, kpis)}
    tz = getattr(kpi_cfg, "timezone", None)
    for entity_type in kpi_cfg.targets:
        labels = {
            k: v
            for k, v in mapped_labels(kpi_cfg, entity_type).items()
            if (not only or k in only) and k not in withheld
        }
        cards = None if clients is None else clients.get(entity_type) or []
        if not labels or cards == []:
            continue
        if dry_run:
            keys = dry_run_keys(mirror, source, entity_type, labels)
            rep.unresolved[entity_type] = sorted(
                {labels[k] for k in labels if k not in cached_fields(mirror, source, entity_type)}
            )
        else:
            if adapter is None:
                raise WritebackError(f"source '{source}': no adapter to write with")
            before = adapter.requests
            keys = resolve_fields(mirror, adapter, source, entity_type, labels, dates)
            rep.field_requests += adapter.requests - before
        changes = plan(mirror, source, entity_type, keys, labels, kpi_cfg.precision, cards)
        rep.changes.extend(changes)
        rep.values += len(changes)
        rep.clients += len({c.entity_id for c in changes})
        if changes and not dry_run:
            _, failed = send(mirror, adapter, source, entity_type, changes, dates, tz)
            rep.failed += failed
    if adapter is not None:
        rep.requests = adapter.requests - start
    return rep
