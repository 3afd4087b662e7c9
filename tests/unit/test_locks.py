"""The per-source lock between processes: contention, timeout message, release on SIGKILL."""

import os
import signal
import stat
import subprocess
import sys
import threading
from types import SimpleNamespace

import pytest

from connector.config.loader import ScheduleConfig
from connector.run.locks import LockAbandoned, LockTimeout, lock_path, source_lock

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# A second process that takes the lock, says so on stdout, and holds it until stdin says "go".
HOLDER = """
import sys
from types import SimpleNamespace
from connector.config.loader import ScheduleConfig
from connector.run.locks import source_lock
cfg = SimpleNamespace(storage_path=sys.argv[1], schedule=ScheduleConfig())
with source_lock(cfg, sys.argv[2], timeout_s=10):
    print("locked", flush=True)
    sys.stdin.readline()
print("released", flush=True)
"""


def make_cfg(tmp_path, timeout=600.0):
    return SimpleNamespace(
        storage_path=str(tmp_path / "mirror.db"), schedule=ScheduleConfig(lock_timeout_s=timeout)
    )


@pytest.fixture
def holder(tmp_path):
    """Start a holder process for source 'main'; yields it once it holds the lock."""
    procs = []

    def start(source="main"):
        env = dict(os.environ, PYTHONPATH=ROOT)
        p = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(tmp_path / "mirror.db"), source],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert p.stdout.readline().strip() == "locked"
        procs.append(p)
        return p

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(10)


def test_second_process_times_out_naming_source_and_holder(tmp_path, holder):
    p = holder()
    with pytest.raises(LockTimeout) as exc:
        with source_lock(make_cfg(tmp_path), "main", timeout_s=0.2):
            pytest.fail("got a lock another process holds")
    msg = str(exc.value)
    assert "source 'main' is busy" in msg and "waited 0.2s" in msg
    assert f"pid {p.pid}" in msg and "-c" in msg
    assert exc.value.source == "main"


def test_waiter_gets_the_lock_when_the_holder_releases(tmp_path, holder):
    p = holder()
    got, waiting = threading.Event(), threading.Event()

    def wait_for_it():
        waiting.set()
        with source_lock(make_cfg(tmp_path, timeout=30), "main"):  # default: lock_timeout_s
            got.set()

    t = threading.Thread(target=wait_for_it)
    t.start()
    waiting.wait(5)
    assert not got.is_set()  # the holder still has it
    p.stdin.write("go\n")
    p.stdin.flush()
    assert p.stdout.readline().strip() == "released"
    t.join(30)
    assert got.is_set()


def test_sigkilled_holder_leaves_no_stale_lock(tmp_path, holder):
    p = holder()
    p.send_signal(signal.SIGKILL)
    p.wait(10)
    with source_lock(make_cfg(tmp_path), "main", timeout_s=0):
        with open(lock_path(make_cfg(tmp_path), "main")) as fh:
            assert f"pid {os.getpid()} " in fh.read()


def test_other_sources_are_not_blocked(tmp_path, holder):
    holder("main")
    with source_lock(make_cfg(tmp_path), "b24", timeout_s=0) as path:
        assert path.endswith("mirror.db.b24.lock")


def test_same_process_second_acquire_is_refused(tmp_path):
    cfg = make_cfg(tmp_path)
    with source_lock(cfg, "main", timeout_s=0):
        with pytest.raises(LockTimeout):
            with source_lock(cfg, "main", timeout_s=0):
                pass
    with source_lock(cfg, "main", timeout_s=0):  # and released after the block
        pass


def test_stop_while_waiting_abandons(tmp_path, holder):
    holder()
    stop = threading.Event()
    stop.set()
    with pytest.raises(LockAbandoned, match="main"):
        with source_lock(make_cfg(tmp_path), "main", timeout_s=30, stop=stop):
            pass


def test_lock_file_is_private_and_cleared_on_release(tmp_path):
    cfg = make_cfg(tmp_path)
    path = lock_path(cfg, "main")
    with source_lock(cfg, "main", timeout_s=0):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert os.path.getsize(path) > 0
    assert os.path.getsize(path) == 0


def test_auth_code_never_written_to_lock_file(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["/usr/bin/crm-connector", "auth", "main", "--code", "def50200abc"])
    cfg = make_cfg(tmp_path)
    with source_lock(cfg, "main", timeout_s=0):
        text = open(lock_path(cfg, "main")).read()
    assert "def50200abc" not in text and "crm-connector auth main --code ***" in text
