"""One source's job, run one way by every caller: lock, stale runs, sync, KPIs, result.

`run_job` is what `crm-connector sync`, `kpi` and `demo` run, and what the scheduler's
`Runner` runs for the daemon and `run --once`:

    take the source's lock -> close runs a killed process left 'running' -> build the adapter
    -> sync the streams -> KPIs and write-back (only after a complete sync) -> close the adapter

It never raises for a job that went wrong: the `JobResult` says ok, failed, interrupted or
busy, with the error. Alerts go to a `Notifier` when one is given (the daemon's); without one,
only a token to re-authorise is alerted. The moving parts are `Steps`, so tests run a job
with fakes.

The small helpers at the end (`check_source`, `exchange_code`, `sign_in`, `mirror_status`,
`client_kpis`, `table_counts`) are what the other commands do, so the CLI only parses and
prints.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

from adapters.errors import Interrupted, SourceError, needs_reauthorisation
from adapters.redact import redact
from connector.config.loader import Config, SourceConfig
from connector.kpi import engine as kpi_mod
from connector.kpi import inputs as kpi_inputs
from connector.mirror import storage
from connector.mirror.storage import StorageError
from connector.run import locks, runtime
from connector.run.kpi_job import KpiJobResult, declared_streams, run_kpi_job
from connector.run.locks import LockAbandoned, LockTimeout, source_lock
from connector.run.notify import Notifier, urgent_only
from connector.run.progress import Progress
from connector.run.sync import Outcome, StreamResult, UnknownStream, failures, sync_source

log = logging.getLogger("crm_connector.jobs")

NIGHTLY, INCREMENTAL = "sync", "incremental"  # the scheduler's job kinds, as logs name them
SUCCESS = (Outcome.OK,)  # a stream skipped for a missing scope leaves its tables incomplete


@dataclass(frozen=True)
class Steps:
    """What a job calls, with the signatures of the real ones (tests pass fakes)."""

    mirror: Callable = runtime.open_mirror  # (cfg) -> Mirror, a context manager
    adapter: Callable = runtime.make_adapter  # (cfg, source) -> adapter
    sync: Callable = sync_source  # (mirror, adapter, streams, *, full, progress, stop)
    kpi: Callable = run_kpi_job  # (cfg, mirror, source, adapter, *, dry_run, only)


@dataclass
class JobResult:
    """What one run of one source's job did."""

    source: str
    job: str  # sync (nightly), incremental, kpi, ...: how logs and alerts name it
    status: str = "ok"  # ok, failed, interrupted, busy
    results: list[StreamResult] = field(default_factory=list)  # one per stream synced
    kpi: KpiJobResult | None = None  # the KPI job's summary, when it ran
    error: str | None = None
    seconds: float = 0.0
    exception: BaseException | None = field(default=None, repr=False, compare=False)

    @property
    def reason(self) -> str | None:
        """The error as the exception said it (what a command prints), else `error`."""
        return redact(str(self.exception)) if self.exception is not None else self.error

    @property
    def rows(self) -> int:
        return sum(r.rows for r in self.results)

    @property
    def requests(self) -> int:
        return sum(r.requests for r in self.results)


def run_job(
    cfg: Config,
    source: SourceConfig,
    *,
    job: str = NIGHTLY,
    sync: bool = True,
    streams: list[str] | None = None,
    full: bool = False,
    kpi: bool = False,
    dry_run: bool = False,
    only: list[str] | None = None,
    stop: threading.Event | None = None,
    progress: Progress | None = None,
    lock_timeout_s: float | None = None,
    notifier: Notifier | None = None,
    steps: Steps = Steps(),
) -> JobResult:
    """Run one source's job under its lock; never raises for the job's own failures.

    sync: pull `streams` (default: the source's, else all), `full` ignoring bookmarks.
    kpi: compute KPIs and write back the changes (`dry_run`: plan only; `only`: these KPIs);
    with `sync`, only when every stream succeeded. `stop`: a stop asked for (signals) ends
    the sync after its current page. `lock_timeout_s`: default `[schedule] lock_timeout_s`.
    """
    out = JobResult(source.name, job)
    cfg = cfg.scoped(source.name)
    if stop is not None and stop.is_set():
        out.status, out.error = "interrupted", "stop requested before the job started"
        return out
    run = _Run(cfg, source, out, steps, notifier or urgent_only(cfg.notify), stop)
    t0 = time.monotonic()
    try:
        with source_lock(cfg, source.name, lock_timeout_s, stop=stop), steps.mirror(cfg) as mirror:
            close_stale_runs(mirror, source.name)
            run.locked(
                mirror,
                sync=sync,
                kpi=kpi,
                streams=streams or source.streams,
                full=full,
                progress=progress,
                dry_run=dry_run,
                only=only,
            )
            mirror.check_file()  # what the job wrote is in the file at the mirror's path
    except LockTimeout as err:
        run.busy(err)
    except LockAbandoned as err:
        out.status, out.error, out.exception = "interrupted", str(err), err
    except Exception as err:  # the daemon outlives any one job's failure
        run.crashed(as_storage_error(err, cfg))
    out.seconds = time.monotonic() - t0
    return out


def exit_code(err: BaseException | None) -> int:
    """The exit code a failed job's error calls for: 2 for what the config must fix (an unknown
    stream, a storage location), else 1."""
    if isinstance(err, UnknownStream):
        return 2
    return getattr(err, "exit_code", 1)


def as_storage_error(err: Exception, cfg: Config) -> Exception:
    """A SQLite error from the mirror as the StorageError that says what to do; others as they are."""
    if isinstance(err, sqlite3.Error):
        return storage.from_sqlite(err, cfg.storage_path)
    return err


def close_stale_runs(mirror, source: str) -> int:
    """Mark runs a killed process left 'running' as interrupted (under the source's lock)."""
    count = mirror.close_stale_runs(source)
    if count:
        log.warning(
            "source '%s': %d run(s) left 'running' by a process that died, marked interrupted", source, count
        )
    return count


@contextmanager
def _interrupting(stop: threading.Event | None, conn):
    """While the block runs, a stop interrupts the SQLite query under way on `conn` (a KPI
    computation may run for minutes between two looks at the flag)."""
    if stop is None:
        yield
        return
    done = threading.Event()

    def watch():
        while not done.is_set():
            if stop.wait(0.2):  # a poll, so the watcher ends with the block
                if not done.is_set():
                    conn.interrupt()
                return

    watcher = threading.Thread(target=watch, name="kpi-stop", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join()


class _Run:
    """One job under way: what it works on, the result it fills in, where alerts go."""

    def __init__(
        self,
        cfg: Config,
        source: SourceConfig,
        out: JobResult,
        steps: Steps,
        alerts: Notifier,
        stop: threading.Event | None,
    ):
        self.cfg, self.source, self.out, self.steps = cfg, source, out, steps
        self.alerts, self.stop = alerts, stop

    def locked(self, mirror, *, sync: bool, kpi: bool, streams, full, progress, dry_run, only) -> None:
        """The job's work, holding the lock; the adapter is closed whatever happens."""
        # a dry-run KPI job sends nothing, so it needs no adapter (nor the CRM's credentials)
        adapter = self.steps.adapter(self.cfg, self.source) if sync or not dry_run else None
        if self.stop is not None and hasattr(adapter, "watch"):
            adapter.watch(self.stop)  # write-back's waits and requests obey a stop too
        try:
            if sync:
                self.sync(mirror, adapter, streams, full=full, progress=progress)
            # KPIs only after a complete sync: half-synced data would write wrong numbers
            if kpi and self.out.status == "ok":
                self.kpi(mirror, adapter, dry_run=dry_run, only=only, label="sync + kpi" if sync else "kpi")
        finally:
            if adapter is not None:
                adapter.close()

    def sync(self, mirror, adapter, streams, *, full, progress) -> None:
        out = self.out
        out.results = self.steps.sync(mirror, adapter, streams, full=full, progress=progress, stop=self.stop)
        self.alerts.sync_results(out.source, out.results)
        outcomes = {r.outcome for r in out.results}
        if Outcome.INTERRUPTED in outcomes or (self.stop is not None and self.stop.is_set()):
            out.status = "interrupted"
        elif not outcomes <= set(SUCCESS):
            out.status, out.error = "failed", failures(out.results)

    def kpi(self, mirror, adapter, *, dry_run, only, label: str) -> None:
        out = self.out
        try:
            with _interrupting(self.stop, mirror.conn):
                out.kpi = self.steps.kpi(self.cfg, mirror, self.source, adapter, dry_run=dry_run, only=only)
            if mirror.conn.in_transaction:
                # a job that returned has finished its work: keep it. (Python's sqlite3 opens a
                # transaction implicitly on DML; left open, closing the mirror would roll back.)
                log.debug("KPI job of %s left a transaction open; committing it", out.source)
                mirror.conn.commit()
        except Interrupted:  # write-back gave up a wait or a request for a stop
            if mirror.conn.in_transaction:
                mirror.conn.commit()  # what was written back and recorded stays
            out.status, out.error = "interrupted", "KPI job: stopped by signal"
            return
        except Exception as err:
            if self.stop is not None and self.stop.is_set():  # its query was interrupted
                if mirror.conn.in_transaction:
                    mirror.conn.rollback()  # the KPIs of this run are not half stored
                out.status, out.error = "interrupted", "KPI job: stopped by signal"
                return
            err = as_storage_error(err, self.cfg)
            out.status, out.exception = "failed", err
            out.error = redact(
                f"KPI job: {err}"
                if isinstance(err, StorageError)
                else f"KPI job: {type(err).__name__}: {err}"
            )
            if isinstance(err, (StorageError, SourceError, kpi_inputs.NotSynced)):
                log.debug("KPI job of %s not done: %s", out.source, out.error)  # said, not a crash
            else:
                log.debug("KPI job of %s crashed", out.source, exc_info=True)
            self.alerts.failed(
                out.source, "kpi", out.error, job="kpi", reauthorise=needs_reauthorisation(err)
            )
            return
        failed = getattr(out.kpi, "failed", 0) or 0
        if failed:
            out.status, out.error = "failed", f"KPI write-back: {failed} value(s) rejected by the CRM"
            self.alerts.failed(out.source, "kpi", f"{out.error}; {out.kpi.line()}", job="kpi")
        else:
            self.alerts.succeeded(out.source, out.kpi.line(), job=label)

    def busy(self, err: LockTimeout) -> None:
        out = self.out
        out.status, out.error, out.exception = "busy", str(err), err
        # an incremental run bumping into the nightly one is routine; anything else is not
        if out.job != INCREMENTAL:
            self.alerts.failed(out.source, "-", out.error, job=out.job)

    def crashed(self, err: Exception) -> None:
        out = self.out
        out.status, out.exception = "failed", err
        out.error = redact(str(err) if isinstance(err, StorageError) else f"{type(err).__name__}: {err}")
        log.debug("job %s:%s crashed", out.job, out.source, exc_info=True)
        self.alerts.failed(out.source, "-", out.error, job=out.job, reauthorise=needs_reauthorisation(err))


# -- what the other commands do ------------------------------------------------------------


def check_source(cfg: Config, source: SourceConfig) -> str:
    """One cheap authenticated call; raises SourceError when the CRM refuses."""
    adapter = runtime.make_adapter(cfg, source)
    try:
        return adapter.check()
    finally:
        adapter.close()


def exchange_code(cfg: Config, source: SourceConfig, code: str) -> str:
    """Trade an OAuth authorization code for tokens (saved beside the mirror); says what it did."""
    adapter = runtime.make_adapter(cfg, source)
    try:
        return adapter.exchange_code(code)
    finally:
        adapter.close()


def sign_in(
    cfg: Config, source: SourceConfig, say: Callable[[str], None], timeout_s: float | None = None
) -> str:
    """OAuth in the browser, where the source's CRM offers it: `say` shows the URL to open;
    the CRM's adapter catches the redirect and trades the code at once. Says what it did."""
    adapter = runtime.make_adapter(cfg, source)
    try:
        sign_in_ = getattr(adapter, "sign_in", None)
        if sign_in_ is None:
            raise SourceError(
                f"source '{source.name}': this CRM's sign-in takes the code by hand; "
                f"run `crm-connector auth {source.name} --code CODE`"
            )
        return sign_in_(say, timeout_s)
    finally:
        adapter.close()


@contextmanager
def looking(cfg: Config) -> Iterator:
    """The mirror opened read-only for a command that only looks (nothing written, no schema
    change, no lock); a SQLite error reading it raises the StorageError that says what to do."""
    with runtime.open_mirror(cfg, read_only=True) as mirror:
        try:
            yield mirror
        except sqlite3.Error as err:
            raise storage.from_sqlite(err, cfg.storage_path) from None


DIED = "the process ended mid-run (killed or crashed); the next run resumes from the bookmark"


def mirror_status(cfg: Config) -> tuple[list[dict], list[dict]]:
    """Per source and stream: last run and bookmark; and each source's last KPI job.

    A run is `running` only while a process holds its source's lock; one a dead process left
    behind shows as `interrupted`, with the rows its committed pages hold."""
    rows, kpis = [], []
    for scope in _existing(cfg):
        with looking(scope) as mirror:
            rows += mirror.status()
            kpis += [k for k in (mirror.last_kpi_summary(s.name) for s in scope.sources) if k]
    return [_live_status(cfg, r) for r in rows], kpis


def _existing(cfg: Config) -> list[Config]:
    """The configs of the mirror files there are: each source's file that exists (one file per
    source; a source never synced has none yet), or the one shared file."""
    scopes = cfg.scopes()
    return scopes if not cfg.per_source else [s for s in scopes if os.path.exists(s.storage_path)]


def _live_status(cfg: Config, row: dict) -> dict:
    if row.get("last_status") != "running" or locks.holder(cfg, row["source"]) is not None:
        return row
    return dict(row, last_status="interrupted", last_error=DIED)


def client_kpis(cfg: Config, source: str, entity_type: str, entity_id: int) -> tuple[list[dict], dict]:
    """One client's latest KPI values, and the KPI definitions by name."""
    with looking(cfg.scoped(source)) as mirror:
        rows = kpi_mod.latest(mirror, source, entity_type, entity_id)
    return rows, kpi_mod.all_kpis(cfg.kpi)


def table_counts(cfg: Config) -> dict[str, dict[str, int]]:
    """Rows per entity table, per source."""
    counts = {}
    for scope in _existing(cfg):
        with looking(scope) as mirror:
            counts.update({s.name: mirror.table_counts(s.name) for s in scope.sources})
    return counts


def storage_problems(cfg: Config, deep: bool = False) -> list[StorageError]:
    """What keeps the mirror or the token file from being used where the config puts them:
    cheap tests of the locations (creating nothing); `deep` (for `check`) writes and removes a
    probe file beside each, and reads an existing mirror through SQLite's quick check."""
    probe = storage.probe_writable if deep else storage.location_problem
    problems = []
    for scope in cfg.scopes():
        found = [
            p
            for p in (probe(scope.storage_path, "mirror"), probe(scope.token_path, "token file"))
            if p is not None
        ]
        found += [p for p in [storage.header_problem(scope.storage_path)] if p is not None and not found]
        if deep and not found:
            try:
                with looking(scope) as mirror:
                    storage.quick_check(mirror.conn, scope.storage_path)
            except StorageError as err:
                found.append(err)
        problems += found
    return problems


# -- complete data: KPIs only from streams that completed ------------------------------------


def ever_synced(cfg: Config, source: str) -> bool:
    """Whether any stream of the source has completed a sync in the mirror."""
    with looking(cfg.scoped(source)) as mirror:
        return kpi_inputs.ever_synced(mirror, source)


def stream_scopes(cfg: Config, source: SourceConfig) -> list[dict]:
    """Per declared stream: the scope it needs and its last sync, with what to do when it was
    skipped (a scope the credentials lack)."""
    with looking(cfg.scoped(source.name)) as mirror:
        states = kpi_inputs.stream_states(mirror, source.name, declared_streams(cfg, source))
    return [
        {
            "source": source.name,
            "stream": s.name,
            "scope": s.scope or "-",
            "last sync": s.last_status or "never",
            "advice": f"add the '{s.scope}' scope"
            if s.last_status == "skipped" and s.scope
            else ("" if s.last_status != "skipped" else s.last_error or ""),
        }
        for s in states
    ]
