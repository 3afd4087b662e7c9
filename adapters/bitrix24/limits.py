"""Bitrix24's two limits, kept on the client side so the server never has to refuse us.

- `LeakyBucket`: the portal's request-rate bucket (50 deep, drains 2/s; 250/5 on Enterprise).
  A batch is one request. We stay a little under the server's depth, since our clock and
  theirs never agree exactly.
- `OperatingBudget`: per method, the server's `time.operating` (seconds of execution in the
  last 10 minutes). Before a call we reserve its expected cost; when the reported total plus
  what is in flight would cross the budget we wait for `operating_reset_at`, the time the
  oldest minute drops out. That ceiling, not the request rate, bounds big list exports.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Callable


class LeakyBucket:
    """Block in `acquire()` until one more request fits in the bucket."""

    def __init__(
        self,
        size: int = 50,
        drain: float = 2.0,
        margin: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.capacity = max(1.0, size - margin)
        self.drain = drain
        self.clock, self.sleep = clock, sleep
        self.level = 0.0
        self._at = clock()
        self._lock = threading.Lock()

    def acquire(self) -> None:
        while True:
            with self._lock:
                now = self.clock()
                self.level = max(0.0, self.level - (now - self._at) * self.drain)
                self._at = now
                if self.level + 1 <= self.capacity:
                    self.level += 1
                    return
                wait = (self.level + 1 - self.capacity) / self.drain
            self.sleep(wait)

    def penalise(self) -> None:
        """The server said QUERY_LIMIT_EXCEEDED: our idea of its bucket was too low."""
        with self._lock:
            self.level = self.capacity


@dataclass
class _Method:
    operating: float = 0.0  # server's last reported total for the 10-minute window
    known: bool = False  # False: probe with one call before trusting `operating`
    reset_at: float | None = None  # unix time the oldest basket drops out
    inflight: float = 0.0  # reserved seconds not yet reported
    cost: float = 0.2  # expected seconds per call (moving average)
    blocked_until: float = 0.0
    probed_at: float = 0.0  # when the last probe was sent


def parse_reset(value) -> float | None:
    """`operating_reset_at` arrives as unix seconds, or as an ISO string on some methods."""
    if value in (None, ""):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        pass
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class OperatingBudget:
    """Per-method operating-time accounting, shared by every worker of one source.

    `take({method: wanted})` waits until at least one call of every method fits, then
    reserves and returns how many fit (at most `wanted`); `observe` feeds the server's
    reports and `release` drops the reservation once the response is in.
    """

    def __init__(
        self,
        budget_s: float = 480.0,
        safety_s: float | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.budget = budget_s
        self.safety = safety_s if safety_s is not None else max(5.0, 0.02 * budget_s)
        self.clock, self.sleep = clock, sleep
        self._methods: dict[str, _Method] = {}
        self._lock = threading.Lock()
        self.waited_s = 0.0

    def _m(self, method: str) -> _Method:
        return self._methods.setdefault(method, _Method())

    def take(self, methods: dict[str, int]) -> tuple[int, dict[str, float]]:
        """Wait for room; returns (calls per method that fit, reservation for `release`)."""
        while True:
            with self._lock:
                now = self.clock()
                wait, n = 0.0, max(methods.values())
                for method in methods:
                    m = self._m(method)
                    if m.blocked_until > now:
                        wait = max(wait, m.blocked_until - now)
                        continue
                    if not m.known:
                        # Unknown total (first call, or just past a reset): one call probes.
                        if m.inflight > 0:
                            wait = max(wait, 0.05)
                        n = min(n, 1)
                        continue
                    fit = int((self.budget - self.safety - m.operating - m.inflight) // m.cost)
                    if fit >= 1:
                        n = min(n, fit)
                    elif m.inflight > 0:
                        wait = max(wait, 0.05)  # in-flight calls will report a fresher total
                    elif m.reset_at and m.reset_at > now:
                        wait = max(wait, m.reset_at - now + 0.05)
                    elif now - m.probed_at < 1.0:
                        # The reset time is whole seconds: a probe that found no room waits a
                        # second before the next, instead of spending the budget on probes.
                        wait = max(wait, m.probed_at + 1.0 - now)
                    else:
                        m.known = False  # the oldest basket has dropped out: probe again
                        n = min(n, 1)
                if wait <= 0:
                    held = {}
                    for method in methods:
                        m = self._m(method)
                        if not m.known:
                            m.probed_at = now
                        m.inflight += n * m.cost
                        held[method] = n * m.cost
                    return n, held
                wait = min(wait, 30.0)
                self.waited_s += wait  # per caller: parallel workers add up
            self.sleep(wait)

    def release(self, held: dict[str, float]) -> None:
        with self._lock:
            for method, amount in held.items():
                m = self._m(method)
                m.inflight -= amount
                if m.inflight < 1e-9:  # float residue would read as "a call still in flight"
                    m.inflight = 0.0

    def observe(self, method: str, time_info: dict | None) -> None:
        """Feed one `time` object (a call's, or a batch sub-call's `result_time[key]`)."""
        with self._lock:
            m = self._m(method)
            m.known = True  # some portals never report counters: then there is nothing to track
            if not isinstance(time_info, dict):
                return
            op = time_info.get("operating")
            if op is not None:
                try:
                    m.operating = float(op)
                except (TypeError, ValueError):
                    pass
            reset = parse_reset(time_info.get("operating_reset_at"))
            if reset is not None:
                m.reset_at = reset
            dur = time_info.get("duration", time_info.get("processing"))
            try:
                m.cost = 0.7 * m.cost + 0.3 * max(float(dur), 0.01)
            except (TypeError, ValueError):
                pass

    def block(self, method: str, until: float | None) -> None:
        """The server refused `method` (OPERATION_TIME_LIMIT): no call to it before `until`."""
        with self._lock:
            m = self._m(method)
            now = self.clock()
            if not until or until <= now:
                until = m.reset_at if m.reset_at and m.reset_at > now else now + 60.0
            m.blocked_until = max(m.blocked_until, until)
            m.known = False

    def state(self, method: str) -> dict:
        with self._lock:
            m = self._m(method)
            return {
                "operating": m.operating,
                "known": m.known,
                "reset_at": m.reset_at,
                "inflight": m.inflight,
                "cost": m.cost,
                "blocked_until": m.blocked_until,
            }
