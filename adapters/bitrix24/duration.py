"""How many sub-calls one Bitrix24 request may carry: a cloud portal cuts a request at 60 s,
the sub-calls of a batch included (they run one after another).

`RequestCap` keeps, per method, the seconds one sub-call takes, from the `duration` the server
reports for each (a slower answer counts at once, a faster one a little at a time), and
`room(counts)` answers how many of each method fit in `TARGET_S`, well under the cap: the
time one sub-call takes varies, and the one that passes the cap loses the whole request. A
request cut anyway (`cut(methods)`) makes the next one like it at most half as large, so a
cut is never sent again the same way.
"""

from __future__ import annotations

import threading

CAP_S = 60.0  # Bitrix24 cloud: one request, a batch's sub-calls included
TARGET_S = 45.0  # what a request is planned to take
UNKNOWN_S = 0.5  # one sub-call of a method not yet seen (a first call of a method probes alone)
FORGET = 0.3  # the weight a faster answer gets


class RequestCap:
    """Per-method seconds per sub-call, and the sub-calls a request may hold under the cap."""

    def __init__(self, target_s: float = TARGET_S):
        self.target_s = target_s
        self.per_call: dict[str, float] = {}
        self._lock = threading.Lock()

    def observe(self, seconds: dict[str, list[float]]) -> None:
        """One answer's sub-call durations, by method."""
        with self._lock:
            for method, values in seconds.items():
                if not values:
                    continue
                mean = sum(values) / len(values)
                old = self.per_call.get(method)
                self.per_call[method] = mean if old is None or mean > old else old + FORGET * (mean - old)

    def seconds(self, counts: dict[str, int]) -> float:
        """What a request of `counts` sub-calls per method is expected to take."""
        with self._lock:
            return sum(c * self.per_call.get(m, UNKNOWN_S) for m, c in counts.items())

    def room(self, counts: dict[str, int]) -> int:
        """The most sub-calls of each method (at most its count) one request may hold; at least 1."""
        top = max(counts.values(), default=1)
        for n in range(top, 1, -1):
            if self.seconds({m: min(n, c) for m, c in counts.items()}) <= self.target_s:
                return n
        return 1

    def cut(self, methods: list[str]) -> None:
        """A request of these sub-calls (one entry per sub-call) was cut off: each is taken to
        be slow enough that half as many fill the target."""
        per_call = self.target_s / max(1, len(methods) // 2)
        with self._lock:
            for m in set(methods):
                self.per_call[m] = max(self.per_call.get(m, 0.0), per_call)


def durations(cmds: dict[str, tuple[str, dict]], times: dict) -> dict[str, list[float]]:
    """The server seconds each sub-call took (its `time.duration`), by method."""
    out: dict[str, list[float]] = {}
    for key, (method, _) in cmds.items():
        t = times.get(key)
        try:
            out.setdefault(method, []).append(float(t.get("duration", t.get("processing"))))
        except (AttributeError, TypeError, ValueError):
            pass
    return out
