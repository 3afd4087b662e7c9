"""Where every worker and `status` see each source's fleet job: queued, running (on which
worker) or finished (with its summary), kept in Redis.

One hash per source, `crm:fleet:job:<source>`, rewritten at each step. A finished job's
summary is also kept under its task id (`crm:fleet:done:<task id>`, a week), so a copy of a job
that Redis handed out again (its first worker looked dead) sees that the job is already done
and does not run it twice.
"""

from __future__ import annotations

import json
import time

PREFIX = "crm:fleet"
KEEP_S = 7 * 86400


class Board:
    def __init__(self, redis):
        self.redis = redis

    def queued(self, source: str, task_id: str, job: str) -> None:
        self._set(source, state="queued", task_id=task_id, job=job, worker="")

    def running(self, source: str, task_id: str, job: str, worker: str) -> None:
        self._set(source, state="running", task_id=task_id, job=job, worker=worker)

    def finished(self, source: str, task_id: str, job: str, worker: str, summary: dict) -> None:
        self.redis.set(f"{PREFIX}:done:{task_id}", json.dumps(summary), ex=KEEP_S)
        self._set(
            source,
            state="finished",
            task_id=task_id,
            job=job,
            worker=worker,
            status=summary.get("status", ""),
            rows=summary.get("rows", 0),
            error=summary.get("error") or "",
        )

    def done(self, task_id: str) -> dict | None:
        """The summary of the job with this task id, if a worker finished it."""
        raw = self.redis.get(f"{PREFIX}:done:{task_id}")
        return None if raw is None else json.loads(raw)

    def get(self, source: str) -> dict:
        raw = self.redis.hgetall(f"{PREFIX}:job:{source}")
        return {k.decode(): v.decode() for k, v in raw.items()}

    def _set(self, source: str, **fields) -> None:
        key = f"{PREFIX}:job:{source}"
        with self.redis.pipeline() as pipe:
            pipe.delete(key)
            pipe.hset(key, mapping={**{k: str(v) for k, v in fields.items()}, "at": f"{time.time():.3f}"})
            pipe.expire(key, KEEP_S)
            pipe.execute()
