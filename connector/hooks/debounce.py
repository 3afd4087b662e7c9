"""Changes of one record that arrive close together become one read.

Each source collects the records it is told about; `window_s` after the first of a batch, the
batch goes to `flush(source, changes)` (one read per record however many events named it). A
source's next batch waits for its previous flush to end, so one portal's refreshes never run
side by side; different sources flush in parallel, on `workers` threads.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from adapters.hooks import Change

log = logging.getLogger("crm_connector.hooks")


class Debouncer:
    def __init__(
        self,
        flush: Callable[[str, list[Change]], object],
        window_s: float,
        workers: int = 4,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.flush, self.window_s, self.clock = flush, window_s, clock
        self._pending: dict[str, dict[tuple[str, int], Change]] = {}
        self._since: dict[str, float] = {}
        self._busy: set[str] = set()
        self._cond = threading.Condition()
        self._stopped = False
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="refresh")
        self._thread = threading.Thread(target=self._loop, name="debounce", daemon=True)
        self._thread.start()

    def add(self, source: str, changes: list[Change]) -> None:
        """Take note of changed records (a record deleted in any event of the batch stays so)."""
        with self._cond:
            batch = self._pending.setdefault(source, {})
            for ch in changes:
                key = (ch.table, ch.id)
                old = batch.get(key)
                batch[key] = ch if old is None or ch.deleted else old
            self._since.setdefault(source, self.clock())
            self._cond.notify()

    def pending(self) -> int:
        with self._cond:
            return sum(len(b) for b in self._pending.values()) + len(self._busy)

    def _loop(self) -> None:
        with self._cond:
            while True:
                now, wait = self.clock(), None
                for source, since in list(self._since.items()):
                    if source in self._busy:
                        continue
                    due = since + self.window_s
                    if due <= now or self._stopped:
                        batch = list(self._pending.pop(source).values())
                        del self._since[source]
                        self._busy.add(source)
                        self._pool.submit(self._run, source, batch)
                    else:
                        wait = due - now if wait is None else min(wait, due - now)
                if self._stopped and not self._since:
                    return
                self._cond.wait(wait)

    def _run(self, source: str, batch: list[Change]) -> None:
        try:
            self.flush(source, batch)
        except Exception:  # one source's failed refresh must not stop the others'
            log.exception("refresh of source '%s' failed (%d change(s))", source, len(batch))
        finally:
            with self._cond:
                self._busy.discard(source)
                self._cond.notify()

    def close(self, wait: bool = True) -> None:
        """Take no more waiting: flush every batch now (a source's after its running one), and
        with `wait`, let the refreshes end; no change already taken note of is lost."""
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join()
        self._pool.shutdown(wait=wait)
