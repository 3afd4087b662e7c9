"""The read-only guard for custom KPI SQL (`[[kpi.custom]]`): checked when the config loads and
enforced again when the KPI engine runs the query, within limits (`bounded`): a time budget (an
SQLite progress handler) and a memory cap: SQLite's hard heap limit while the query runs (where
the loaded library lets it be lifted again) and, everywhere, no string or blob past the cap."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path

from connector.mirror import schema

# The built-in KPIs, one query per file (read by the KPI engine; named here for the config).
KPI_SQL_DIR = Path(__file__).with_name("sql")

_READ_ACTIONS = {
    sqlite3.SQLITE_SELECT,
    sqlite3.SQLITE_READ,
    sqlite3.SQLITE_FUNCTION,
    getattr(sqlite3, "SQLITE_RECURSIVE", 33),
}


CHECK_TIMEOUT_S = 1.0  # trying a query on the empty mirror (config check, tables it reads)
_PROGRESS_STEPS = 10_000  # VM instructions between looks at the clock


class LimitExceeded(Exception):
    """A custom query went past its time budget or memory cap; the message says which."""


@contextmanager
def bounded(conn, timeout_s: float, memory_mb: int | None = None):
    """Run what the block runs on `conn` within `timeout_s` seconds and, when `memory_mb` is
    given, with SQLite's heap capped at that many MiB (`PRAGMA hard_heap_limit`: the cap is
    SQLite's, process-wide, while the block runs). Past either, raises LimitExceeded."""
    deadline = time.monotonic() + timeout_s
    conn.set_progress_handler(lambda: time.monotonic() > deadline, _PROGRESS_STEPS)
    old = old_length = None
    if memory_mb is not None:
        cap = int(memory_mb) * 1024 * 1024
        old = _set_heap_limit(conn, cap)
        old_length = conn.setlimit(
            sqlite3.SQLITE_LIMIT_LENGTH, min(cap, conn.getlimit(sqlite3.SQLITE_LIMIT_LENGTH))
        )
    try:
        yield
    except MemoryError:
        raise LimitExceeded(f"used more than {memory_mb} MiB of memory ([kpi] custom_memory_mb)") from None
    except sqlite3.Error as err:
        if time.monotonic() > deadline and "interrupt" in str(err):
            raise LimitExceeded(f"ran longer than {timeout_s:g} s ([kpi] custom_timeout_s)") from None
        if memory_mb is not None and ("out of memory" in str(err) or "too big" in str(err)):
            raise LimitExceeded(
                f"used more than {memory_mb} MiB of memory ([kpi] custom_memory_mb)"
            ) from None
        raise
    finally:
        conn.set_progress_handler(None, 0)
        if old_length is not None:
            conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, old_length)
        if old is not None:
            _set_heap_limit(conn, old)


def _set_heap_limit(conn, limit: int) -> int | None:
    """Set SQLite's hard heap limit (0: none) and return the one before, or None where it
    cannot be set and lifted again. `PRAGMA hard_heap_limit` can only lower the limit, so it
    is set through the library's own function, found with ctypes and used only once the
    pragma shows it is the library this process's sqlite3 runs on."""
    fn = _heap_limit_fn()
    if fn is None:
        return None
    before = fn(-1)  # a negative argument only reads the limit
    fn(limit)
    if conn.execute("PRAGMA hard_heap_limit").fetchone()[0] != limit:
        fn(before)
        return None
    return before


@functools.cache
def _heap_limit_fn():
    """`sqlite3_hard_heap_limit64` of the loaded SQLite library, or None."""
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("sqlite3") or "libsqlite3.so.0")
        fn = lib.sqlite3_hard_heap_limit64
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = [ctypes.c_int64], ctypes.c_int64
    return fn


def builtin_kpi_names() -> list[str]:
    """The built-in KPIs' names (`kpi/sql/<name>.sql`), which custom KPIs sit beside."""
    return sorted(p.stem for p in KPI_SQL_DIR.glob("*.sql"))


def read_only(action, *_):
    """An SQLite authorizer that allows reads and denies everything else."""
    return sqlite3.SQLITE_OK if action in _READ_ACTIONS else sqlite3.SQLITE_DENY


def _dummy_params() -> dict:
    return {
        "source": "x",
        "now": "2000-01-01T00:00:00Z",
        "target": "contact",
        "calls_days": 90,
        "churn_days": 180,
    }


@contextmanager
def _empty_mirror(authorizer):
    """An in-memory mirror with no rows, guarded by `authorizer`: where custom SQL is tried."""
    conn = sqlite3.connect(":memory:")
    try:
        schema.apply(conn)
        conn.set_authorizer(authorizer)
        yield conn
    finally:
        conn.close()


def _statement(sql: str) -> str:
    return sql.strip().rstrip(";")


def check_custom_sql(sql: str) -> str | None:
    """None when `sql` is one read-only query returning two columns; else the problem in a few words.

    It is run against an empty in-memory mirror with an authorizer that denies anything but reads.
    """
    with _empty_mirror(read_only) as conn:
        try:
            with bounded(conn, CHECK_TIMEOUT_S):
                cur = conn.execute(_statement(sql), _dummy_params())
        except LimitExceeded:
            return None  # runs; on the real mirror its budget applies
        except sqlite3.DatabaseError as err:
            msg = str(err)
            return (
                "must only read the mirror (one SELECT or WITH query)"
                if "authoriz" in msg
                else f"SQL does not run: {msg}"
            )
        except (sqlite3.ProgrammingError, sqlite3.Warning) as err:
            return f"SQL does not run: {err}"
        if cur.description is None or len(cur.description) != 2:
            return "must return two columns: entity_id, value"
        return None


def tables_read(sql: str) -> tuple[str, ...]:
    """The mirror's entity tables a custom query reads, as SQLite itself reports them
    (an authorizer on an empty mirror)."""
    seen: set[str] = set()

    def note(action, table, *rest):
        if action == sqlite3.SQLITE_READ and table in schema.ENTITY_TABLES:
            seen.add(table)
        return read_only(action, table, *rest)

    with _empty_mirror(note) as conn:
        try:
            with bounded(conn, CHECK_TIMEOUT_S):
                conn.execute(_statement(sql), _dummy_params()).fetchall()
        except (sqlite3.Error, LimitExceeded):
            pass  # the config check reports a query that does not run; what it read so far counts
    return tuple(sorted(seen))
