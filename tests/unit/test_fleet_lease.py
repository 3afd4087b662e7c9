"""The fleet's lease lock (`connector.fleet.lease`), against a real redis-server.

No assertion depends on how long a sleep lasted: the tests wait for events (a renewal
count, a process's message) and check bounds that hold however the processes are scheduled.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import time

import pytest

from connector.fleet.lease import Lease, LeaseBusy, LeaseLost, describe, redis_client


def hold_until_killed(url, name, lease_s, ready):
    """A worker that takes the lease, keeps renewing it, and is then SIGKILLed."""
    lease = Lease(redis_client(url), name, lease_s=lease_s, worker="doomed@host")
    assert lease.acquire()
    ready.set()
    while True:
        time.sleep(60)


def try_from_another_process(url, name, out):
    lease = Lease(redis_client(url), name, worker="other@host")
    out.put((lease.acquire(), Lease.holder_of(lease.redis, name)))


def wait_for(check, what: str, limit_s: float = 30.0):
    deadline = time.monotonic() + limit_s
    while not check():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.01)


@pytest.fixture
def name(redis_prefix):
    return f"{redis_prefix}:sync:main"


def test_a_second_acquirer_is_refused_while_the_first_holds_it(redis_url, redis_client, name):
    first = Lease(redis_client, name, worker="celery@h1")
    assert first.acquire()
    try:
        ctx = multiprocessing.get_context("spawn")
        out = ctx.Queue()
        p = ctx.Process(target=try_from_another_process, args=(redis_url, name, out))
        p.start()
        got, holder = out.get(timeout=60)
        p.join(30)
        assert got is False
        assert holder["worker"] == "celery@h1" and holder["pid"] == os.getpid()
        assert holder["host"] == socket.gethostname() and "token" not in holder
        assert 0 < holder["ttl_s"] <= 30
        second = Lease(redis_client, name, worker="celery@h2")
        with pytest.raises(LeaseBusy, match="celery@h1"):
            with second:
                pass
        assert not second.acquire(blocking=True, timeout=0.2)
    finally:
        assert first.release()
    assert Lease.holder_of(redis_client, name) is None
    assert Lease(redis_client, name).acquire()  # free again once released


@pytest.mark.redis
def test_renewal_keeps_the_lease_well_past_its_length(redis_client, name):
    lease = Lease(redis_client, name, lease_s=0.3, renew_s=0.05, worker="long-job")
    started = time.monotonic()
    with lease:
        wait_for(lambda: lease.renewals >= 20, "20 renewals")  # >= 1 s: over 3 leases
        assert time.monotonic() - started > 3 * lease.lease_s
        assert lease.held and not lease.lost.is_set()
        assert Lease.holder_of(redis_client, name)["worker"] == "long-job"
        assert not Lease(redis_client, name).acquire()
    assert redis_client.exists(lease.key) == 0


@pytest.mark.redis
def test_a_holder_that_dies_loses_the_lease_when_it_ends(redis_url, redis_client, name):
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    p = ctx.Process(target=hold_until_killed, args=(redis_url, name, 1.0, ready))
    p.start()
    try:
        assert ready.wait(60)
    finally:
        os.kill(p.pid, signal.SIGKILL)
        p.join(30)
    successor = Lease(redis_client, name, worker="next")
    left_ms = redis_client.pttl(successor.key)
    assert left_ms > 0  # the dead holder's lease runs on...
    assert not successor.acquire()  # ...and nobody may take it meanwhile
    t0 = time.monotonic()
    assert successor.acquire(blocking=True, timeout=30)  # but it ends: no stale lock
    assert time.monotonic() - t0 >= left_ms / 1000 - 0.05
    assert Lease.holder_of(redis_client, name)["worker"] == "next"
    successor.release()


def test_release_by_a_non_owner_does_nothing(redis_client, name):
    owner = Lease(redis_client, name, worker="owner")
    assert owner.acquire()
    stranger = Lease(redis_client, name, worker="stranger")
    assert stranger.release() is False  # never acquired
    forged = Lease(redis_client, name)
    forged._value = redis_client.get(owner.key).decode().replace("owner", "forger")
    assert forged.release() is False  # a look-alike value is not the token
    assert forged.renew() is False
    assert Lease.holder_of(redis_client, name)["worker"] == "owner"
    assert owner.release() is True


def test_a_holder_that_stalled_past_its_lease_cannot_touch_the_next_one(redis_client, name):
    stalled = Lease(redis_client, name, lease_s=0.2, renew_s=60, worker="stalled")
    assert stalled.acquire()
    successor = Lease(redis_client, name, worker="successor")
    assert successor.acquire(blocking=True, timeout=30)  # the lease ran out
    assert stalled.renew() is False and stalled.lost.is_set()
    with pytest.raises(LeaseLost):
        stalled.check()
    assert stalled.release() is False  # and the successor keeps it
    assert Lease.holder_of(redis_client, name)["worker"] == "successor"
    successor.release()


def test_the_renewer_notices_a_lost_lease(redis_client, name):
    lease = Lease(redis_client, name, lease_s=5, renew_s=0.02)
    assert lease.acquire()
    redis_client.delete(lease.key)  # e.g. a failover lost the key
    assert lease.lost.wait(10)
    assert not lease.held
    with pytest.raises(LeaseLost):
        lease.check()
    assert lease.release() is False


def test_describe_names_the_holder():
    text = describe({"worker": "celery@h3", "pid": 42, "host": "h3", "since": 0, "ttl_s": 21.4})
    assert text == "celery@h3 (pid 42 on h3, since 1970-01-01T00:00:00Z, lease ends in 21 s)"
    assert describe(None) == "nobody"
