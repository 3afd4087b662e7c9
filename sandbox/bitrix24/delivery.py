"""The Bitrix24 sandbox's queue server: it POSTs event deliveries from a thread of its own.

A real portal does not call handlers while the change happens: it queues the event on a queue
server, which calls the handler a little later (seconds, the docs say; slow handlers get a
lower priority). So a change only enqueues here (`Deliverer.send`), and the request that
caused it never waits. A delivery that fails (no answer, refused connection, an error status)
is logged and lost: the docs say Bitrix24 does not resend an event if the handler did not
respond or returned an error status; no second chances.

Knobs for tests: `drop_next(n)` loses the next n deliveries without sending them (as a queue
server hiccup would), `repeat_next(n)` sends each of the next n twice, `delay_s` holds every
delivery that long before it is sent, `pause()` / `resume()` hold the queue (nothing is lost
while paused), `forge(url, pairs)` sends a delivery as a third party would. `sent` logs every
delivery: {url, event, id, status (None: no reply), error, dropped, repeat, forged, at, pairs}.
`wait_idle(timeout)` waits until the queue is empty and nothing is in flight.

Standard library only (the sandbox imports nothing else).
"""

from __future__ import annotations

import collections
import threading
import time
import urllib.error
import urllib.request
from urllib.parse import urlencode

__all__ = ["Deliverer"]

TIMEOUT_S = 5.0  # a handler slower than this is treated as one that did not answer


class Deliverer:
    """One background thread POSTing form-encoded deliveries in order."""

    def __init__(self, timeout_s: float = TIMEOUT_S):
        self.timeout_s = timeout_s
        self.delay_s = 0.0
        self.sent: list[dict] = []
        self._queue: collections.deque = collections.deque()
        self._cond = threading.Condition()
        self._paused = False
        self._busy = False
        self._drop = 0
        self._repeat = 0
        self._stopped = False
        self._thread: threading.Thread | None = None

    # ---- knobs ----------------------------------------------------------------------------
    def drop_next(self, n: int = 1) -> None:
        """Lose the next `n` deliveries (logged with dropped=True, never sent)."""
        with self._cond:
            self._drop += n

    def repeat_next(self, n: int = 1) -> None:
        """Send each of the next `n` deliveries twice."""
        with self._cond:
            self._repeat += n

    def pause(self) -> None:
        """Hold the queue: deliveries wait (and are not lost) until `resume()`."""
        with self._cond:
            self._paused = True

    def resume(self) -> None:
        with self._cond:
            self._paused = False
            self._cond.notify_all()

    def forge(self, url: str, pairs: list[tuple[str, str]]) -> None:
        """Queue a delivery the portal never sent (a third party's)."""
        self.send(url, pairs, forged=True)

    # ---- queueing -------------------------------------------------------------------------
    def send(self, url: str, pairs: list[tuple[str, str]], forged: bool = False) -> None:
        """Queue one delivery; returns at once."""
        with self._cond:
            if self._stopped:
                return
            self._queue.append((url, list(pairs), forged))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="b24-event-queue", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until every queued delivery has been sent (or dropped); False on timeout."""
        end = time.monotonic() + timeout
        with self._cond:
            while self._queue or self._busy:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._queue.clear()
            self._cond.notify_all()

    # ---- the thread -----------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped and (self._paused or not self._queue):
                    self._cond.wait()
                if self._stopped:
                    return
                url, pairs, forged = self._queue.popleft()
                self._busy = True
                drop = self._drop > 0
                if drop:
                    self._drop -= 1
                repeat = not drop and self._repeat > 0
                if repeat:
                    self._repeat -= 1
            try:
                if drop:
                    self._log(url, pairs, forged, None, "dropped by the queue server", dropped=True)
                else:
                    if self.delay_s:
                        time.sleep(self.delay_s)
                    for copy in range(2 if repeat else 1):
                        self._post(url, pairs, forged, repeat=copy > 0)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _post(self, url: str, pairs: list[tuple[str, str]], forged: bool, repeat: bool) -> None:
        body = urlencode(pairs).encode()
        req = urllib.request.Request(
            url, data=body, method="POST", headers={"Content-Type": "application/x-www-form-urlencoded"}
        )
        status, error = None, None
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as r:
                status = r.status
                r.read()
        except urllib.error.HTTPError as e:  # an error status: lost, never resent
            status, error = e.code, f"HTTP {e.code}"
        except (OSError, ValueError) as e:  # refused, timed out, bad URL: lost too
            error = type(e).__name__
        self._log(url, pairs, forged, status, error, repeat=repeat)

    def _log(self, url, pairs, forged, status, error, dropped=False, repeat=False) -> None:
        d = dict(pairs)
        oid = d.get("data[FIELDS][ID]") or d.get("data[FIELDS_AFTER][ID]") or d.get("data[FIELDS_BEFORE][ID]")
        with self._cond:
            self.sent.append(
                {
                    "url": url,
                    "event": d.get("event"),
                    "id": oid,
                    "status": status,
                    "error": error,
                    "dropped": dropped,
                    "repeat": repeat,
                    "forged": forged,
                    "at": time.time(),
                    "pairs": list(pairs),
                }
            )
