"""The fleet's one task: one source's job, run by `connector.run.jobs.run_job` as the local
engine runs it (sync, then KPIs and write-back, then team measures), with three additions:

- the portal's lease in Redis (`fleet.lease`), so its job never runs twice at once anywhere;
  a lost lease is the job's stop flag: it stops at its next page, as after a signal;
- the portal's API limits in Redis (`adapters.redis_limits`), shared by every worker;
- the job's state on the board (`fleet.board`) for `status`, and its summary as the result.

A copy of a job already finished (Redis handed it out again) returns that job's summary
without running; a copy of a job still running elsewhere waits for it; a job whose portal is
busy with another job waits for the lease, up to `[schedule] lock_timeout_s`, then reports
`busy` as the local engine does.
"""

from __future__ import annotations

import logging
import socket

from adapters.hooks import Change
from adapters.redis_limits import RedisLimits
from connector.config import loader as config_mod
from connector.fleet.board import Board
from connector.fleet.lease import Lease, describe, redis_client
from connector.run import runtime
from connector.run.jobs import JobResult, Steps, exit_code, run_job
from connector.run.refresh import refresh_source

log = logging.getLogger("crm_connector.fleet")
RETRY_S = 2.0  # a busy portal's job looks for its lease again after this long


def source_job(task, source_name: str, job: str, kpi: bool) -> dict:
    """Run one source's job on this worker; its summary (`summary`) is the task's result."""
    cfg = config_mod.load(task.app.conf.crm_config_path)
    source = cfg.source(source_name)
    redis = redis_client(cfg.engine.broker_url)
    board, task_id = Board(redis), task.request.id
    done = board.done(task_id)
    if done is not None:
        log.info(
            "job %s of %s already finished on %s; not running it again", job, source_name, done.get("worker")
        )
        return done
    worker = task.request.hostname or socket.gethostname()
    lease = Lease(redis, f"source:{source_name}", lease_s=cfg.engine.lease_s, worker=worker)
    if not lease.acquire():
        if board.get(source_name).get("task_id") == task_id:
            # Redis handed out a copy of this very job while its first worker still runs it
            # (the job outlived the visibility timeout): wait for that run, never report busy
            raise task.retry(countdown=RETRY_S)
        waited = task.request.retries * RETRY_S
        if waited < cfg.schedule.lock_timeout_s:
            raise task.retry(countdown=RETRY_S)
        holder = describe(Lease.holder_of(redis, f"source:{source_name}"))
        out = JobResult(
            source_name,
            job,
            status="busy",
            error=f"source '{source_name}' is busy: waited {waited:g}s, held by {holder}",
        )
        return _finish(board, task_id, worker, out)
    try:
        board.running(source_name, task_id, job, worker)
        limits = RedisLimits(redis)
        steps = Steps(adapter=lambda c, s: runtime.make_adapter(c, s, limits=limits))
        out = run_job(cfg, source, job=job, kpi=kpi, stop=lease.lost, steps=steps)
        return _finish(board, task_id, worker, out)
    finally:
        lease.release()


def refresh_job(task, source_name: str, changes: list) -> str:
    """A webhook refresh of `changes` ([table, id, deleted] triples) with the portal's refresh
    share of its limits in Redis; no lease: it may run beside the portal's nightly job."""
    cfg = config_mod.load(task.app.conf.crm_config_path)
    limits = RedisLimits(redis_client(cfg.engine.broker_url))
    res = refresh_source(
        cfg, cfg.source(source_name), [Change(t, int(i), bool(d)) for t, i, d in changes], limits=limits
    )
    return res.line()


def summary(out: JobResult, worker: str) -> dict:
    """What `run --once` prints for a job, as JSON."""
    return {
        "source": out.source,
        "job": out.job,
        "status": out.status,
        "rows": out.rows,
        "requests": out.requests,
        "seconds": round(out.seconds, 2),
        "error": out.reason,
        "kpi": out.kpi.line() if out.kpi is not None else None,
        "exit_code": exit_code(out.exception) if out.status in ("failed", "busy") else 0,
        "worker": worker,
    }


def _finish(board: Board, task_id: str, worker: str, out: JobResult) -> dict:
    doc = summary(out, worker)
    board.finished(out.source, task_id, out.job, worker, doc)
    level = logging.INFO if out.status == "ok" else logging.WARNING
    log.log(
        level,
        "job=%s source=%s status=%s rows=%d requests=%d duration=%.1fs%s",
        out.job,
        out.source,
        out.status,
        out.rows,
        out.requests,
        out.seconds,
        f" error={doc['error']}" if doc["error"] else "",
    )
    return doc
