"""A lease lock in Redis: one portal's job never runs twice at once, on any host.

    lease = Lease(redis, "sync:main", worker="celery@host-3")
    with lease:                 # LeaseBusy (naming the holder) when another holds it
        run_the_job(stop_if=lease.lost.is_set)

The lease is one key, `crm:lease:<name>`, set only if absent (`SET NX PX`) with a short
expiry (`lease_s`, 30 s). While the job runs a background thread renews it every `renew_s`
(a third of the lease), so a live holder keeps it for as long as it needs, and a holder that
dies (SIGKILL, a lost host, a frozen process) stops renewing and loses it when its lease runs
out: no stale lock outlives its holder by more than one lease. The key's value is the holder's
identity (host, pid, worker, start time) plus a random token; renewal and release are Lua
scripts that act only when the value is still exactly ours, so a holder that lost its lease
can neither extend nor delete the next holder's. `Lease.holder(redis, name)` reads who holds
it, for `status`.

If renewal finds the lease gone (expired while the process was stalled, or Redis lost it),
`lease.lost` is set: the job should stop at its next checkpoint (`lease.check()` raises
LeaseLost), since another worker may already be running it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time

log = logging.getLogger("crm_connector.fleet.lease")

PREFIX = "crm:lease"
LEASE_S = 30.0
POLL_S = 1.0  # a blocking acquire looks again at most this often (or when the lease ends)

RENEW_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class LeaseBusy(Exception):
    """Another worker holds the lease."""

    def __init__(self, name: str, holder: dict | None):
        self.name, self.holder = name, holder
        super().__init__(f"'{name}' is already running: held by {describe(holder)}")


class LeaseLost(Exception):
    """Our lease ended before the job did: another worker may be running it now."""


def describe(holder: dict | None) -> str:
    """'celery@h3 (pid 4242 on h3, since 2026-01-02T10:00:00Z, lease ends in 21 s)'."""
    if not holder:
        return "nobody"
    since = holder.get("since")
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(since)) if since is not None else "?"
    ttl = holder.get("ttl_s")
    return (
        f"{holder.get('worker') or '?'} (pid {holder.get('pid', '?')} on "
        f"{holder.get('host', '?')}, since {when}"
        f"{f', lease ends in {ttl:.0f} s' if ttl is not None else ''})"
    )


def redis_client(url: str):
    """A redis-py client for `url` (imported only now: redis is the `fleet` extra)."""
    import redis

    return redis.Redis.from_url(url)


class Lease:
    """The lease on `name` for this holder; see the module's doc."""

    def __init__(
        self,
        redis,
        name: str,
        *,
        lease_s: float = LEASE_S,
        renew_s: float | None = None,
        worker: str | None = None,
        prefix: str = PREFIX,
    ):
        self.redis, self.name = redis, name
        self.key = f"{prefix}:{name}"
        self.lease_s = float(lease_s)
        self.renew_s = float(renew_s) if renew_s is not None else self.lease_s / 3
        self.worker = worker
        self.lost = threading.Event()
        self.renewals = 0
        self._value: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._renew = redis.register_script(RENEW_LUA)
        self._release = redis.register_script(RELEASE_LUA)

    @property
    def held(self) -> bool:
        """We took it and have not released or lost it (as far as this process knows)."""
        return self._value is not None and not self.lost.is_set()

    def _identity(self) -> str:
        return json.dumps(
            {
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "worker": self.worker or threading.current_thread().name,
                "since": time.time(),
                "token": os.urandom(16).hex(),
            },
            separators=(",", ":"),
        )

    def acquire(self, blocking: bool = False, timeout: float | None = None) -> bool:
        """Take the lease; True when taken. Blocking, wait (at most `timeout` s) for the
        holder to release it or lose it, sleeping until its lease would end, never spinning."""
        if self._value is not None:
            raise RuntimeError(f"lease '{self.name}' is already held by this object")
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            value = self._identity()
            if self.redis.set(self.key, value, nx=True, px=_ms(self.lease_s)):
                self._value = value
                self.lost.clear()
                self._start_renewing()
                return True
            if not blocking:
                return False
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            pttl = self.redis.pttl(self.key)
            pause = POLL_S if pttl is None or pttl < 0 else min(POLL_S, pttl / 1000 + 0.001)
            time.sleep(max(0.001, pause if left is None else min(pause, left)))

    def renew(self) -> bool:
        """Push the lease's end `lease_s` from now; False (and `lost` set) if it is not ours."""
        if self._value is None:
            return False
        if self._renew(keys=[self.key], args=[self._value, _ms(self.lease_s)]):
            self.renewals += 1
            return True
        self.lost.set()
        return False

    def release(self) -> bool:
        """Stop renewing and let go; True when it was still ours. Never touches another
        holder's lease (the script compares the whole value, token included)."""
        self._stop_renewing()
        value, self._value = self._value, None
        if value is None:
            return False
        return bool(self._release(keys=[self.key], args=[value]))

    def check(self) -> None:
        """Raise LeaseLost when the lease was lost: a job's checkpoint between steps."""
        if self.lost.is_set():
            raise LeaseLost(f"lease '{self.name}' was lost (not renewed within {self.lease_s:g} s)")

    def __enter__(self) -> "Lease":
        if not self.acquire():
            raise LeaseBusy(self.name, self.holder_of(self.redis, self.name, key=self.key))
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    # ---- renewal ----------------------------------------------------------------------------

    def _start_renewing(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._renewing, args=(self._stop,), name=f"lease-{self.name}", daemon=True
        )
        self._thread.start()

    def _stop_renewing(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self._thread = None

    def _renewing(self, stop: threading.Event) -> None:
        last_ok = time.monotonic()
        while not stop.wait(self.renew_s):
            try:
                if not self.renew():
                    log.warning("lease '%s' was lost: another worker may run the job", self.name)
                    return
                last_ok = time.monotonic()
            except Exception as err:  # Redis unreachable for a moment: try again next round
                if time.monotonic() - last_ok >= self.lease_s:
                    log.warning(
                        "lease '%s' could not be renewed for %g s (%s): lost", self.name, self.lease_s, err
                    )
                    self.lost.set()
                    return

    # ---- who holds it -----------------------------------------------------------------------

    @staticmethod
    def holder_of(redis, name: str, *, prefix: str = PREFIX, key: str | None = None) -> dict | None:
        """Who holds the lease on `name`: {host, pid, worker, since, ttl_s}, or None."""
        key = key or f"{prefix}:{name}"
        pipe = redis.pipeline()
        pipe.get(key)
        pipe.pttl(key)
        value, pttl = pipe.execute()
        if value is None:
            return None
        try:
            who = json.loads(value)
        except ValueError:
            who = {"worker": str(value)[:80]}
        who.pop("token", None)
        who["ttl_s"] = pttl / 1000 if pttl is not None and pttl >= 0 else None
        return who

    def holder(self) -> dict | None:
        return self.holder_of(self.redis, self.name, key=self.key)


def _ms(seconds: float) -> int:
    return max(1, int(round(seconds * 1000)))
