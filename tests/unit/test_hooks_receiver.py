"""The webhook receiver's answers, and the debouncer that turns bursts into one read."""

from __future__ import annotations

import io
import threading

import pytest

from adapters.hooks import Change, HookRefused
from connector.hooks.debounce import Debouncer
from connector.hooks.receiver import MAX_BODY, Receiver

SECRET = "s" * 32


def parse(pairs):
    if ("account[id]", "1") not in pairs:
        raise HookRefused("account[id] is not this account's")
    return [Change("deals", int(v)) for k, v in pairs if k.endswith("[id]") and k.startswith("leads")]


def call(rx: Receiver, path: str, body: bytes = b"", method: str = "POST", length=None):
    environ = {
        "PATH_INFO": path,
        "REQUEST_METHOD": method,
        "wsgi.input": io.BytesIO(body),
        "CONTENT_LENGTH": str(len(body) if length is None else length),
    }
    return rx.handle(environ)[0]


@pytest.fixture
def rx():
    got = []
    r = Receiver({"amo": (SECRET, parse)}, lambda source, changes: got.append((source, changes)))
    r.got = got
    return r


def test_a_genuine_delivery_is_accepted_and_handed_on(rx):
    assert (
        call(rx, f"/hooks/amo/{SECRET}", b"leads%5Bupdate%5D%5B0%5D%5Bid%5D=7&account%5Bid%5D=1") == "200 OK"
    )
    assert rx.got == [("amo", [Change("deals", 7)])]


@pytest.mark.parametrize(
    "path, status",
    [
        (f"/hooks/amo/{'x' * 32}", "403 Forbidden"),  # wrong secret
        (f"/hooks/amo/{SECRET[:-1]}", "403 Forbidden"),  # a prefix of it
        (f"/hooks/nosuch/{SECRET}", "404 Not Found"),  # unknown source
        ("/hooks/amo", "404 Not Found"),
        ("/", "404 Not Found"),
    ],
)
def test_wrong_secrets_and_unknown_sources_are_refused_before_the_body_is_read(rx, path, status, caplog):
    assert call(rx, path, b"leads%5Bupdate%5D%5B0%5D%5Bid%5D=7&account%5Bid%5D=1") == status
    assert rx.got == [] and SECRET not in caplog.text


def test_another_accounts_delivery_is_refused(rx):
    assert (
        call(rx, f"/hooks/amo/{SECRET}", b"leads%5Bupdate%5D%5B0%5D%5Bid%5D=7&account%5Bid%5D=2")
        == "403 Forbidden"
    )
    assert rx.got == [] and rx.counts["refused"] == 1


def test_only_post_and_no_huge_bodies(rx):
    assert call(rx, f"/hooks/amo/{SECRET}", method="GET") == "405 Method Not Allowed"
    assert call(rx, f"/hooks/amo/{SECRET}", length=MAX_BODY + 1) == "413 Payload Too Large"
    assert call(rx, "/health", method="GET") == "200 OK"
    assert rx.got == []


def test_a_burst_of_changes_to_one_record_is_one_flush_and_sources_stay_apart():
    flushed, done = [], threading.Event()

    def flush(source, changes):
        flushed.append((source, sorted(changes, key=lambda c: (c.table, c.id))))
        if len(flushed) == 2:
            done.set()

    d = Debouncer(flush, window_s=0.2)
    try:
        for _ in range(50):
            d.add("amo", [Change("deals", 1)])
        d.add("amo", [Change("deals", 2, deleted=True), Change("deals", 2)])
        d.add("b24", [Change("contacts", 9)])
        assert done.wait(10)
    finally:
        d.close()
    assert sorted(flushed) == [
        ("amo", [Change("deals", 1), Change("deals", 2, deleted=True)]),
        ("b24", [Change("contacts", 9)]),
    ]


def test_a_sources_next_batch_waits_for_its_running_flush():
    started, release, batches = threading.Event(), threading.Event(), []

    def flush(source, changes):
        batches.append([c.id for c in changes])
        if len(batches) == 1:
            started.set()
            release.wait(10)

    d = Debouncer(flush, window_s=0.0)
    try:
        d.add("amo", [Change("deals", 1)])
        assert started.wait(10)
        d.add("amo", [Change("deals", 2)])
        d.add("amo", [Change("deals", 3)])
        assert batches == [[1]]  # held while the first one runs
        release.set()
    finally:
        d.close()
    assert batches == [[1], [2, 3]]
