"""`connector.hooks.service.drain`: a source's missed changes are taken page after page, each
page refreshed before it is cleared, until a page brings none."""

from __future__ import annotations

from adapters.hooks import Change
from connector.hooks import service


class Queue:
    """A CRM's queue of missed changes, handed out `page` at a time (Bitrix24: 50)."""

    def __init__(self, n: int, page: int = 50):
        self.left = [Change("deals", i) for i in range(1, n + 1)]
        self.page, self.handed, self.log, self.gets = page, {}, [], 0

    def missed_changes(self):
        out, self.left = self.left[: self.page], self.left[self.page :]
        marker = f"p{self.gets}"
        self.gets += 1
        self.handed[marker] = out
        self.log.append(("get", len(out)))
        return out, marker

    def clear_missed(self, marker):
        self.log.append(("clear", marker))
        del self.handed[marker]


def test_every_page_is_refreshed_then_cleared_until_the_queue_is_empty():
    q, flushed = Queue(120), []
    flush = lambda name, changes: (
        flushed.append((name, [c.id for c in changes])),
        q.log.append(("flush", len(changes))),
    )
    assert service.drain("b24", q, flush) == 120
    assert [ids for _, ids in flushed] == [list(range(1, 51)), list(range(51, 101)), list(range(101, 121))]
    assert q.log == [
        ("get", 50),
        ("flush", 50),
        ("clear", "p0"),
        ("get", 50),
        ("flush", 50),
        ("clear", "p1"),
        ("get", 20),
        ("flush", 20),
        ("clear", "p2"),
        ("get", 0),
        ("clear", "p3"),
    ]
    assert q.left == [] and q.handed == {}


def test_a_crm_without_a_queue_and_a_bounded_catch_up(monkeypatch):
    class NoQueue:
        def missed_changes(self):
            return None

    assert service.drain("amo", NoQueue(), lambda *a: None) is None
    monkeypatch.setattr(service, "MAX_PAGES", 2)
    q = Queue(500)
    assert service.drain("b24", q, lambda *a: None) == 100 and len(q.left) == 400
