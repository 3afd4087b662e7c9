"""Sending jobs to the fleet: `run --once` (enqueue one job per source, wait for all) and the
scheduler (the `[schedule]` crons enqueue jobs; only the scheduler holding the leader lease
fires, so two schedulers never both do).
"""

from __future__ import annotations

import logging
import socket
import threading
import time

from adapters.hooks import Change
from adapters.redact import redact
from adapters.redis_limits import RedisLimits
from connector.config.loader import Config, SourceConfig
from connector.fleet.app import REFRESH_TASK, TASK, make_app, redis_of
from connector.fleet.board import Board
from connector.fleet.lease import Lease
from connector.run.jobs import INCREMENTAL, NIGHTLY

log = logging.getLogger("crm_connector.fleet")
POLL_S = 0.5  # how often a waiting `run --once` looks at the results
REDIS_GONE_S = 60  # how long `run --once` waits for a Redis that stopped answering
LEADER = "scheduler"


class Fleet:
    """The app and the broker's Redis for one config (checked reachable: RedisUnreachable)."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.redis = redis_of(cfg)
        self.app = make_app(cfg)
        self.board = Board(self.redis)
        # the portals' limits in this Redis, for the requests a process of the fleet makes
        # itself (serve's checks, `hooks install`): the workers' jobs and refreshes share them
        self.limits = RedisLimits(self.redis)

    def enqueue(self, source: SourceConfig, job: str, kpi: bool) -> str:
        """Queue one source's job on its queue; the task id."""
        res = self.app.send_task(TASK, args=[source.name, job, kpi], queue=source.queue)
        self.board.queued(source.name, res.id, job)
        log.info("queued: %s of %s on queue %s (task %s)", job, source.name, source.queue, res.id)
        return res.id

    def listening(self, timeout_s: float = 1.0) -> set[str]:
        """The queues some live worker consumes now (asked over the broker; empty if none answers)."""
        try:
            answers = self.app.control.inspect(timeout=timeout_s).active_queues() or {}
        except Exception as err:  # no answer is no worker: say so, do not fail the run
            log.debug("asking the workers for their queues failed: %s", err)
            return set()
        return {q["name"] for queues in answers.values() for q in queues}

    def enqueue_refresh(self, source: SourceConfig, changes: list[Change]) -> str:
        """Queue a webhook refresh of `changes` on the source's queue; the task id."""
        res = self.app.send_task(
            REFRESH_TASK,
            args=[source.name, [[c.table, c.id, c.deleted] for c in changes]],
            queue=source.queue,
        )
        log.info(
            "queued: refresh of %d change(s) of %s on queue %s (task %s)",
            len(changes),
            source.name,
            source.queue,
            res.id,
        )
        return res.id

    def await_task(self, task_id: str, timeout_s: float, stop: threading.Event) -> bool:
        """Wait until a worker has finished the task (done or failed): True; False when
        `timeout_s` passed or `stop` was set first. Looks often at first, then every POLL_S."""
        end, pause = time.monotonic() + timeout_s, 0.02
        res = self.app.AsyncResult(task_id)
        while not res.ready():
            left = end - time.monotonic()
            if left <= 0 or stop.wait(min(pause, left)):
                return False
            pause = min(pause * 1.5, POLL_S)
        return True

    def wait(self, task_ids: dict[str, str], stop: threading.Event) -> dict[str, dict]:
        """Each source's job summary once its job has finished (a job that fails inside its
        worker is a `failed` summary); stops waiting when `stop` is set. Redis gone for more
        than REDIS_GONE_S: every job not yet finished is reported failed, naming the URL."""
        left, out, gone_since = dict(task_ids), {}, None
        while left and not stop.is_set():
            try:
                for source, task_id in list(left.items()):
                    res = self.app.AsyncResult(task_id)
                    if res.ready():
                        out[source] = _summary(source, res)
                        del left[source]
                gone_since = None
            except Exception as err:  # redis-py's and kombu's connection errors alike
                gone_since = gone_since or time.monotonic()
                log.warning("waiting for the fleet's jobs: Redis does not answer (%s)", err)
                if time.monotonic() - gone_since > REDIS_GONE_S:
                    for source in left:
                        out[source] = _failed(
                            source,
                            f"lost the connection to Redis at "
                            f"{redact(self.cfg.engine.broker_url)} while the "
                            f"job ran; the next run resumes from the bookmarks",
                        )
                    return out
            if left:
                stop.wait(POLL_S)
        return out


def _summary(source: str, res) -> dict:
    if res.successful() and isinstance(res.result, dict):
        return res.result
    return _failed(source, f"the job's worker failed: {type(res.result).__name__}: {res.result}")


def _failed(source: str, error: str) -> dict:
    return {"source": source, "status": "failed", "rows": 0, "kpi": None, "exit_code": 1, "error": error}


class Enqueuer:
    """The scheduler's runner for the celery engine: `nightly` / `incremental` queue the job
    instead of running it, and only while this scheduler leads (holds the leader lease)."""

    def __init__(self, fleet: Fleet):
        self.fleet = fleet
        cfg = fleet.cfg
        self.lease = Lease(
            fleet.redis, LEADER, lease_s=cfg.engine.lease_s, worker=f"scheduler@{socket.gethostname()}"
        )

    def leads(self) -> bool:
        """Whether this scheduler leads now (taking the lease when no one holds it)."""
        return self.lease.held or self.lease.acquire()

    def nightly(self, source_name: str) -> str | None:
        return self._fire(source_name, NIGHTLY, self.fleet.cfg.schedule.kpi_after_sync)

    def incremental(self, source_name: str) -> str | None:
        return self._fire(source_name, INCREMENTAL, False)

    def _fire(self, source_name: str, job: str, kpi: bool) -> str | None:
        if not self.leads():
            log.info("not firing %s of %s: another scheduler leads", job, source_name)
            return None
        return self.fleet.enqueue(self.fleet.cfg.source(source_name), job, kpi)

    def close(self) -> None:
        self.lease.release()


def run_once(
    fleet: Fleet, sources: list[SourceConfig], incremental: bool, stop: threading.Event
) -> dict[str, dict]:
    """Queue each source's job, then wait for all of them; summaries by source."""
    job, kpi = (INCREMENTAL, False) if incremental else (NIGHTLY, fleet.cfg.schedule.kpi_after_sync)
    heard = fleet.listening()
    for queue in sorted({s.queue for s in sources} - heard):
        log.warning(
            "no worker answers on queue '%s' now: its jobs wait until one starts "
            "(`crm-connector worker --queues %s`)",
            queue,
            queue,
        )
    t0 = time.monotonic()
    ids = {s.name: fleet.enqueue(s, job, kpi) for s in sources}
    out = fleet.wait(ids, stop)
    log.info("fleet run: %d of %d job(s) finished in %.1fs", len(out), len(ids), time.monotonic() - t0)
    return out
