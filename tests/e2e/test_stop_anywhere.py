"""SIGTERM is obeyed wherever `sync` is, not only after a committed page: here it waits in the
rate limiter between pages of a list that repeats itself (nothing new to commit), as a real
process against the amoCRM sandbox."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest

from sandbox.amocrm import AmoSandbox
from sandbox.data import generate
from tests.e2e.test_interrupt_and_status import start_sync
from tests.e2e.test_run_e2e import query, wait_for

pytestmark = pytest.mark.e2e


def test_sigterm_while_a_repeating_list_is_read_slowly_stops_within_10_s(tmp_path):
    with AmoSandbox(generate(seed=1, size=300), limits=False) as amo:
        amo.repeat_list("/api/v4/companies", rows=2)
        config = tmp_path / "config.toml"
        # one request every 20 s: after its first page the reader waits in the limiter
        config.write_text(f"""
[storage]
path = "{tmp_path / "mirror.db"}"

[[sources]]
name = "amo"
kind = "amocrm"
base_url = "{amo.url}"
access_token = "{amo.access_token}"
requests_per_second = 0.05
""")
        db = str(tmp_path / "mirror.db")
        proc, err = start_sync(tmp_path, str(config), "--stream", "companies")
        try:
            wait_for(
                lambda: (query(db, "SELECT count(*) FROM companies") or [[0]])[0][0] == 2,
                proc,
                what="the first page of companies committed",
            )
            asked = len(amo.requests_to("/api/v4/companies"))
            proc.send_signal(signal.SIGTERM)
            t0 = time.monotonic()
            try:
                code = proc.wait(10)
            except subprocess.TimeoutExpired:
                pytest.fail("sync did not stop within 10 s of SIGTERM")
            took = time.monotonic() - t0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert len(amo.requests_to("/api/v4/companies")) == asked  # nothing sent after the signal
    assert code == 143, open(err).read()
    assert took < 10
    ((status, rows, error),) = query(
        db, "SELECT status, rows, error FROM sync_runs WHERE stream = 'companies'"
    )
    assert status == "interrupted" and "signal" in error, error
    assert rows == 2 == query(db, "SELECT count(*) FROM companies")[0][0]
