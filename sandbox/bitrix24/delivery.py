"""The Bitrix24 sandbox's queue server: it POSTs event deliveries from a thread of its own.

A real portal does not call handlers while the change happens: it queues the event on a queue
server, which calls the handler a little later (seconds, the docs say; slow handlers get a
lower priority). So a change only enqueues here (`Deliverer.send`), and the request that
caused it never waits. A delivery that fails (no answer, refused connection, an error status)
is logged and lost: the docs say Bitrix24 does not resend an event if the handler did not
respond or returned an error status; no second chances.

The queue, the knobs for tests (`drop_next`, `repeat_next`, `delay_s`, `pause` / `resume`,
`forge`) and the `sent` log are the sandboxes' shared `sandbox.deliver.Deliverer`; this adds
the event's name and object id to each log entry (`event`, `id`), a longer answer timeout,
and the names `wait_idle` and `stop`.

Standard library only (the sandbox imports nothing else).
"""

from __future__ import annotations

from sandbox.deliver import Deliverer as _Deliverer

__all__ = ["Deliverer"]

TIMEOUT_S = 5.0  # a handler slower than this is treated as one that did not answer


class Deliverer(_Deliverer):
    """One background thread POSTing form-encoded event deliveries in order."""

    thread_name = "b24-event-queue"

    def __init__(self, timeout_s: float = TIMEOUT_S):
        super().__init__(timeout_s)

    def describe(self, pairs: list[tuple[str, str]]) -> dict:
        d = dict(pairs)
        oid = d.get("data[FIELDS][ID]") or d.get("data[FIELDS_AFTER][ID]") or d.get("data[FIELDS_BEFORE][ID]")
        return {"event": d.get("event"), "id": oid}

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until every queued delivery has been sent (or dropped); False on timeout."""
        return self.wait(timeout)

    def stop(self) -> None:
        self.close()
