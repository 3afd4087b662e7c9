"""Storage faults as one line an admin can act on: which file, what is wrong, what to do.

The mirror, its lock files and the token file live on disk, and disks fail in a few ways
that a traceback explains badly. `StorageError` names the path, the cause and the fix, and
carries the exit code: 2 when the location is wrong (read-only, a directory, a parent that
is a file: a config matter), 1 when the disk or the file went bad at run time (full, I/O
error, corrupt).

`location_problem` says, without creating anything, whether a file can be written where it
is configured; `probe_writable` proves it by creating and removing a temporary file beside
it (for `check`). `header_problem` reads the first 100 bytes of a mirror: not SQLite at all,
or cut short. `quick_check` runs SQLite's own structural check before a run writes: on a
1M-row mirror (862 MB) it costs ~1 s with the file in the page cache, ~17 s cold
(benchmarks/bench_integrity_check.py), small beside a run, and it keeps a run from writing
into a damaged file. `read_only_connection` is how commands that only look open the mirror.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import sqlite3
import tempfile
from urllib.parse import quote

CONFIG, RUNTIME = 2, 1  # exit codes

_HEADER = b"SQLite format 3\x00"
_RECREATE = "restore it from a backup, or move it away and run `crm-connector sync --full` to rebuild it"


class StorageError(Exception):
    """A storage fault, said in one line; `exit_code` 2 for a bad location, 1 for a runtime fault."""

    def __init__(self, message: str, exit_code: int = RUNTIME):
        super().__init__(message)
        self.exit_code = exit_code


def _where(what: str, path: str) -> str:
    return f"{what} {os.path.abspath(path)}"


def _key(what: str) -> str:
    """The config key that places the file."""
    return "[storage] token_path" if what.startswith("token") else "[storage] path"


def _move_hint(what: str) -> str:
    return f"make it writable by this user, or set {_key(what)} to a writable place"


def from_os_error(err: OSError, path: str, what: str = "mirror") -> StorageError:
    """An OSError met on `path`, as a StorageError saying what to do."""
    where, code = _where(what, path), err.errno
    if code in (errno.ENOSPC, errno.EDQUOT):
        return StorageError(
            f"{where}: the disk is full ({os.strerror(code)}); free some space, then "
            f"run again (nothing committed was lost)",
            RUNTIME,
        )
    if code == errno.EIO:
        return StorageError(
            f"{where}: I/O error reading or writing the disk; check the disk, then run again", RUNTIME
        )
    if code == errno.EISDIR:
        return StorageError(
            f"{where} is a directory, not a file; set {_key(what)} to a file name inside it", CONFIG
        )
    if code == errno.ENOTDIR or (
        code == errno.EEXIST and not os.path.isdir(os.path.dirname(os.path.abspath(path)))
    ):  # makedirs met a file where a directory should be
        return StorageError(
            f"{where}: a part of the path is a file, not a directory; set "
            f"{_key(what)} to a path under a directory",
            CONFIG,
        )
    cause = {
        errno.EROFS: "read-only file system",
        errno.EACCES: "permission denied",
        errno.EPERM: "operation not permitted",
        errno.ENOENT: "files cannot be created there",
    }.get(code, os.strerror(code) if code else str(err))
    return StorageError(f"{where} is not writable ({cause}); {_move_hint(what)}", CONFIG)


def from_sqlite(err: sqlite3.Error, path: str) -> StorageError:
    """A SQLite error on the mirror, as a StorageError (the cause by SQLite's result code)."""
    primary = (getattr(err, "sqlite_errorcode", 0) or 0) & 0xFF
    where = _where("mirror", path)
    if primary == sqlite3.SQLITE_FULL:
        return StorageError(
            f"{where}: the disk is full; free some space, then run again (nothing committed was lost)",
            RUNTIME,
        )
    if primary in (sqlite3.SQLITE_READONLY, sqlite3.SQLITE_PERM, sqlite3.SQLITE_CANTOPEN):
        problem = location_problem(path, "mirror")
        if problem is not None:
            return problem
        return StorageError(f"{where} cannot be opened for writing ({err}); {_move_hint('mirror')}", CONFIG)
    if primary == sqlite3.SQLITE_NOTADB:
        return not_a_database(path)
    if primary == sqlite3.SQLITE_CORRUPT:
        return StorageError(
            f"{where} is corrupt ({err}); no run writes to it until it is replaced: {_RECREATE}", RUNTIME
        )
    if primary == sqlite3.SQLITE_IOERR:
        return StorageError(f"{where}: I/O error ({err}); check the disk, then run again", RUNTIME)
    return StorageError(f"{where}: {type(err).__name__}: {err}", RUNTIME)


def gone(path: str, deleted: bool) -> StorageError:
    """The mirror file a run opened is no longer at its path: what the run wrote went with it."""
    how = "was deleted" if deleted else "was replaced by another file"
    return StorageError(
        f"{_where('mirror', path)} {how} while the run was writing to it; what "
        f"the run wrote went with the old file: see what is at that path, then run "
        f"again",
        RUNTIME,
    )


def not_a_database(path: str) -> StorageError:
    return StorageError(
        f"{_where('mirror', path)} is not a SQLite database; point [storage] path "
        f"at the mirror, or move this file away to start a new one",
        CONFIG,
    )


# -- locations --------------------------------------------------------------------------------


def _existing_ancestor(path: str) -> str:
    d = os.path.dirname(os.path.abspath(path))
    while not os.path.lexists(d):
        d = os.path.dirname(d)
    return d


def location_problem(path: str, what: str = "mirror") -> StorageError | None:
    """Why `path` cannot be written (a file there, or created with its directories), or None.
    Creates nothing. A file needs a writable directory too: SQLite keeps its -wal and -shm
    files, and we our lock files, beside the mirror."""
    where = _where(what, path)
    if os.path.isdir(path):
        return from_os_error(OSError(errno.EISDIR, "is a directory"), path, what)
    parent = _existing_ancestor(path)
    if not os.path.isdir(parent):
        return from_os_error(OSError(errno.ENOTDIR, "not a directory"), path, what)
    if not os.access(parent, os.W_OK | os.X_OK):
        return StorageError(
            f"{where}: its directory {parent} is not writable ({_access_cause(parent)}); {_move_hint(what)}",
            CONFIG,
        )
    if os.path.exists(path) and not os.access(path, os.W_OK):
        return StorageError(f"{where} is read-only ({_access_cause(path)}); {_move_hint(what)}", CONFIG)
    return None


def _access_cause(path: str) -> str:
    try:
        st = os.statvfs(path)
    except OSError:
        return "permission denied"
    return "read-only file system" if st.f_flag & os.ST_RDONLY else "permission denied"


def probe_writable(path: str, what: str = "mirror") -> StorageError | None:
    """`location_problem`, then a real write beside the file: a temporary file created in the
    nearest existing directory and removed at once (so nothing is left behind)."""
    problem = location_problem(path, what)
    if problem is not None:
        return problem
    try:
        fd, tmp = tempfile.mkstemp(prefix=".crm-connector-check-", dir=_existing_ancestor(path))
        os.close(fd)
        os.unlink(tmp)
        if os.path.exists(path):
            os.close(os.open(path, os.O_WRONLY))  # opened, never written: mtime unchanged
    except OSError as err:
        return from_os_error(err, path, what)
    return None


# -- the mirror file --------------------------------------------------------------------------


def header_problem(path: str) -> StorageError | None:
    """A mirror that is not SQLite, or is shorter than its header says (truncated) and SQLite,
    reading it with its write-ahead log, does not find it whole; None when the file is missing,
    empty (a new mirror), whole as far as the header tells, or read whole by SQLite."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            head = fh.read(100)
    except FileNotFoundError:
        return None
    except OSError as err:
        if err.errno in (errno.EACCES, errno.EPERM):
            return StorageError(
                f"{_where('mirror', path)} cannot be read (permission denied); make "
                f"it readable by this user, or set [storage] path to another file",
                CONFIG,
            )
        return from_os_error(err, path)
    if size == 0:
        return None
    if not head.startswith(_HEADER[: len(head)]) or (len(head) >= 16 and head[:16] != _HEADER):
        return not_a_database(path)
    if len(head) < 100:
        return _truncated(path, f"{size} bytes, shorter than the 100-byte header")
    page_size = int.from_bytes(head[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(head[28:32], "big")
    valid = head[24:28] == head[92:96]  # the page count is kept only when these agree
    if page_size < 512 or size % page_size:
        detail = f"{size:,} bytes, not a whole number of {page_size}-byte pages"
    elif valid and pages and size < pages * page_size:
        detail = f"{size:,} bytes where its header says {pages * page_size:,}"
    else:
        return None
    # The pages may still be in the write-ahead log (a checkpoint a full disk cut short copies
    # page 1 first): SQLite is the judge, and a file it reads whole is not refused.
    return None if _sqlite_reads_whole(path) else _truncated(path, detail)


def _sqlite_reads_whole(path: str) -> bool:
    """Whether SQLite opens the file (with its write-ahead log) read-only and finds it whole."""
    try:
        conn = _connect(f"file:{quote(os.path.abspath(path))}?mode=ro")
    except sqlite3.Error:
        return False
    try:
        return conn.execute("PRAGMA quick_check(1)").fetchall() == [("ok",)]
    except sqlite3.Error:
        return False
    finally:
        conn.close()


def _truncated(path: str, detail: str) -> StorageError:
    return StorageError(
        f"{_where('mirror', path)} is truncated ({detail}); nothing was written to it; {_RECREATE}", RUNTIME
    )


def quick_check(conn: sqlite3.Connection, path: str) -> None:
    """Raise StorageError unless SQLite's `PRAGMA quick_check` finds the file whole."""
    try:
        rows = conn.execute("PRAGMA quick_check(3)").fetchall()
    except sqlite3.DatabaseError as err:
        raise from_sqlite(err, path) from None
    found = [" ".join(str(r[0]).split()) for r in rows]  # one line, however SQLite wraps it
    if found != ["ok"]:
        raise StorageError(
            f"{_where('mirror', path)} is corrupt (quick_check: {'; '.join(found)[:200]}); "
            f"nothing was written to it; {_RECREATE}",
            RUNTIME,
        )


def read_only_connection(path: str) -> sqlite3.Connection:
    """The mirror opened so that nothing can be written (`mode=ro`). In a read-only directory
    SQLite cannot make the -shm file a WAL reader needs; nobody can be writing there, so the
    file is then read as immutable."""
    uri = f"file:{quote(os.path.abspath(path))}"
    try:
        return _connect(f"{uri}?mode=ro")
    except sqlite3.OperationalError as err:
        if (getattr(err, "sqlite_errorcode", 0) or 0) & 0xFF not in (
            sqlite3.SQLITE_CANTOPEN,
            sqlite3.SQLITE_READONLY,
        ):
            raise
    return _connect(f"{uri}?immutable=1")


def _connect(uri: str) -> sqlite3.Connection:
    """A connection that has read the schema (so a file it cannot read fails here)."""
    conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.Error:
        conn.close()
        raise
    return conn


@contextlib.contextmanager
def setup_lock(path: str):
    """Hold an exclusive flock on the mirror's directory while a connection sets the file up
    (WAL mode, schema): two first opens at once would otherwise race (SQLite refuses the
    second WAL switch with `database is locked` without waiting; two ALTERs add one column
    twice). On the directory, not the file: closing any descriptor of the database file would
    drop SQLite's own POSIX locks, and a side file would be one more file to create."""
    fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the flock
