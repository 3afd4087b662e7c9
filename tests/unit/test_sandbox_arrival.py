"""The sandboxes count a request against the limits when it arrives (the kernel's receive stamp),
not when a thread of theirs gets to it; the amoCRM window takes events out of order."""

from __future__ import annotations

import socket
import sys
import threading
import time

import pytest
import requests

from sandbox import httpbase
from sandbox.amocrm import AmoSandbox
from sandbox.httpbase import SlidingWindow


class Clock:
    def __init__(self, t: float = 0.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_window_counts_each_event_at_its_own_time():
    clock = Clock()
    w = SlidingWindow(2, 1.0, clock=clock)
    assert w.allow(0.0)
    clock.t = 0.9
    assert w.allow()  # now: 0.9
    clock.t = 1.2
    # stamped 0.5, handled at 1.2: (-0.1, 0.9] would hold 0.0, 0.5 and 0.9
    assert not w.allow(0.5)
    assert w.allow(1.05)  # (0.05, 1.05] holds 0.9 and 1.05
    assert not w.allow()  # (0.2, 1.2] holds 0.9, 1.05 and now
    clock.t = 2.1
    assert w.allow() and w.allow(2.0)
    assert not w.allow(2.05)


def test_window_without_stamps_is_the_plain_sliding_window():
    clock = Clock(1000.0)
    w = SlidingWindow(7, 1.0, clock=clock)
    assert [w.allow() for _ in range(9)] == [True] * 7 + [False, False]
    clock.t += 1.0
    assert w.allow()


def test_a_stamp_in_the_future_counts_as_now():
    clock = Clock(5.0)
    w = SlidingWindow(1, 1.0, clock=clock)
    assert w.allow(7.0)
    assert not w.allow(5.5)  # 7.0 was taken as 5.0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_TIMESTAMPNS is Linux's")
def test_arrival_is_the_kernels_stamp_not_when_we_read():
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        client = socket.create_connection(srv.getsockname())
        conn, _ = srv.accept()
        with client, conn:
            conn.setsockopt(socket.SOL_SOCKET, httpbase.SO_TIMESTAMPNS, 1)
            sent = time.monotonic()
            client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            threading.Event().wait(0.3)  # a reader held up: the delay under test
            read_at = time.monotonic()
            arrived = httpbase._arrival(conn)
            assert arrived is not None
            assert sent - 0.05 <= arrived <= sent + 0.1 and read_at - arrived >= 0.2, (sent, arrived, read_at)
            assert conn.recv(100).startswith(b"GET / HTTP/1.1")  # the peek consumed nothing
            client.close()
            assert httpbase._arrival(conn) is None  # closed: no stamp


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_TIMESTAMPNS is Linux's")
def test_a_sandbox_request_carries_its_arrival():
    seen = []
    with AmoSandbox(size=20, limits=True) as amo:
        handle = amo.handle

        def wrapped(req):
            seen.append((req.arrived, time.monotonic()))
            return handle(req)

        amo.handle = wrapped
        headers = {"Authorization": f"Bearer {amo.access_token}"}
        with requests.Session() as s:  # one kept connection: each request stamped anew
            before = time.monotonic()
            codes = [
                s.get(amo.url + "/api/v4/account", headers=headers, timeout=10).status_code for _ in range(3)
            ]
            after = time.monotonic()
    assert codes == [200, 200, 200]
    assert len(seen) == 3
    for arrived, handled in seen:
        assert arrived is not None and before <= arrived <= handled <= after
    assert [a for a, _ in seen] == sorted(a for a, _ in seen) and len({a for a, _ in seen}) == 3
