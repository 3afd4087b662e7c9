"""How many requests one Bitrix24 source keeps in flight: AIMD on the portal's own signals.

The leaky bucket bounds the request *rate* and the operating budget each method's server
time; neither says how many requests may run at once. A small portal is read fastest with
the whole bucket's burst in flight (each request a short batch), a big one at the pace its
budget refills. `Throttle` finds that number as it goes:

- it starts at the ceiling: `max_workers`, never above the bucket's burst;
- a 503 QUERY_LIMIT_EXCEEDED, an OPERATION_TIME_LIMIT, or a sub-call far slower than the
  method's healthy pace (the portal queues our work) halves it, once per round: answers to
  requests sent before the cut bring no second cut (as TCP does);
- every healthy answer adds 1/limit, so a round of healthy answers adds one;
- per method, the requests in flight never plan more server time than the budget has left
  in its window (`left / seconds one request used`), so a method near its budget gets few
  requests while another method with room stays busy (deals and their contact links
  each have their own budget).
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field
from typing import Iterable, Iterator

from adapters.errors import Interrupted

STOP_POLL_S = 0.25


@dataclass
class Answer:
    """What one request's answer said about one method."""

    method: str
    seconds: float | None = None  # server time the request's sub-calls of `method` took
    calls: int = 1  # how many sub-calls of `method` the request held
    left: float | None = None  # seconds left in the method's budget (None: not reported)
    kind: str = ""  # what pace to compare with (method + select); default method


@dataclass
class _Ticket:
    epoch: int
    methods: tuple[str, ...] = field(default_factory=tuple)


class Throttle:
    """Requests in flight for one source; `with throttle.slot(methods): send()`."""

    def __init__(self, ceiling: int, slow_factor: float = 3.0, slow_margin_s: float = 0.25):
        self.ceiling = max(1, int(ceiling))
        self.limit = float(self.ceiling)
        self.slow_factor, self.slow_margin_s = slow_factor, slow_margin_s
        self.inflight = 0
        self.busy: dict[str, int] = {}  # requests in flight per method
        self.caps: dict[str, int] = {}  # per method: what its budget still holds
        self.pace: dict[str, float] = {}  # per kind of sub-call: healthy seconds per sub-call
        self.epoch = 0  # bumped by every cut
        self.cuts = 0
        self.peak = 0  # most requests ever in flight (benchmarks print it)
        self.lowest = self.limit
        self._cond = threading.Condition()
        self._local = threading.local()
        self.stop: threading.Event | None = None  # a stop asked for: waiting for a slot ends

    # ---- slots ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def slot(self, methods: Iterable[str] = ()) -> Iterator[None]:
        """Wait until one more request of `methods` may start; hold its place while it runs.
        Re-entrant: a request sent while holding a slot (a retry, a refresh) takes no second."""
        if getattr(self._local, "ticket", None) is not None:
            yield
            return
        methods = tuple(dict.fromkeys(methods))
        with self._cond:
            while not self._may_start(methods):
                if self.stop is not None and self.stop.is_set():
                    raise Interrupted("stopped by signal")
                # with a stop to watch, look at it again every STOP_POLL_S: the requests holding
                # the slots may take their whole timeout to end
                self._cond.wait(None if self.stop is None else STOP_POLL_S)
            self.inflight += 1
            for m in methods:
                self.busy[m] = self.busy.get(m, 0) + 1
            self.peak = max(self.peak, self.inflight)
            ticket = _Ticket(self.epoch, methods)
        self._local.ticket = ticket
        try:
            yield
        finally:
            self._local.ticket = None
            with self._cond:
                self.inflight -= 1
                for m in methods:
                    self.busy[m] -= 1
                self._cond.notify_all()

    def _may_start(self, methods: tuple[str, ...]) -> bool:
        if self.inflight >= int(self.limit):
            return False
        return all(self.busy.get(m, 0) < self.caps.get(m, self.ceiling) for m in methods)

    # ---- signals --------------------------------------------------------------------------

    def congested(self) -> None:
        """The portal pushed back (503, OPERATION_TIME_LIMIT): halve, once per round."""
        ticket = getattr(self._local, "ticket", None)
        with self._cond:
            if ticket is not None and ticket.epoch != self.epoch:
                return  # sent before the last cut: that cut already answered this round
            self.limit = max(1.0, self.limit / 2)
            self.lowest = min(self.lowest, self.limit)
            self.epoch += 1
            self.cuts += 1

    def answered(self, answers: list[Answer]) -> None:
        """A request came back: learn each method's pace and room, then grow or shrink."""
        slow = False
        with self._cond:
            for a in answers:
                if a.seconds is not None and a.calls > 0:
                    slow |= self._slow(a.kind or a.method, a.seconds / a.calls)
                if a.left is not None and a.seconds:
                    # Room for this many requests like this one; at least one, which the
                    # operating budget holds back until the window resets.
                    self.caps[a.method] = max(1, min(self.ceiling, int(max(0.0, a.left) // a.seconds)))
                elif a.left is not None:
                    self.caps.pop(a.method, None)
            if not slow:
                self.limit = min(float(self.ceiling), self.limit + 1 / max(1.0, self.limit))
            self._cond.notify_all()
        if slow:
            self.congested()

    def _slow(self, kind: str, per_call: float) -> bool:
        """Much slower than this kind of sub-call's best pace: the portal queues our work."""
        pace = self.pace.get(kind)
        if pace is None or per_call < pace:
            self.pace[kind] = per_call
            return False
        # Forgive slowly, so one lucky fast answer does not make every later one look slow.
        self.pace[kind] = pace + 0.01 * (per_call - pace)
        return per_call > self.slow_factor * pace + self.slow_margin_s

    def state(self) -> dict:
        with self._cond:
            return {
                "limit": self.limit,
                "inflight": self.inflight,
                "peak": self.peak,
                "cuts": self.cuts,
                "lowest": self.lowest,
                "caps": dict(self.caps),
            }
