"""The mirror-equals-portal check: every mirror table against the sandbox's own dataset.

    assert_mirror_equals_portal(mirror, server, "main")

builds the rows each mirror table should hold from `server.dataset` (through the explicit
per-CRM mapping in `tests/e2e/portal_expect.py`, never through our parsers, so a misreading
shared by an adapter cannot hide) and compares table by table: ids present, `is_deleted`,
and the key fields. Every difference is collected; the failure shows the first 20, each
naming the table, the id and the field with both values.

Deletions: a row the dataset has deleted may be missing from the mirror (a first sync never
sees what is already in the trash) or present with `is_deleted = 1`; its other fields are not
compared (they froze when the mirror last saw it alive). A live row must be present, with
`is_deleted = 0` and every key field equal.
"""

from __future__ import annotations

import sqlite3

import pytest

from tests.e2e.portal_expect import ANY, DELETED, TABLES, Expected, expected_tables

__all__ = ["assert_mirror_equals_portal", "mirror_differences", "TABLES", "ANY", "DELETED"]

SHOWN = 20


def assert_mirror_equals_portal(
    mirror_or_db, server, source: str, tables: tuple[str, ...] | None = None
) -> None:
    """Fail (listing the first 20 differences) unless the mirror equals the sandbox's state.

    `mirror_or_db`: a `Mirror`, a sqlite3 connection or a database path; `server`: the
    AmoSandbox or Bitrix24Sandbox (only its `dataset` is read); `tables`: compare only these
    (default: every table in `TABLES`)."""
    diffs = mirror_differences(mirror_or_db, server, source, tables)
    if diffs:
        more = f"\n... and {len(diffs) - SHOWN} more" if len(diffs) > SHOWN else ""
        pytest.fail(
            f"mirror differs from the portal in {len(diffs)} place(s):\n  "
            + "\n  ".join(diffs[:SHOWN])
            + more,
            pytrace=False,
        )


def mirror_differences(mirror_or_db, server, source: str, tables: tuple[str, ...] | None = None) -> list[str]:
    """Every difference as "table id=...: field: mirror X != portal Y"."""
    conn = _connection(mirror_or_db)
    diffs: list[str] = []
    with server.dataset.lock:  # a consistent view while a listing thread may still edit
        expected = expected_tables(server)
    for exp in expected:
        if tables is not None and exp.table not in tables:
            continue
        diffs += _compare(exp, _mirror_rows(conn, exp, source))
    return diffs


def _connection(mirror_or_db) -> sqlite3.Connection:
    if isinstance(mirror_or_db, sqlite3.Connection):
        return mirror_or_db
    conn = getattr(mirror_or_db, "conn", None)
    return conn if conn is not None else sqlite3.connect(str(mirror_or_db))


def _mirror_rows(conn, exp: Expected, source: str) -> dict[tuple, list[dict]]:
    """{key: [rows]} of one mirror table (a list, so duplicate keys show up)."""
    cols = list(dict.fromkeys(exp.key + exp.fields + (("is_deleted",) if exp.deletable else ())))
    sql = f"SELECT {', '.join(cols)} FROM [{exp.table}] WHERE source = ?"
    out: dict[tuple, list[dict]] = {}
    for values in conn.execute(sql, (source,)):
        row = dict(zip(cols, values))
        out.setdefault(tuple(row[k] for k in exp.key), []).append(row)
    return out


def _compare(exp: Expected, got: dict[tuple, list[dict]]) -> list[str]:
    diffs = []
    for key, want in exp.rows.items():
        rows = got.get(key)
        label = f"{exp.table} {exp.name(key)}"
        if want is DELETED:
            # A link table has no is_deleted: a deleted parent's links are not pinned.
            if exp.deletable and rows and any(not r["is_deleted"] for r in rows):
                diffs.append(f"{label}: is_deleted: mirror 0 != portal 1 (deleted in the CRM)")
            continue
        if not rows:
            diffs.append(f"{label}: missing from the mirror")
            continue
        if len(rows) > 1:
            diffs.append(f"{label}: {len(rows)} rows in the mirror, the portal has one")
        diffs += _field_diffs(label, rows[0], want, exp.deletable)
    for key in sorted((k for k in set(got) - set(exp.rows) if not exp.unpinned(k)), key=repr):
        diffs.append(f"{exp.table} {exp.name(key)}: in the mirror, not in the portal")
    return diffs


def _field_diffs(label: str, row: dict, want: dict, deletable: bool) -> list[str]:
    out = []
    if deletable and row.get("is_deleted"):
        out.append(f"{label}: is_deleted: mirror 1 != portal 0 (alive in the CRM)")
    for field, value in want.items():
        if value is ANY or _same(row[field], value):
            continue
        out.append(f"{label}: {field}: mirror {row[field]!r} != portal {value!r}")
    return out


def _same(got, want) -> bool:
    if (
        isinstance(got, (int, float))
        and isinstance(want, (int, float))
        and not isinstance(got, bool)
        and not isinstance(want, bool)
    ):
        return abs(got - want) < 0.005
    return got == want
