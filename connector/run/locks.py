"""One lock per source, shared by every process that works on it (daemon, `sync`, `kpi`).

`source_lock(cfg, "main", timeout_s)` takes an exclusive `flock` on `<mirror>.main.lock`
beside the mirror. The holder writes its pid, command and start time into the file, so the
one left waiting says at once who is in the way and how long it will wait. The kernel drops a
flock when its process dies, even on SIGKILL, so a crashed run never leaves a stale lock
behind, and `holder()` tells a live run from one a dead process left 'running'.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sys
import threading
import time
from contextlib import contextmanager
from typing import Iterator

from adapters.redact import redact
from adapters.times import iso
from connector.config.loader import SOURCE_FIELD
from connector.mirror import storage

log = logging.getLogger("crm_connector.locks")

POLL_S = 0.05  # flock cannot wait with a timeout, so a waiter retries this often
HOLDER_GRACE_S = 1.0  # a new holder writes its line just after taking the lock


class LockTimeout(Exception):
    """Another process held the source's lock for longer than we were willing to wait."""

    def __init__(self, source: str, timeout_s: float, holder: str):
        self.source, self.timeout_s, self.holder = source, timeout_s, holder
        super().__init__(
            f"source '{source}' is busy: waited {timeout_s:g}s for its lock, "
            f"held by {holder or 'an unknown process'}"
        )


class LockAbandoned(Exception):
    """We stopped waiting for a lock because a stop was requested."""


def lock_path(cfg, source_name: str) -> str:
    # beside the source's own mirror file when each source has one
    return f"{cfg.storage_path.replace(SOURCE_FIELD, source_name)}.{source_name}.lock"


def _command() -> str:
    """This process's command line, as shown to whoever waits for our lock (no secrets)."""
    args, out, skip = sys.argv[:], [], False
    for a in args:
        if skip:
            out.append("***")
        else:
            out.append(a if out else _program(a))
        skip = a in ("--code",)  # `auth --code ...` carries a one-time OAuth code
    return redact(" ".join(out))[:200]


def _program(argv0: str) -> str:
    name = os.path.basename(argv0)
    return "crm-connector" if name in ("__main__.py", "-m", "") else name


def _holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        return os.read(fd, 400).decode("utf-8", "replace").strip()
    except OSError:
        return ""


def holder(cfg, source_name: str) -> str | None:
    """Who holds the source's lock ("pid N (command) since T"), or None when nobody does.
    Creates nothing: `status` asks it without writing."""
    try:
        fd = os.open(lock_path(cfg, source_name), os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _holder(fd) or "an unknown process"
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


class _Waiting:
    """Says once, on stderr through the log, whom we wait for and for how long; as soon as the
    holder's line is readable (it writes it just after taking the lock) or a second has passed."""

    def __init__(self, source_name: str, timeout_s: float):
        self.source, self.timeout_s = source_name, timeout_s
        self.said, self.since = False, time.monotonic()

    def poll(self, fd: int) -> None:
        if self.said:
            return
        who = _holder(fd)
        if who or time.monotonic() - self.since >= HOLDER_GRACE_S:
            self.said = True
            log.warning(
                "source '%s' is busy: waiting up to %gs for %s to finish",
                self.source,
                self.timeout_s,
                who or "an unknown process",
                extra={
                    "fields": {
                        "event": "lock_wait",
                        "source": self.source,
                        "timeout_s": self.timeout_s,
                        "holder": who,
                    }
                },
            )


def _open(path: str) -> int:
    """The lock file, created private; a location we cannot write raises StorageError."""
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as err:
        raise (
            storage.location_problem(path, "lock file") or storage.from_os_error(err, path, "lock file")
        ) from None


@contextmanager
def source_lock(
    cfg, source_name: str, timeout_s: float | None = None, stop: threading.Event | None = None
) -> Iterator[str]:
    """Hold the source's lock for the `with` block; yields the lock file's path.

    Waits up to `timeout_s` (default: `[schedule] lock_timeout_s`; 0 means try once), then
    raises `LockTimeout`. With `stop` set while waiting, raises `LockAbandoned`.
    """
    if timeout_s is None:
        timeout_s = cfg.schedule.lock_timeout_s
    path = lock_path(cfg, source_name)
    fd = _open(path)
    try:
        deadline = time.monotonic() + timeout_s
        waiting = _Waiting(source_name, timeout_s)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                pass
            if stop is not None and stop.is_set():
                raise LockAbandoned(f"source '{source_name}': stopped while waiting for its lock")
            left = deadline - time.monotonic()
            if left <= 0:
                raise LockTimeout(source_name, timeout_s, _holder(fd))
            waiting.poll(fd)
            if stop is not None:
                stop.wait(min(POLL_S, left))
            else:
                time.sleep(min(POLL_S, left))
        since = iso()
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} ({_command()}) since {since}\n".encode(), 0)
        except OSError as err:  # a full disk: the lock is ours all the same
            log.warning("%s", storage.from_os_error(err, path, "lock file"))
        try:
            yield path
        finally:
            os.ftruncate(fd, 0)  # the next holder writes its own line; readers see no stale one
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
