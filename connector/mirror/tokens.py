"""OAuth token pairs kept in a private JSON file beside the mirror.

Refresh tokens are single-use: a refreshed pair must be on disk before the new access token
is used, or a crash loses the account. `TokenStore.save` writes a temp file with mode 0600,
fsyncs it, renames it over the old one (atomic on POSIX) and fsyncs the directory, so the
rename itself survives a power cut: only then does `save` return and the new token get used.
`TokenStore.locked(source)` serialises refreshes across threads and processes (fcntl lock on
a side file).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading

from adapters import redact
from connector.mirror import storage


class TokenStore:
    def __init__(self, path: str):
        self.path = path
        self._thread_lock = threading.RLock()

    def load(self, source: str) -> dict | None:
        """The saved pair for a source: {access_token, refresh_token, expires_at, ...} or None."""
        data = self._read()
        pair = data.get(source)
        if pair:
            for k in ("access_token", "refresh_token"):
                redact.register(pair.get(k))
        return pair

    def save(self, source: str, pair: dict) -> None:
        for k in ("access_token", "refresh_token"):
            redact.register(pair.get(k))
        with self._thread_lock:
            data = self._read()
            data[source] = pair
            tmp = f"{self.path}.tmp.{os.getpid()}.{threading.get_ident()}"
            try:
                fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
                try:
                    with os.fdopen(fd, "w") as fh:
                        json.dump(data, fh, indent=1)
                        fh.flush()
                        os.fsync(fh.fileno())
                    os.replace(tmp, self.path)
                    _fsync_dir(os.path.dirname(os.path.abspath(self.path)))
                finally:
                    if os.path.exists(tmp):
                        os.unlink(tmp)
            except OSError as err:  # read-only, full: one line naming the file, not a traceback
                raise (
                    storage.location_problem(self.path, "token file")
                    or storage.from_os_error(err, self.path, "token file")
                ) from None

    @contextlib.contextmanager
    def locked(self, source: str):
        """Hold the refresh lock for a source: one refresh at a time, across processes."""
        with self._thread_lock:
            try:
                os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
                fd = os.open(f"{self.path}.lock", os.O_CREAT | os.O_RDWR, 0o600)
            except OSError as err:
                raise (
                    storage.location_problem(self.path, "token file")
                    or storage.from_os_error(err, self.path, "token file")
                ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)

    def _read(self) -> dict:
        try:
            with open(self.path) as fh:
                return json.load(fh)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as err:
            raise OSError(
                f"token file {self.path} is unreadable ({type(err).__name__}); "
                f"re-run `crm-connector auth SOURCE --code CODE`"
            ) from None


def _fsync_dir(path: str) -> None:
    """Make a rename in `path` durable (POSIX: the directory entry is the directory's data)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
