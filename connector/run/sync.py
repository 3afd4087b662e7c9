"""The wire from adapters to the mirror: run streams, save pages, record every run.

Each stream's pages are saved one transaction at a time, with the bookmark, so an error or
a crash keeps everything already committed. A failing stream is recorded in `sync_runs` with
its message and the next stream runs; auth failures, blocks and an unreachable host stop the
source (its other streams would only fail the same way, slowly).

A run counts entities: rows of the stream's main table (the first it declares) written,
deleted or restored, so a deal's contact links do not count as deals. Each stream's end is
logged once (one line; a warning when it did not end ok); the streams a source-stopping
failure leaves unrun are recorded in `sync_runs`, not logged again.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass, field
from enum import Enum

from adapters.errors import (
    AuthError,
    BlockedError,
    Interrupted,
    ScopeError,
    SourceError,
    UnreachableError,
    needs_reauthorisation,
)
from adapters.redact import redact
from adapters.times import iso, utc_now
from connector.mirror import storage
from connector.mirror.store import Mirror
from connector.run.progress import Progress

log = logging.getLogger("crm_connector.sync")
SAMPLE = 20  # problems kept per stream in the run result and `sync_runs.warnings`
SHOWN = 3  # of which the log line shows
NOT_RUN_PREFIX = "not run: "  # how `sync_runs.error` of a stream left unrun begins: then the cause


class Outcome(Enum):
    """How one stream's run ended: decided where it ends (`_copy_pages`, `_not_run`), then read
    by the summary, the alerts and the job's status instead of re-deriving it from the error."""

    OK = "ok"
    FAILED = "failed"
    SKIPPED = "skipped"  # a scope the credentials lack: no alert, but its tables are incomplete
    NOT_RUN = "not run"  # an earlier stream's failure stopped the source before this one
    INTERRUPTED = "interrupted"  # a stop was asked for, while it ran or before it started

    @property
    def recorded(self) -> str:
        """As `sync_runs.status` holds it: a stream left unrun is recorded 'failed', with an
        error saying `not run: <cause>` (the text existing mirrors and users' queries read)."""
        return Outcome.FAILED.value if self is Outcome.NOT_RUN else self.value


def unrun_cause(status: str | None, error: str | None) -> str | None:
    """The cause a `sync_runs` record of a stream left unrun names (the error of the stream
    that stopped the source), else None: the one reader of how `_not_run` words its record."""
    if status == Outcome.NOT_RUN.recorded and error and error.startswith(NOT_RUN_PREFIX):
        return error.removeprefix(NOT_RUN_PREFIX)
    return None


@dataclass
class StreamResult:
    source: str
    stream: str
    outcome: Outcome  # also given as its value: StreamResult(source, stream, "ok")
    rows: int = 0
    requests: int = 0
    seconds: float = 0.0
    error: str | None = None
    stops_source: bool = False  # auth failure, block, host down: its other streams are not run
    reauthorise: bool = False  # the source needs `crm-connector auth` (a ReauthoriseError)
    warnings: int = 0  # values not stored as sent (NULL instead, or the item skipped)
    sample: list[dict] = field(default_factory=list)  # the first SAMPLE of them

    def __post_init__(self) -> None:
        self.outcome = Outcome(self.outcome)

    @property
    def status(self) -> str:
        """The outcome as `sync_runs.status` records it (and the log line says it)."""
        return self.outcome.recorded

    def note(self, problems: list[dict]) -> None:
        """Count a page's problems and keep the first few, each naming this stream."""
        self.warnings += len(problems)
        room = SAMPLE - len(self.sample)
        self.sample.extend({"stream": self.stream, **p} for p in problems[: max(room, 0)])

    def warnings_json(self) -> dict | None:
        return {"count": self.warnings, "sample": self.sample} if self.warnings else None


class UnknownStream(ValueError):
    pass


def sync_source(
    mirror: Mirror,
    adapter,
    streams: list[str] | None = None,
    full: bool = False,
    progress: Progress | None = None,
    stop: threading.Event | None = None,
    run_id: str | None = None,
) -> list[StreamResult]:
    """Run the adapter's streams (all, or `streams`) into the mirror; one result per stream."""
    available = adapter.stream_names()
    wanted = streams or available
    unknown = [s for s in wanted if s not in available]
    if unknown:
        raise UnknownStream(
            f"source '{adapter.source}' has no stream '{unknown[0]}' (streams: {', '.join(available)})"
        )
    progress = progress or Progress(enabled=False)
    if hasattr(adapter, "watch"):  # waits and requests obey this run's stop (and no earlier run's)
        adapter.watch(stop)
    main = {s.name: s.tables[0] for s in adapter.streams()}
    run_id = run_id or uuid.uuid4().hex[:12]
    run_started = utc_now()
    results: list[StreamResult] = []
    fatal: tuple[Outcome, str] | None = None  # why the streams still to come do not run
    try:
        for k, stream in enumerate(wanted, 1):
            if stop is not None and stop.is_set():
                fatal = fatal or (Outcome.INTERRUPTED, "interrupted before this stream ran")
            if fatal:
                results.append(_not_run(mirror, run_id, adapter.source, stream, run_started, *fatal))
                continue
            progress.start(
                f"{adapter.source}/{stream}",
                f"{k}/{len(wanted)}",
                main[stream],
                requests=lambda: getattr(adapter, "requests", 0),
            )
            result = _run_stream(
                mirror, adapter, stream, main[stream], full, run_started, run_id, progress, stop
            )
            results.append(result)
            if result.stops_source:
                fatal = (Outcome.NOT_RUN, f"{NOT_RUN_PREFIX}{result.error}")
    finally:
        progress.stop()
    return results


def _run_stream(mirror, adapter, stream, main, full, run_started, run_id, progress, stop) -> StreamResult:
    """One stream, recorded in `sync_runs` from start to finish; `main`: the table it counts."""
    source = adapter.source
    bookmark = None if full else mirror.get_bookmark(source, stream)
    run_row = mirror.start_run(run_id, source, stream, iso(run_started))
    result = StreamResult(source, stream, Outcome.OK)
    requests_before, t0 = adapter.requests, time.monotonic()
    try:
        _copy_pages(
            mirror,
            adapter.fetch(stream, bookmark, run_started, full=full),
            main,
            result,
            progress,
            stop,
            run_row,
        )
    except storage.StorageError as err:  # the mirror cannot take more: no stream can go on
        _record_failure(mirror, run_row, result, adapter.requests - requests_before, err)
        raise
    result.requests = adapter.requests - requests_before
    result.seconds = time.monotonic() - t0
    mirror.finish_run(
        run_row, result.outcome.recorded, result.rows, result.requests, result.error, result.warnings_json()
    )
    progress.finish()
    _log(result)
    _log_problems(result)
    return result


def _copy_pages(mirror, pages, main: str, result: StreamResult, progress, stop, run_row: int) -> None:
    """Save the adapter's pages one by one (each with its bookmark), counting entities of the
    `main` table; an error ends the stream, classified into `result`: skipped (a missing
    scope), failed, or failed and stopping the source."""
    source, stream = result.source, result.stream
    try:
        for page in pages:
            if page.expected:
                progress.expect(page.expected)
            entities = page.entities(main)
            mirror.save_page(source, stream, page, run_row, counted=entities)
            result.rows += entities
            result.note(page.problems)
            progress.add(entities)
            if stop is not None and stop.is_set():
                result.outcome = Outcome.INTERRUPTED
                result.error = "stopped by signal; resumes from the bookmark"
                break
    except sqlite3.Error as err:  # the mirror, not the stream: full disk, damaged file
        raise storage.from_sqlite(err, mirror.path) from None
    except storage.StorageError:  # the token file, say: no stream of the source can go on
        raise
    except Interrupted:  # a wait or a request given up for a stop: not a failure
        result.outcome = Outcome.INTERRUPTED
        result.error = "stopped by signal; resumes from the bookmark"
    except ScopeError as err:
        result.outcome, result.error = Outcome.SKIPPED, redact(err)
    except (AuthError, BlockedError, UnreachableError) as err:
        result.outcome, result.error, result.stops_source = Outcome.FAILED, redact(err), True
        result.reauthorise = needs_reauthorisation(err)
    except SourceError as err:
        result.outcome, result.error = Outcome.FAILED, redact(err)
    except Exception as err:  # a bug or a shape we did not foresee: record it, keep going
        result.outcome = Outcome.FAILED
        result.error = redact(f"source '{source}' stream '{stream}': unexpected {type(err).__name__}: {err}")
        log.debug("stream %s/%s crashed", source, stream, exc_info=True)
    finally:
        pages.close()


def _record_failure(mirror, run_row: int, result: StreamResult, requests: int, err: Exception) -> None:
    """Record the run as failed if the mirror still takes a small write (it may not)."""
    try:
        mirror.finish_run(run_row, Outcome.FAILED.recorded, result.rows, requests, str(err))
    except sqlite3.Error:
        pass  # the run stays 'running'; the next run under the lock marks it interrupted


def _log(result: StreamResult) -> None:
    """The stream's one summary line: a warning when it did not end ok, naming the error."""
    error = result.error
    if error and result.stops_source:
        error += "; the source's other streams are not run"
    fields = {
        "event": "sync",
        "source": result.source,
        "stream": result.stream,
        "rows": result.rows,
        "requests": result.requests,
        "duration_s": round(result.seconds, 2),
        "status": result.status,
    }
    if error:
        fields["error"] = error
    log.log(
        logging.INFO if result.outcome is Outcome.OK else logging.WARNING,
        "sync source=%s stream=%s rows=%d requests=%d duration=%.1fs status=%s%s",
        result.source,
        result.stream,
        result.rows,
        result.requests,
        result.seconds,
        result.status,
        f" error={error}" if error else "",
        extra={"fields": fields},
    )


def failures(results: list[StreamResult]) -> str | None:
    """What went wrong, one clause per stream that failed or was skipped; the streams a
    source-stopping failure left unrun are counted, not given its error again."""
    said = [f"{r.stream}: {r.error}" for r in results if r.outcome not in (Outcome.OK, Outcome.NOT_RUN)]
    unrun = sum(r.outcome is Outcome.NOT_RUN for r in results)
    if unrun:
        said.append(f"{unrun} other stream{'s' if unrun > 1 else ''} not run")
    return "; ".join(said) or None


def _log_problems(result: StreamResult) -> None:
    """One line per stream whose values were not stored as sent: the count and the first few."""
    if not result.warnings:
        return
    first = redact("; ".join(describe(p) for p in result.sample[:SHOWN]))
    log.warning(
        "sync source=%s stream=%s: %d value(s) not stored as sent (NULL, or the item skipped); first: %s",
        result.source,
        result.stream,
        result.warnings,
        first,
        extra={
            "fields": {
                "event": "sync_values",
                "source": result.source,
                "stream": result.stream,
                "count": result.warnings,
                "sample": result.sample[:SHOWN],
            }
        },
    )


def describe(p: dict) -> str:
    """`item 12 OPPORTUNITY='1e400': not a finite number`, `... (item skipped)`."""
    shown = (
        f" {p['field']}={p.get('value')!r}"
        if p.get("field")
        else (f" {p['value']!r}" if p.get("value") is not None else "")
    )
    where = f"item {p['item']}{shown}: " if p.get("item") is not None else ""
    return f"{where}{p.get('why')}{' (item skipped)' if p.get('skipped') else ''}"


def _not_run(mirror, run_id, source, stream, run_started, outcome: Outcome, why: str) -> StreamResult:
    """Record a stream that did not start: NOT_RUN (a source-stopping failure) or INTERRUPTED."""
    run_row = mirror.start_run(run_id, source, stream, iso(run_started))
    mirror.finish_run(run_row, outcome.recorded, 0, 0, why)
    return StreamResult(source, stream, outcome, error=why)
