"""Change notifications leaving a sandbox: form bodies POSTed to URLs by a background thread.

The one delivery mechanism of both fake CRMs (amoCRM uses `Deliverer` as it is; Bitrix24's
queue server, `sandbox.bitrix24.delivery`, adds its log fields and names). A sandbox server
queues a delivery (`send(url, pairs)`) while it handles the change that caused it and returns
at once; one worker thread POSTs the queued deliveries in order, as
`application/x-www-form-urlencoded`, with urllib, through no proxy and following no redirect
(a 3xx is a failed delivery, as for the CRMs, which accept only 1xx-2xx answers). A delivery
that fails (connection refused, a timeout, a status outside 100-299) is logged and lost:
neither CRM's docs promise a resend (amoCRM's later retries, minutes apart, are not modelled;
Bitrix24 never resends).

Knobs for tests:
- `drop_next(n)`: the next `n` deliveries are lost on the way (logged as dropped, never sent);
- `repeat`: every delivery is sent twice; `repeat_next(n)`: each of the next `n` is (a CRM
  retrying one whose answer it did not get); the second copy is logged with `repeat`;
- `delay_s`: each delivery waits this long before it is sent;
- `forge(url, pairs)`: send `pairs` exactly as given (a delivery with another account's
  identity, say), untouched by the other knobs;
- `pause()` / `resume()`: hold every delivery until resumed (nothing is lost while paused);
- `sent`: the log, one dict per delivery in the order they ended: {url, pairs, body, status
  (None when no answer), ok, error, dropped, repeat, forged, at}, plus what `describe(pairs)`
  adds;
- `wait(timeout)`: block until nothing is queued or in flight (True), or the timeout (False).

    from sandbox.deliver import Deliverer

    d = Deliverer()
    d.send("http://127.0.0.1:9/hook", [("leads[update][0][id]", "1")])   # port 9: refused
    assert d.wait(5) and d.sent[-1]["ok"] is False
    d.close()
"""

from __future__ import annotations

import collections
import threading
import time
import urllib.error
import urllib.request
from urllib.parse import urlencode

__all__ = ["Deliverer", "FORM"]

FORM = "application/x-www-form-urlencoded"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # a 3xx answer is the delivery's end
        return None


class Deliverer:
    """Queues deliveries and sends them from one daemon thread (see the module docstring).
    `timeout_s`: how long an answer is waited for. `on_result(entry)`: called with each log
    entry once its delivery ended (a server counting failed deliveries, say). Subclasses name
    the thread (`thread_name`) and add their CRM's fields to the log (`describe`)."""

    thread_name = "sandbox-deliverer"

    def __init__(self, timeout_s: float = 2.0, on_result=None):
        self.timeout_s = timeout_s
        self.on_result = on_result
        self.repeat = False
        self.delay_s = 0.0
        self.sent: list[dict] = []
        self._drop = self._repeat_next = 0
        self._queue: collections.deque = collections.deque()
        self._cond = threading.Condition()
        self._paused = self._busy = self._closed = False
        self._thread: threading.Thread | None = None
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect)

    def describe(self, pairs: list[tuple[str, str]]) -> dict:
        """Fields a CRM adds to each log entry, read from the delivery's pairs."""
        return {}

    # ---- queueing (never blocks on the network) ------------------------------------------
    def send(self, url: str, pairs: list[tuple[str, str]]) -> None:
        """Queue one delivery of `pairs` to `url` (twice with `repeat` or while a
        `repeat_next` lasts; lost while a `drop_next` lasts, or once closed)."""
        with self._cond:
            if self._closed:
                self._log_locked({**self._entry(url, pairs), "error": "closed"})
                return
            if self._drop > 0:
                self._drop -= 1
                self._log_locked(self._entry(url, pairs, dropped=True))
                return
            twice = self.repeat or self._repeat_next > 0
            if not self.repeat and twice:
                self._repeat_next -= 1
            self._queue.append((url, list(pairs), False, False))
            if twice:
                self._queue.append((url, list(pairs), False, True))
            self._start_locked()

    def forge(self, url: str, pairs: list[tuple[str, str]]) -> None:
        """Queue `pairs` for `url` exactly as given (logged with `forged`), past the knobs."""
        with self._cond:
            if self._closed:
                self._log_locked({**self._entry(url, pairs, forged=True), "error": "closed"})
                return
            self._queue.append((url, list(pairs), True, False))
            self._start_locked()

    def drop_next(self, n: int = 1) -> None:
        """Lose the next `n` deliveries (logged with dropped=True, never sent)."""
        with self._cond:
            self._drop += n

    def repeat_next(self, n: int = 1) -> None:
        """Send each of the next `n` deliveries twice."""
        with self._cond:
            self._repeat_next += n

    def pause(self) -> None:
        """Hold the queue: deliveries wait (and are not lost) until `resume()`."""
        with self._cond:
            self._paused = True

    def resume(self) -> None:
        with self._cond:
            self._paused = False
            self._cond.notify_all()

    @property
    def pending(self) -> int:
        """Deliveries queued or in flight."""
        with self._cond:
            return len(self._queue) + self._busy

    def wait(self, timeout: float = 5.0) -> bool:
        """Until nothing is queued or in flight (True), or `timeout` seconds (False)."""
        end = time.monotonic() + timeout
        with self._cond:
            while self._queue or self._busy:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def open(self) -> None:
        """Send again after `close` (a restarted server)."""
        with self._cond:
            self._closed = False

    def close(self) -> None:
        """Stop the worker; deliveries still queued, and any queued until `open`, are lost
        (the latter logged with error "closed")."""
        with self._cond:
            self._closed = True
            self._queue.clear()
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(self.timeout_s + 1)

    # ---- the worker ----------------------------------------------------------------------
    def _start_locked(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
            self._thread.start()
        self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and (self._paused or not self._queue):
                    self._cond.wait()
                if self._closed:
                    return
                url, pairs, forged, repeat = self._queue.popleft()
                self._busy = True
                delay = self.delay_s
            entry = None
            try:
                if delay:
                    time.sleep(delay)
                entry = self._post(url, pairs, forged, repeat)
                if self.on_result is not None:
                    self.on_result(entry)
            finally:
                with self._cond:
                    if entry is not None:
                        self._log_locked(entry)
                    self._busy = False
                    self._cond.notify_all()

    def _post(self, url: str, pairs: list, forged: bool, repeat: bool) -> dict:
        entry = self._entry(url, pairs, forged=forged, repeat=repeat)
        request = urllib.request.Request(
            url, data=entry["body"].encode(), method="POST", headers={"Content-Type": FORM}
        )
        try:
            with self._opener.open(request, timeout=self.timeout_s) as response:
                response.read()
                entry["status"] = response.status
        except urllib.error.HTTPError as err:  # an answer outside 2xx (3xx included)
            entry["status"] = err.code
            err.close()
        except (urllib.error.URLError, OSError, ValueError) as err:  # ValueError: a bad URL
            reason = getattr(err, "reason", err)
            entry["error"] = (
                "timed out"
                if isinstance(reason, TimeoutError) or "timed out" in str(reason)
                else f"no answer: {reason}"[:120]
            )
        entry["ok"] = entry["status"] is not None and 100 <= entry["status"] < 300
        return entry

    def _entry(
        self, url: str, pairs: list, *, dropped: bool = False, forged: bool = False, repeat: bool = False
    ) -> dict:
        return {
            "url": url,
            "pairs": list(pairs),
            "body": urlencode(pairs),
            "status": None,
            "ok": False,
            "error": "dropped" if dropped else None,
            "dropped": dropped,
            "repeat": repeat,
            "forged": forged,
            "at": time.time(),
            **self.describe(pairs),
        }

    def _log_locked(self, entry: dict) -> None:
        self.sent.append(entry)
