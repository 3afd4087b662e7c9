"""A real Redis for the fleet's tests (pulled in by tests/conftest.py); never a mock.

`redis_url` (session): `CRM_TEST_REDIS_URL` when set (CI may start its own server), else a
`redis-server` this session starts on a free port of 127.0.0.1, with no persistence, and
stops at the end. Without redis-py, or without a server binary and no URL, the tests that
use it fail saying what to install: they are never skipped.
`redis_client`: a client on it; `redis_prefix`: a key prefix of the test's own, so tests
(and parallel runs on a shared server) never see each other's keys.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid

import pytest

SERVER = "/usr/bin/redis-server"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _missing(why: str):
    pytest.fail(f"Redis tests cannot run: {why}", pytrace=False)


@pytest.fixture(scope="session")
def redis_url():
    try:
        import redis
    except ImportError:
        _missing("redis-py is not installed (pip install -e '.[test]')")
    url = os.environ.get("CRM_TEST_REDIS_URL")
    if url:
        redis.Redis.from_url(url).ping()
        yield url
        return
    binary = SERVER if os.path.exists(SERVER) else shutil.which("redis-server")
    if not binary:
        _missing("no redis-server (apt-get install redis-server) and no CRM_TEST_REDIS_URL")
    port = _free_port()
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--loglevel",
            "warning",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    try:
        deadline = time.monotonic() + 10
        while True:  # wait for it to listen
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    err = proc.stderr.read().decode(errors="replace") if proc.poll() is not None else ""
                    pytest.fail(f"redis-server did not start on port {port}: {err[-500:]}")
                time.sleep(0.02)
        yield url
    finally:
        client.close()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def redis_client(redis_url):
    import redis

    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def redis_prefix(redis_client):
    """A key prefix of this test's own; its keys are deleted afterwards."""
    prefix = f"crm:test:{uuid.uuid4().hex[:12]}"
    yield prefix
    for key in redis_client.scan_iter(f"{prefix}:*"):
        redis_client.delete(key)
