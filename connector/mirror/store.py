"""The SQLite mirror: open it, save pages, keep sync state. Never speaks HTTP.

`Mirror(path)` creates the file with mode 0600, turns on WAL and applies the schema
(idempotent). `save_page` writes one adapter `Page`, the stream's bookmark and the run's row
count in one transaction, so a crash loses at most the page being written.

Every write transaction starts as `BEGIN IMMEDIATE` (explicit ones through `db.atomic()`,
implicit ones through `isolation_level`): it takes the write lock first, waiting up to
`busy_timeout` for another writer (a thread, the daemon, a manual `sync` or `kpi`). A deferred
`BEGIN` would read first and then fail at once with `database is locked` when it tries to write
after another connection committed: under WAL the busy timeout cannot help it.

How a page's rows are written into each table (primary key, children replaced with their
parent, stage checks, derived columns) is the table's contract in `adapters.tables`.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3

import sqlite_utils
from sqlite_utils.utils import chunks

from adapters.base import Page
from adapters.tables import TABLES
from adapters.tables import table as contract
from adapters.times import iso
from connector.mirror import keys, schema, storage

# See `Mirror._fill_entry_stages`. `nxt`: the entity's next change after the entry row.
_NEXT = (
    "(SELECT n.{col} FROM stage_changes n WHERE n.source = sc.source AND n.entity = sc.entity "
    "AND n.entity_id = sc.entity_id AND (n.changed_at > sc.changed_at OR "
    "(n.changed_at = sc.changed_at AND n.id > sc.id)) ORDER BY n.changed_at, n.id LIMIT 1)"
)
_ENTRY_STAGES_SQL = f"""
    WITH entry AS (
        SELECT sc.rowid AS rid, sc.source, sc.entity, sc.stage_id AS old,
               {_NEXT.format(col="previous_stage_id")} AS next_prev,
               {_NEXT.format(col="pipeline_id")} AS next_pipe,
               cur.{{stage_col}} AS cur_stage, cur.{{pipe_col}} AS cur_pipe
        FROM stage_changes sc LEFT JOIN [{{table}}] cur
          ON cur.source = sc.source AND cur.id = sc.entity_id
        WHERE sc.source = ? AND sc.entity = ? AND sc.previous_stage_id IS NULL
          AND sc.entity_id IN ({{ids}})),
    pick AS (
        SELECT rid, source, entity, old,
               COALESCE(next_prev, CASE WHEN old IS NULL THEN cur_stage END) AS stage,
               CASE WHEN next_prev IS NOT NULL THEN next_pipe ELSE cur_pipe END AS hint
        FROM entry)
    UPDATE stage_changes SET stage_id = pick.stage, pipeline_id = COALESCE(
        (SELECT s.pipeline_id FROM stages s WHERE s.source = pick.source
           AND s.entity = pick.entity AND s.id = pick.stage AND s.pipeline_id = pick.hint),
        (SELECT min(s.pipeline_id) FROM stages s WHERE s.source = pick.source
           AND s.entity = pick.entity AND s.id = pick.stage), pick.hint)
    FROM pick
    WHERE stage_changes.rowid = pick.rid AND pick.stage IS NOT NULL
      AND (pick.old IS NULL OR pick.old != pick.stage)"""


def _touch_private(path: str) -> None:
    """Create the file readable by its owner only, before SQLite opens it."""
    if path == ":memory:" or os.path.exists(path):
        return
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
    except OSError as err:
        raise storage.location_problem(path) or storage.from_os_error(err, path) from None
    os.close(fd)


def _identity(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


class _Database(sqlite_utils.Database):
    """sqlite-utils' database whose outermost `atomic()` takes the write lock at once."""

    @contextlib.contextmanager
    def atomic(self):
        if self.conn.in_transaction:  # nested: sqlite-utils' savepoint
            with super().atomic():
                yield self
            return
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self
        except BaseException:
            self.rollback()
            raise
        try:
            self.conn.execute("COMMIT")
        except BaseException:
            self.rollback()
            raise


BUSY_TIMEOUT_MS = 300_000  # a writer waits this long for another's transaction (a KPI run's)


class Mirror:
    """One open mirror database.

    Opened for writing (the default), a bad location, a file that is not SQLite, a truncated or
    corrupt one raise `StorageError` before anything is written. `read_only=True` (`status`,
    `kpi show`, `check`) writes nothing at all: no schema changes, no file created; a mirror not
    made yet reads as an empty one.
    """

    def __init__(self, path: str, read_only: bool = False):
        self.path, self.read_only = path, read_only
        problem = (
            None
            if path == ":memory:"
            else (storage.header_problem(path) or (None if read_only else storage.location_problem(path)))
        )
        if problem is not None:
            raise problem
        try:
            if read_only:
                self._open_read_only(path)
            else:
                self._open(path)
        except sqlite3.Error as err:
            raise storage.from_sqlite(err, path) from None

    def _open(self, path: str) -> None:
        _touch_private(path)
        self.db = _Database(path)
        self.conn = self.db.conn
        self.conn.isolation_level = "IMMEDIATE"  # implicit transactions (DML) too
        self.conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        self.conn.execute("PRAGMA synchronous = NORMAL")
        if path == ":memory:":
            schema.apply(self.conn)
            return
        self._file = _identity(path)
        with storage.setup_lock(path):
            self.conn.execute("PRAGMA journal_mode = WAL")
        storage.quick_check(self.conn, path)  # never write into a damaged file
        with storage.setup_lock(path):
            schema.apply(self.conn)
        self.check_file()

    def _open_read_only(self, path: str) -> None:
        if not os.path.exists(path) or os.path.getsize(path) == 0:
            self.db = sqlite_utils.Database(memory=True)  # no mirror yet: an empty one
            schema.apply(self.db.conn)
        else:
            self.db = sqlite_utils.Database(storage.read_only_connection(path))
        self.conn = self.db.conn
        self.conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")

    _file: tuple[int, int] | None = None  # (device, inode) of the file opened for writing

    def check_file(self) -> None:
        """Raise StorageError when the file this mirror opened for writing is no longer the one
        at its path (deleted, or another file put there): SQLite goes on writing into the
        unlinked file, and all of it would be lost without a word."""
        if self._file is None:
            return
        try:
            now = _identity(self.path)
        except FileNotFoundError:
            now = None
        if now != self._file:
            raise storage.gone(self.path, deleted=now is None)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "Mirror":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- pages ---------------------------------------------------------------

    def save_page(
        self, source: str, stream: str, page: Page, run_row: int | None = None, counted: int | None = None
    ) -> int:
        """Upsert the page's rows, apply its deletions and bookmark, and add `counted` (default:
        every row) to the run `run_row` of `sync_runs` (so a killed run's count is what it
        committed); returns rows written."""
        with self.db.atomic():
            self._drop_unknown_stages(source, page)
            self._replace_children(source, page)
            for table, rows in page.rows.items():
                if rows:
                    self._upsert(table, source, rows)
            self._fill_previous_stages(source, page)
            self._fill_entry_stages(source, page)
            self._closing_moments(source, page)
            for table, ids in page.deleted.items():
                self._set_deleted(table, source, ids, 1)
            for table, dated in page.deleted_at.items():
                self._delete_unless_newer(table, source, dated)
            for table, ids in page.restored.items():
                self._set_deleted(table, source, ids, 0)
            for table, ids in page.present.items():
                self._reconcile(table, source, ids)
            if page.bookmark is not None:
                self.set_bookmark(source, stream, page.bookmark)
            if run_row is not None:
                self.conn.execute(
                    "UPDATE sync_runs SET rows = rows + ? WHERE id = ?",
                    (page.count() if counted is None else counted, run_row),
                )
        self.check_file()
        return page.count()

    def _drop_unknown_stages(self, source: str, page: Page) -> None:
        """Rows of staged tables (`Table.stage`) whose stage their pipeline does not have (as
        the mirror's `stages` know it) are not stored, and are reported on the page: an unknown
        stage is not `open`. The row the mirror held before stays, and so do its children
        (`Table.child_of`). A pipeline with no stages in the mirror yet is not judged."""
        for t in TABLES.values():
            if t.stage is None:
                continue
            table, entity, stage_col, pipe = t.name, t.stage.entity, t.stage.column, t.stage.pipeline
            rows = page.rows.get(table)
            if not rows:
                continue
            known: dict = {}
            for pid, sid in self.conn.execute(
                "SELECT pipeline_id, id FROM stages WHERE source = ? AND entity = ?", (source, entity)
            ):
                known.setdefault(pid, set()).add(str(sid))
            bad = {}
            for r in rows:
                pid = r.get(pipe) if isinstance(pipe, str) else pipe
                if pid in known and str(r.get(stage_col)) not in known[pid]:
                    bad[r["id"]] = {
                        "item": r["id"],
                        "field": stage_col,
                        "value": r.get(stage_col),
                        "why": f"pipeline {pid} has no such stage",
                        "skipped": True,
                    }
            if bad:
                page.rows[table] = [r for r in rows if r["id"] not in bad]
                for child in TABLES.values():  # the old children stay too
                    if child.child_of and child.child_of.table == table and child.name in page.rows:
                        key = child.child_of.key
                        page.rows[child.name] = [x for x in page.rows[child.name] if x[key] not in bad]
                page.problems.extend(bad.values())

    def _upsert(self, table: str, source: str, rows: list[dict]) -> None:
        key_cols = keys.KEYS.get(table)
        prepared = []
        for row in rows:
            row = dict(row, source=source)
            if key_cols:
                row["key"] = keys.key_of(source, [row.get(c) for c in key_cols])
            raw = row.get("raw")
            if raw is not None and not isinstance(raw, str):
                row["raw"] = json.dumps(raw, ensure_ascii=False, separators=(",", ":"))
            prepared.append(row)
        self.db[table].upsert_all(prepared, pk=contract(table).primary_key, batch_size=500)

    def _fill_previous_stages(self, source: str, page: Page) -> None:
        """Give a stage change without `previous_stage_id` the stage of the entity's change
        before it, in the tables deriving it (`stage_changes`). An incremental run sees a
        deal's latest change without the one before, which an earlier run stored; the mirror
        has both."""
        for t in TABLES.values():
            if "previous_stage_id" not in t.derived:
                continue
            ids = [c["id"] for c in page.rows.get(t.name) or () if c.get("previous_stage_id") is None]
            for chunk in map(list, chunks(ids, 500)):
                self.conn.execute(
                    f"""
                    UPDATE [{t.name}] AS sc SET previous_stage_id = (
                        SELECT p.stage_id FROM [{t.name}] p
                        WHERE p.source = sc.source AND p.entity = sc.entity AND p.entity_id = sc.entity_id
                          AND (p.changed_at < sc.changed_at OR (p.changed_at = sc.changed_at AND p.id < sc.id))
                        ORDER BY p.changed_at DESC, p.id DESC LIMIT 1)
                    WHERE sc.source = ? AND sc.previous_stage_id IS NULL
                      AND sc.id IN ({",".join("?" * len(chunk))})""",
                    [source, *map(str, chunk)],
                )

    def _fill_entry_stages(self, source: str, page: Page) -> None:
        """Give an entry row (no previous stage) that came without its stage the stage the
        entity entered: the `previous_stage_id` of its next change, else (never moved) its
        current stage. Re-filled whenever the page brings changes or rows of the entity, so it
        is right whichever arrives first; a filled entry row is re-filled only when its next
        change names another stage before it. The pipeline is the one holding that stage in
        `stages` (the hinted one first: won/lost ids repeat per pipeline), else the hint: the
        next change's pipeline, or the entity's own. For the staged tables whose
        `Stage.fills_entry` is set (deals)."""
        for t in TABLES.values():
            if t.stage is None or not t.stage.fills_entry:
                continue
            table, entity, stage_col, pipe_col = t.name, t.stage.entity, t.stage.column, t.stage.pipeline
            ids = {c["entity_id"] for c in page.rows.get("stage_changes", ()) if c.get("entity") == entity}
            ids |= {r["id"] for r in page.rows.get(table, ())}
            for chunk in map(list, chunks(ids, 500)):
                self.conn.execute(
                    _ENTRY_STAGES_SQL.format(
                        table=table, stage_col=stage_col, pipe_col=pipe_col, ids=",".join("?" * len(chunk))
                    ),
                    [source, entity, *chunk],
                )

    def _closing_moments(self, source: str, page: Page) -> None:
        """`closed_at` of a closed deal or lead (the tables deriving it) is the moment it
        entered its final stage: when the mirror holds the entity's latest stage change and
        that change entered the stage the entity is in, its `changed_at` replaces what the
        adapter gave (a CRM whose item lacks that moment sends its best guess). Runs for the
        entities of the page, whichever of the two streams arrives later."""
        for t in TABLES.values():
            if "closed_at" not in t.derived:
                continue
            table, entity, stage_col = t.name, t.stage.entity, t.stage.column
            ids = {r["id"] for r in page.rows.get(table, ())}
            ids |= {c["entity_id"] for c in page.rows.get("stage_changes", ()) if c.get("entity") == entity}
            latest = (
                "(SELECT {col} FROM stage_changes sc WHERE sc.source = t.source AND sc.entity = ? "
                "AND sc.entity_id = t.id ORDER BY sc.changed_at DESC, sc.rowid DESC LIMIT 1)"
            )
            for chunk in map(list, chunks(ids, 500)):
                self.conn.execute(
                    f"""
                    UPDATE [{table}] AS t SET closed_at = {latest.format(col="changed_at")}
                    WHERE t.source = ? AND t.closed_at IS NOT NULL
                      AND t.id IN ({",".join("?" * len(chunk))})
                      AND t.{stage_col} = {latest.format(col="stage_id")}
                      AND t.closed_at != {latest.format(col="changed_at")}""",
                    [entity, source, *chunk, entity, entity],
                )

    def _replace_children(self, source: str, page: Page) -> None:
        """Child rows (`Table.child_of`: a deal's contact links) are replaced as a whole, for
        every parent on the page, when the page carries that table."""
        for t in TABLES.values():
            if t.child_of is None or t.name not in page.rows:
                continue
            parent, key = t.child_of.table, t.child_of.key
            parent_ids = {d["id"] for d in page.rows.get(parent, [])}
            parent_ids |= {child[key] for child in page.rows[t.name]}
            for chunk in map(list, chunks(parent_ids, 500)):
                self.conn.execute(
                    f"DELETE FROM [{t.name}] WHERE source = ? AND {key} IN ({','.join('?' * len(chunk))})",
                    [source, *chunk],
                )

    def _set_deleted(self, table: str, source: str, ids: list, flag: int) -> None:
        for chunk in map(list, chunks(ids, 500)):
            self.conn.execute(
                f"UPDATE [{table}] SET is_deleted = ? WHERE source = ? "
                f"AND id IN ({','.join('?' * len(chunk))})",
                [flag, source, *chunk],
            )

    def _delete_unless_newer(self, table: str, source: str, dated: dict) -> None:
        """Mark rows deleted unless changed after their deletion (ISO UTC text compares as
        time): listed alive since, so restored. A tie deletes: an edit and a deletion in one
        second are commoner than a deletion and a restore."""
        self.conn.executemany(
            f"UPDATE [{table}] SET is_deleted = 1 WHERE source = ? AND id = ? AND "
            "(? IS NULL OR updated_at IS NULL OR updated_at <= ?)",
            [(source, i, at, at) for i, at in dated.items()],
        )

    def _text_ids(self, table: str) -> bool:
        return any(
            col[1] == "id" and col[2].upper() == "TEXT"
            for col in self.conn.execute(f"PRAGMA table_info([{table}])")
        )

    def _reconcile(self, table: str, source: str, ids: list) -> None:
        """Mark rows the CRM no longer lists as deleted, and listed ones as not deleted."""
        self.conn.execute("CREATE TEMP TABLE IF NOT EXISTS _present (id PRIMARY KEY)")
        self.conn.execute("DELETE FROM _present")
        if self._text_ids(table):  # a listing's integer ids must compare as the table's text
            ids = [str(i) for i in ids]
        self.conn.executemany("INSERT OR IGNORE INTO _present (id) VALUES (?)", ((i,) for i in ids))
        self.conn.execute(
            f"UPDATE [{table}] SET is_deleted = (id NOT IN (SELECT id FROM _present)) "
            f"WHERE source = ? AND is_deleted != (id NOT IN (SELECT id FROM _present))",
            (source,),
        )
        self.conn.execute("DELETE FROM _present")

    # -- sync state ----------------------------------------------------------

    def get_bookmark(self, source: str, stream: str) -> str | None:
        row = self.conn.execute(
            "SELECT bookmark FROM sync_state WHERE source = ? AND stream = ?", (source, stream)
        ).fetchone()
        return row[0] if row else None

    def set_bookmark(self, source: str, stream: str, bookmark: str | None) -> None:
        self.conn.execute(
            "INSERT INTO sync_state (source, stream, bookmark) VALUES (?, ?, ?) "
            "ON CONFLICT (source, stream) DO UPDATE SET bookmark = excluded.bookmark",
            (source, stream, bookmark),
        )

    def start_run(self, run_id: str, source: str, stream: str, started_at: str) -> int:
        with self.db.atomic():
            cur = self.conn.execute(
                "INSERT INTO sync_runs (run_id, source, stream, started_at, status) "
                "VALUES (?, ?, ?, ?, 'running')",
                (run_id, source, stream, started_at),
            )
            self.conn.execute(
                "INSERT INTO sync_state (source, stream, last_run_started_at) VALUES (?, ?, ?) "
                "ON CONFLICT (source, stream) DO UPDATE SET last_run_started_at = excluded.last_run_started_at",
                (source, stream, started_at),
            )
        return cur.lastrowid

    def finish_run(
        self,
        run_row: int,
        status: str,
        rows: int,
        requests: int,
        error: str | None = None,
        warnings: dict | None = None,
    ) -> None:
        """Close a run; `warnings` ({"count", "sample"}: values not stored as sent) as JSON."""
        finished = iso()
        noted = json.dumps(warnings, ensure_ascii=False) if warnings and warnings.get("count") else None
        with self.db.atomic():
            self.conn.execute(
                "UPDATE sync_runs SET finished_at = ?, status = ?, rows = ?, requests = ?, error = ?, "
                "warnings = ? WHERE id = ?",
                (finished, status, rows, requests, error, noted, run_row),
            )
            if status == "ok":
                self.conn.execute(
                    "UPDATE sync_state SET last_success_at = ? WHERE source = ? AND stream = "
                    "(SELECT stream FROM sync_runs WHERE id = ?)",
                    (finished, self._run_source(run_row), run_row),
                )

    def close_stale_runs(self, source: str) -> int:
        """Mark runs a killed process left 'running' as interrupted (call under the source lock,
        when nobody else can be running them). Their pages are committed; bookmarks resume them."""
        with self.db.atomic():
            cur = self.conn.execute(
                "UPDATE sync_runs SET status = 'interrupted', finished_at = ?, "
                "error = 'the process ended mid-run (killed or crashed); resumed from the bookmark' "
                "WHERE source = ? AND status = 'running'",
                (iso(), source),
            )
        return cur.rowcount

    def last_kpi_summary(self, source: str) -> dict | None:
        """The source's last KPI computation and the outcome of the write-back that followed."""
        run = self.conn.execute(
            "SELECT computed_at, clients, values_changed, seconds FROM kpi_runs WHERE source = ? "
            "ORDER BY id DESC LIMIT 1",
            (source,),
        ).fetchone()
        if not run:
            return None
        counts = dict(
            self.conn.execute(
                "SELECT status, count(*) FROM writeback_log WHERE source = ? AND at >= ? GROUP BY status",
                (source, run[0]),
            ).fetchall()
        )
        return {
            "source": source,
            "computed_at": run[0],
            "clients": run[1],
            "values_changed": run[2],
            "written": counts.get("ok", 0),
            "failed": counts.get("failed", 0),
        }

    def _run_source(self, run_row: int) -> str:
        return self.conn.execute("SELECT source FROM sync_runs WHERE id = ?", (run_row,)).fetchone()[0]

    def status(self) -> list[dict]:
        """Per source and stream: bookmark, last run, its status, rows and error."""
        sql = """
        SELECT s.source, s.stream, s.bookmark, s.last_run_started_at, s.last_success_at,
               r.status AS last_status, r.rows AS last_rows, r.requests AS last_requests, r.error AS last_error
        FROM sync_state s
        LEFT JOIN sync_runs r ON r.id = (SELECT max(id) FROM sync_runs
                                        WHERE source = s.source AND stream = s.stream)
        ORDER BY s.source, s.stream"""
        cur = self.conn.execute(sql)
        cols = [c[0] for c in cur.description]
        return [dict(zip(cols, r)) for r in cur.fetchall()]

    def table_counts(self, source: str | None = None) -> dict[str, int]:
        """Rows per entity table, for one source or all."""
        where, args = ("WHERE source = ?", (source,)) if source else ("", ())
        return {
            t: self.conn.execute(f"SELECT count(*) FROM [{t}] {where}", args).fetchone()[0]
            for t in schema.ENTITY_TABLES
        }
