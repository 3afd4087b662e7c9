"""The wire from adapters to the mirror: run streams, save pages, record every run.

Each stream's pages are saved one transaction at a time, with the bookmark, so an error or
a crash keeps everything already committed. A failing stream is recorded in `sync_runs` with
its message and the next stream runs; auth failures, blocks and an unreachable host stop the
source (its other streams would only fail the same way, slowly).

A run counts entities: rows of the stream's main table (the first it declares) written,
deleted or restored, so a deal's contact links do not count as deals. Each stream's end is
logged once (one line; a warning when it did not end ok); the streams a source-stopping
failure leaves unrun are recorded in `sync_runs`, not logged again.

A source's streams run side by side (`parallel_streams`, `side_by_side`), in threads sharing
the adapter and so its limiters; a stream starts once those it needs have ended
(`waits_for`), and every mirror call is made on the thread that opened the mirror
(`MirrorCalls`). With `parallel_streams = 1` they run one after another, in run order.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
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
from adapters.http import tallied
from adapters.redact import redact
from adapters.streams import Stream
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
    parallel: int | None = None,
) -> list[StreamResult]:
    """Run the adapter's streams (all, or `streams`) into the mirror; one result per stream,
    in run order. `parallel`: how many run at once (default: the source's `parallel_streams`,
    1 for an adapter without that option)."""
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
    declared = {s.name: s for s in adapter.streams()}
    run = _Run(mirror, adapter, full, progress, stop, run_id or uuid.uuid4().hex[:12], utc_now(), len(wanted))
    if parallel is None:
        parallel = getattr(getattr(adapter, "cfg", None), "parallel_streams", None) or 1
    try:
        if parallel > 1 and len(wanted) > 1:
            order = [declared[s] for s in wanted]
            return side_by_side(run, order, waits_for(order), parallel)
        return run.in_sequence(wanted, declared)
    finally:
        progress.stop()


@dataclass
class _Run:
    """One run of one source's streams: what each stream's run shares."""

    mirror: object  # the Mirror, or `MirrorCalls` handing its calls to the thread that owns it
    adapter: object
    full: bool
    progress: Progress
    stop: threading.Event | None
    run_id: str
    started: object  # the run start (UTC datetime): every stream reads up to it
    count: int  # streams in the run (progress says `k/count`)

    def in_sequence(self, wanted: list[str], declared: dict) -> list[StreamResult]:
        """One stream after another, in run order; a source-stopping failure or a stop leaves
        the rest unrun."""
        results: list[StreamResult] = []
        fatal: tuple[Outcome, str] | None = None  # why the streams still to come do not run
        for k, stream in enumerate(wanted, 1):
            if self.stop is not None and self.stop.is_set():
                fatal = fatal or (Outcome.INTERRUPTED, "interrupted before this stream ran")
            if fatal:
                results.append(self.not_run(stream, *fatal))
                continue
            result = self.stream(stream, declared[stream].tables[0], k)
            results.append(result)
            if result.stops_source:
                fatal = (Outcome.NOT_RUN, f"{NOT_RUN_PREFIX}{result.error}")
        return results

    def stream(self, stream: str, main: str, k: int, mirror=None, tally: bool = False) -> StreamResult:
        """One stream, with its progress bar; `mirror`: the one to write to (default the run's);
        `tally`: count its requests in its context (other streams send theirs meanwhile)."""
        return _run_stream(
            mirror or self.mirror,
            self.adapter,
            stream,
            main,
            self.full,
            self.started,
            self.run_id,
            self.progress,
            self.stop,
            tally,
            step=f"{k}/{self.count}",
        )

    def not_run(self, stream: str, outcome: Outcome, why: str) -> StreamResult:
        return _not_run(self.mirror, self.run_id, self.adapter.source, stream, self.started, outcome, why)


def waits_for(streams: list[Stream]) -> dict[str, set[str]]:
    """For each stream (in run order), the earlier ones it must not start before:

    - every snapshot stream (users, pipelines: small lists the others' rows are checked
      against, such as a deal's stage against its pipeline's stages);
    - every earlier stream, for a reconciliation (it marks deleted what no listing showed);
    - an earlier stream with another main table whose tables it shares: it writes into
      another stream's entities (amoCRM's events flag deleted deals and completed tasks, so
      they come after the deals and tasks themselves).

    Streams with the same main table (amoCRM's calls of leads, contacts, companies) write
    rows of their own and run side by side. The first stream runs alone: an unreachable
    host, refused credentials or a block show in its one request, and stop the source before
    every other stream tries (and logs) the same."""
    out: dict[str, set[str]] = {}
    for k, s in enumerate(streams):
        out[s.name] = {
            t.name
            for t in streams[:k]
            if (k and t is streams[0])
            or s.mode == "reconcile"
            or (t.mode == "snapshot" and s.mode != "snapshot")
            or (t.tables[0] != s.tables[0] and set(t.tables) & set(s.tables))
        }
    return out


def side_by_side(
    run: _Run, streams: list[Stream], after: dict[str, set[str]], parallel: int
) -> list[StreamResult]:
    """Run up to `parallel` streams at once, each in its own thread, each starting once the
    streams it waits for (`after`) have ended. Every mirror call runs on this thread, the one
    that opened the mirror (`MirrorCalls`): SQLite writes one transaction at a time anyway,
    and each stream still commits its pages and bookmark as it goes. A source-stopping
    failure or a stop leaves the streams not yet started unrun; a storage failure lets the
    running ones end, then is raised."""
    calls = MirrorCalls(run.mirror)
    place = {s.name: k for k, s in enumerate(streams, 1)}
    waiting = list(streams)
    running: set[str] = set()
    results: dict[str, StreamResult] = {}
    fatal: tuple[Outcome, str] | None = None
    broken: BaseException | None = None  # the first storage failure, raised at the end

    def one(s: Stream) -> None:
        try:
            result = run.stream(s.name, s.tables[0], place[s.name], mirror=calls, tally=True)
        except BaseException as err:  # handed to the loop below, raised there
            calls.ended(s.name, err)
        else:
            calls.ended(s.name, result)

    pool = ThreadPoolExecutor(parallel, thread_name_prefix=f"sync-{run.adapter.source}")
    try:
        while waiting or running:
            if run.stop is not None and run.stop.is_set():
                fatal = fatal or (Outcome.INTERRUPTED, "interrupted before this stream ran")
            for s in list(waiting):
                if fatal or broken:
                    if broken is None:
                        results[s.name] = run.not_run(s.name, *fatal)
                    waiting.remove(s)
                elif len(running) < parallel and not after[s.name] - results.keys():
                    waiting.remove(s)
                    running.add(s.name)
                    pool.submit(one, s)
            if not running:
                continue
            name, outcome = calls.serve()  # mirror calls until a stream ends
            running.discard(name)
            if isinstance(outcome, BaseException):
                if not isinstance(outcome, storage.StorageError):
                    raise outcome
                broken = broken or outcome
                continue
            results[name] = outcome
            if outcome.stops_source and fatal is None:
                fatal = (Outcome.NOT_RUN, f"{NOT_RUN_PREFIX}{outcome.error}")
    finally:
        calls.close()
        pool.shutdown(wait=True)
    if broken is not None:
        raise broken
    return [results[s.name] for s in streams]


class MirrorCalls:
    """The mirror as stream threads use it: each call is handed to the thread that opened the
    mirror (`serve`), and the caller waits for its answer or its exception. A SQLite
    connection belongs to its thread, and one writer at a time is all SQLite allows."""

    def __init__(self, mirror):
        self.mirror, self.path = mirror, mirror.path
        self._queue: queue.Queue = queue.Queue()
        self._closed = False

    def __getattr__(self, name: str):
        method = getattr(self.mirror, name)

        def call(*args, **kwargs):
            if self._closed:
                raise Interrupted("the sync ended")
            answer: Future = Future()
            self._queue.put((method, args, kwargs, answer))
            return answer.result()

        return call

    def ended(self, stream: str, outcome) -> None:
        """A stream's thread ends: its result, or what it raised."""
        self._queue.put((stream, outcome))

    def serve(self) -> tuple[str, object]:
        """Run the calls asked for, in order, until a stream ends; (its name, its outcome)."""
        while True:
            item = self._queue.get()
            if len(item) == 2:
                return item
            method, args, kwargs, answer = item
            try:
                answer.set_result(method(*args, **kwargs))
            except BaseException as err:
                answer.set_exception(err)

    def close(self) -> None:
        """No more calls are served: those waiting, and any later, raise `Interrupted`."""
        self._closed = True
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if len(item) == 4:
                item[3].set_exception(Interrupted("the sync ended"))


def _run_stream(
    mirror,
    adapter,
    stream,
    main,
    full,
    run_started,
    run_id,
    progress,
    stop,
    tally: bool = False,
    step: str = "",
) -> StreamResult:
    """One stream, recorded in `sync_runs` from start to finish; `main`: the table it counts.
    `tally`: count the stream's own requests (`adapters.http.tallied`) rather than the
    adapter's, which other streams running beside it add to; the progress line shows them."""
    source = adapter.source
    bookmark = None if full else mirror.get_bookmark(source, stream)
    run_row = mirror.start_run(run_id, source, stream, iso(run_started))
    result = StreamResult(source, stream, Outcome.OK)
    with tallied() as own:
        requests_before, t0 = getattr(adapter, "requests", 0), time.monotonic()

        def sent() -> int:
            return own.count if tally else getattr(adapter, "requests", 0) - requests_before

        progress.start(f"{source}/{stream}", step, main, requests=sent)

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
            _record_failure(mirror, run_row, result, sent(), err)
            raise
        result.requests = sent()
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
