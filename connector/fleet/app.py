"""The Celery app of the fleet engine, built from the config's `[engine]`.

Settings, and why:
- `task_acks_late` + `worker_prefetch_multiplier = 1` + `task_reject_on_worker_lost`: a job
  is acknowledged only once it has run, and a worker holds one waiting job per thread, so a
  worker killed mid-job leaves its jobs in Redis.
- the broker's `visibility_timeout` (`[engine] visibility_timeout_s`): how soon Redis gives a
  dead worker's jobs to another one; the sweep that does it runs every quarter of that. One
  worker sweeps at a time, under a mutex key it sets with an expiry (`unacked_mutex_expire`):
  kombu's 5 minutes meant a worker killed inside its sweep (the OOM killer does not wait)
  held every dead job back 5 minutes more; a quarter of the timeout (at least 5 s) is far
  longer than a sweep takes. A job
  that outlives the timeout on a live worker is handed out again too: its copy finds the
  portal's lease held and waits, then sees the job done (`board.Board.done`) and returns.
- events on (`worker_send_task_events`, `task_send_sent_event`), so Flower shows the fleet.
- JSON only: jobs carry a source's name, never its secrets.
- once a worker is ready, what it has built so far (Celery, kombu, the connector's modules)
  leaves the garbage collector's view (`gc.freeze`): a full collection over that heap stopped
  every job thread of the process for 50-100 ms, and a thread stopped between its portal's
  rate-limit grant and its request sends that request late, into the same second as the next
  ones (measured: amoCRM's 429 in tests/e2e/test_fleet_e2e.py); after the freeze a full
  collection walks only what the jobs allocate.
"""

from __future__ import annotations

import gc
import os

from connector.config.engine import DEFAULT_QUEUE
from connector.config.loader import Config
from connector.fleet.lease import redis_client

TASK = "crm_connector.source_job"
REFRESH_TASK = "crm_connector.refresh"


class RedisUnreachable(Exception):
    """The broker's Redis does not answer; the message names the URL (password masked)."""

    exit_code = 2


def make_app(cfg: Config):
    """The Celery app for `cfg` (celery is imported only now: the `fleet` extra)."""
    from celery import Celery

    from connector.fleet import tasks

    eng = cfg.engine
    app = Celery("crm_connector", broker=eng.broker_url, backend=eng.result_backend or eng.broker_url)
    transport = {
        "visibility_timeout": eng.visibility_timeout_s,
        "unacked_restore_interval": max(1, eng.visibility_timeout_s // 4),
        "unacked_restore_throttle": 1,
        "unacked_mutex_expire": max(5, eng.visibility_timeout_s // 4),
    }
    app.conf.update(
        task_acks_late=True,
        worker_prefetch_multiplier=1,
        task_reject_on_worker_lost=True,
        broker_transport_options=transport,
        result_backend_transport_options=transport,
        task_default_queue=DEFAULT_QUEUE,
        task_create_missing_queues=True,
        worker_send_task_events=True,
        task_send_sent_event=True,
        task_track_started=True,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_expires=7 * 86400,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        crm_config_path=os.path.abspath(cfg.path),
    )
    app.task(name=TASK, bind=True, max_retries=None)(tasks.source_job)
    app.task(name=REFRESH_TASK, bind=True)(tasks.refresh_job)
    from celery.signals import worker_ready

    worker_ready.connect(freeze_heap, weak=False, dispatch_uid="crm_connector.freeze_heap")
    return app


def freeze_heap(**_) -> None:
    """Take everything allocated until now out of the garbage collector's full collections."""
    gc.collect()
    gc.freeze()


def redis_of(cfg: Config):
    """A Redis client on the broker's Redis, after one PING; RedisUnreachable if it fails."""
    import redis

    client = redis_client(cfg.engine.broker_url)
    try:
        client.ping()
    except redis.RedisError as err:
        raise RedisUnreachable(
            f"{cfg.path}: [engine] broker_url: cannot reach Redis at {_shown(cfg.engine.broker_url)} "
            f"({_reason(err)}); start it or fix the URL"
        ) from None
    return client


def _shown(url: str) -> str:
    from connector.config.engine import shown_url

    return shown_url(url)


def _reason(err: Exception) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text[:160]
