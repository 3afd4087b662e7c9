"""A manual `sync` stopped by SIGTERM / Ctrl-C / kill -9, a `sync` waiting for another run's
lock, and what `status` says afterwards, as real processes against the amoCRM sandbox.

The sandbox holds the request for the second page of deals until the test has sent its signal,
so the signal lands mid-stream every time; waits poll with a deadline, nothing sleeps.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
from click.testing import CliRunner

from connector.cli import main
from sandbox.amocrm import AmoSandbox
from sandbox.data import generate
from tests.e2e.test_run_e2e import query, wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONNECTOR = [sys.executable, "-m", "connector"]


def write_config(tmp_path, sandbox, lock_timeout_s=600) -> str:
    path = tmp_path / "config.toml"
    path.write_text(f"""
[storage]
path = "{tmp_path / "mirror.db"}"

[[sources]]
name = "amo"
kind = "amocrm"
base_url = "{sandbox.url}"
access_token = "{sandbox.access_token}"

[schedule]
lock_timeout_s = {lock_timeout_s}
""")
    return str(path)


class Gate:
    """Holds the sandbox's answer to the second request for deals until `release()`.

    The reader asks for the deals after the first page's rows (several requests may be in
    flight; pages are saved in list order), so while the second one to arrive is held, nothing
    after the first page can be saved; with 2,000 deals it is never past the end of the list."""

    def __init__(self, sandbox):
        self.reached, self.go = threading.Event(), threading.Event()
        self.seen = 0
        lock = threading.Lock()
        handle = sandbox.handle

        def gated(req):
            if req.path.rstrip("/").endswith("/api/v4/leads"):
                with lock:
                    self.seen += 1
                    mine = self.seen == 2
                if mine:
                    self.reached.set()
                    self.go.wait(60)
            return handle(req)

        sandbox.handle = gated

    def release(self):
        self.go.set()


@pytest.fixture
def amo_sandbox():
    """A sandbox with 2,000 deals: eight pages, so a held request is mid-stream."""
    with AmoSandbox(generate(seed=1, size=2000), limits=False) as server:
        yield server


def start_sync(tmp_path, config, *args) -> tuple[subprocess.Popen, str]:
    err = str(tmp_path / f"sync-{time.monotonic_ns()}.err")
    with open(err, "w") as fh:
        proc = subprocess.Popen(
            CONNECTOR + ["--config", config, "sync", *args],
            cwd=str(tmp_path),
            env=dict(os.environ, PYTHONPATH=ROOT),
            stdout=subprocess.PIPE,
            stderr=fh,
            text=True,
        )
    return proc, err


def mid_deals(db, gate):
    """The sync is waiting for deals page 2: page 1 is committed."""
    return gate.reached.is_set() and (query(db, "SELECT count(*) FROM deals") or [[0]])[0][0] > 0


def status_text(config) -> str:
    result = CliRunner().invoke(main, ["--config", config, "status"])
    assert result.exit_code == 0, result.output
    return result.output


def status_rows(config) -> dict[str, str]:
    """The stream table's rows by stream (a wrapped bookmark's indented lines left out)."""
    lines = status_text(config).split("\n\n")[1].splitlines()[2:]  # after the "Mirror: ..." line
    return {ln.split()[1]: ln for ln in lines if not ln.startswith(" ")}


def last_error(config, stream: str) -> str:
    """A stream's entry under "Last errors:", its wrapped lines joined."""
    block = status_text(config).split("Last errors:\n")[1].split("\n\n")[0]
    entries = [" ".join(e.split()) for e in re.split(r"\n  (?! )", "\n" + block) if e.strip()]
    return next(e for e in entries if e.startswith(f"amo/{stream} "))


def committed_rows(db) -> int:
    """What the deals stream counts as written: deals (its contact links are not entities)."""
    return query(db, "SELECT count(*) FROM deals")[0][0]


def deals_run(db):
    return query(
        db, "SELECT status, rows, error FROM sync_runs WHERE stream = 'deals' ORDER BY id DESC LIMIT 1"
    )[0]


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_commits_the_page_records_interrupted_and_exits_128_plus_n(amo_sandbox, tmp_path, sig, code):
    config, db = write_config(tmp_path, amo_sandbox), str(tmp_path / "mirror.db")
    gate = Gate(amo_sandbox)
    proc, err = start_sync(tmp_path, config)
    try:
        wait_for(lambda: mid_deals(db, gate), proc, what="the second page of deals")
        before = committed_rows(db)
        proc.send_signal(sig)
        gate.release()
        assert proc.wait(60) == code
    finally:
        gate.release()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = open(err).read()
    said = [ln for ln in text.splitlines() if ln.startswith("interrupted by")]
    assert said == [text.splitlines()[-1]], text  # one line, the last (log lines aside)
    assert said[0].startswith(f"interrupted by {signal.Signals(sig).name}: amo/deals stopped"), said
    assert "Aborted" not in text and "Traceback" not in text

    # the page under way when the signal came was committed, and the run says so
    status, rows, error = deals_run(db)
    assert status == "interrupted" and "signal" in error
    assert rows == committed_rows(db) > before
    assert "running" not in {r.split()[2] for r in status_rows(config).values()}
    assert set(s for (s,) in query(db, "SELECT DISTINCT status FROM sync_runs")) <= {"ok", "interrupted"}


def test_status_shows_a_killed_run_as_interrupted_with_what_it_committed(amo_sandbox, tmp_path):
    config, db = write_config(tmp_path, amo_sandbox), str(tmp_path / "mirror.db")
    gate = Gate(amo_sandbox)
    proc, _ = start_sync(tmp_path, config)
    try:
        wait_for(lambda: mid_deals(db, gate), proc, what="the second page of deals")
        proc.kill()
        proc.wait(60)
    finally:
        gate.release()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    bookmark = query(db, "SELECT bookmark FROM sync_state WHERE stream = 'deals'")[0][0]
    committed = committed_rows(db)
    row = status_rows(config)["deals"]
    assert row.split()[2] == "interrupted", row
    assert "killed or crashed" in last_error(config, "deals")
    status, rows, _ = deals_run(db)  # the mirror itself is untouched by `status`
    assert status == "running"
    assert rows == committed > 0
    assert f" {rows} " in f" {row} "
    assert bookmark is not None


def test_a_sync_waiting_for_a_lock_says_whom_it_waits_for_at_once(amo_sandbox, tmp_path):
    config = write_config(tmp_path, amo_sandbox, lock_timeout_s=30)
    db = str(tmp_path / "mirror.db")
    gate = Gate(amo_sandbox)
    first, _ = start_sync(tmp_path, config)
    try:
        wait_for(lambda: mid_deals(db, gate), first, what="the first sync mid-deals")
        second, err = start_sync(tmp_path, config)
        line = wait_for(
            lambda: next((ln for ln in open(err) if "busy" in ln), None),
            second,
            what="the waiting sync's message",
        )
        assert f"pid {first.pid} (crm-connector --config {config} sync) since 20" in line
        assert "up to 30s" in line and "source 'amo'" in line
        gate.release()
        assert first.wait(60) == 0
        assert second.wait(60) == 0
        assert open(err).read().count("busy") == 1
    finally:
        gate.release()
        for p in (first, locals().get("second")):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
