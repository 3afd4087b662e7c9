"""`crm-connector run` as a real process against the amoCRM sandbox: a full cycle, SIGTERM,
SIGKILL mid-sync and recovery. Waits poll the mirror with a deadline; nothing sleeps for timing.
"""

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from connector.mirror import schema
from connector.run import runtime
from connector.run.locks import source_lock
from connector.run.sync import sync_source

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONNECTOR = [sys.executable, "-m", "connector"]
FIELDS = {
    "deals_won": "KPI: Deals won",
    "revenue_won": "KPI: Lifetime revenue",
    "calls_90d": "KPI: Calls, 90 days",
}


def write_config(tmp_path, sandbox, name="mirror.db", kpi_after_sync=True) -> str:
    fields = "\n".join(f'{k} = "{v}"' for k, v in FIELDS.items())
    path = tmp_path / f"{name}.toml"
    path.write_text(f"""
[storage]
path = "{tmp_path / name}"

[[sources]]
name = "amo"
kind = "amocrm"
base_url = "{sandbox.url}"
access_token = "{sandbox.access_token}"

[schedule]
sync = "0 2 * * *"
kpi_after_sync = {str(kpi_after_sync).lower()}

[kpi]
targets = ["contact", "company"]

[kpi.fields]
{fields}
""")
    return str(path)


def start(tmp_path, config: str, *args) -> tuple[subprocess.Popen, str]:
    err = str(tmp_path / f"stderr-{time.monotonic_ns()}.log")
    env = dict(os.environ, PYTHONPATH=ROOT)
    with open(err, "w") as fh:
        proc = subprocess.Popen(
            CONNECTOR + ["--config", config, "--log-format", "json", "run", *args],
            cwd=str(tmp_path),
            env=env,
            stdout=subprocess.PIPE,
            stderr=fh,
            text=True,
        )
    return proc, err


def query(db: str, sql: str):
    if not os.path.exists(db):
        return None
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return conn.execute(sql).fetchall()
    except sqlite3.OperationalError:  # schema not applied yet
        return None
    finally:
        conn.close()


def wait_for(pred, proc: subprocess.Popen, deadline_s: float = 90, what: str = ""):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        value = pred()
        if value:
            return value
        assert proc.poll() is None, f"the process exited early (rc {proc.returncode}) waiting for {what}"
        time.sleep(0.02)  # polling interval, not a timing assumption
    pytest.fail(f"timed out waiting for {what}")


def signal_when(proc: subprocess.Popen, pred, what: str, sig=signal.SIGTERM) -> int:
    """Wait until `pred` holds, send `sig` and return the exit code; the process never outlives
    the test, whatever fails."""
    try:
        wait_for(pred, proc, what=what)
        proc.send_signal(sig)
        return proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def entity_rows(db: str) -> dict[str, list]:
    return {t: query(db, f"SELECT * FROM [{t}] ORDER BY 1, 2, 3") for t in schema.ENTITY_TABLES}


def test_daemon_runs_sync_then_kpi_and_stops_cleanly_on_sigterm(amo_sandbox, tmp_path):
    config = write_config(tmp_path, amo_sandbox)
    db = str(tmp_path / "mirror.db")
    proc, err = start(tmp_path, config, "--run-now", "--interval-seconds", "2")
    # a second run started means the first one (sync, then KPIs, in one job) has finished
    assert (
        signal_when(
            proc,
            lambda: (query(db, "SELECT count(DISTINCT run_id) FROM sync_runs") or [[0]])[0][0] >= 2,
            "a second scheduled run",
        )
        == 0
    )
    log = open(err).read()
    assert '"event": "job"' in log and '"status": "ok"' in log and "stopped" in log
    assert amo_sandbox.access_token not in log

    # the first run: every stream ok, then the KPI job computed and wrote values back
    first = query(db, "SELECT min(run_id) FROM sync_runs")[0][0]
    assert {
        s
        for (s,) in query(
            db,
            "SELECT status FROM sync_runs WHERE run_id = (SELECT run_id FROM sync_runs ORDER BY id LIMIT 1)",
        )
    } == {"ok"}, first
    assert query(db, "SELECT count(*) FROM kpi_runs")[0][0] >= 1
    written = query(db, "SELECT entity_type, entity_id, field_key, kpi, value FROM kpi_written")
    assert len(written) > 50

    # the sandbox CRM's cards show the values the mirror says were written
    ds = amo_sandbox.dataset
    with ds.lock:
        names = {et: {f["id"]: f["name"] for f in ds.fields[et]} for et in ("contact", "company")}
        cards = {"contact": {c["id"]: c for c in ds.contacts}, "company": {c["id"]: c for c in ds.companies}}
        checked = 0
        for et, eid, key, kpi, value in written:
            assert names[et][int(key)] == FIELDS[kpi]
            shown = cards[et][eid]["custom"].get(int(key))
            if value is None:
                assert shown in (None, "")
            else:
                assert float(shown) == pytest.approx(value)
                checked += 1
    assert checked > 50

    # a consistent mirror: no run left "running", SQLite happy, the source lock free
    assert query(db, "PRAGMA integrity_check") == [("ok",)]
    statuses = {s for (s,) in query(db, "SELECT DISTINCT status FROM sync_runs")}
    assert statuses <= {"ok", "interrupted"}
    cfg = runtime.load_config(config)
    with source_lock(cfg, "amo", timeout_s=0):
        pass


def kill_on_request(server, path: str, procs: list) -> threading.Event:
    """Wrap the sandbox's handler: the first GET of `path` SIGKILLs the newest process in
    `procs` (and waits for it to die) before the CRM answers; the event says it happened.
    A kill point chosen by request, not by timing: it holds however loaded the machine is."""
    handle, fired, lock = server.handle, threading.Event(), threading.Lock()

    def wrapped(req):
        with lock:
            hit = req.method == "GET" and req.path.rstrip("/") == path and not fired.is_set()
            if hit:
                fired.set()  # first: the test may see the process die before we return
                procs[-1].send_signal(signal.SIGKILL)
                procs[-1].wait(60)
        return server.fault_response() if hit else handle(req)

    server.handle = wrapped
    return fired


def test_sigkill_mid_sync_then_next_run_equals_an_uninterrupted_sync(amo_sandbox, tmp_path):
    config = write_config(tmp_path, amo_sandbox, kpi_after_sync=False)
    db = str(tmp_path / "mirror.db")
    procs: list[subprocess.Popen] = []
    # users, pipelines, companies, contacts and deals come first: killed when tasks are asked for
    killed = kill_on_request(amo_sandbox, "/api/v4/tasks", procs)
    proc, _ = start(tmp_path, config, "--once")
    procs.append(proc)
    try:
        assert proc.wait(120) == -signal.SIGKILL and killed.is_set()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    running = query(db, "SELECT stream FROM sync_runs WHERE status = 'running'")
    assert running == [("tasks",)], running
    partial = query(db, "SELECT count(*) FROM sync_runs WHERE status = 'ok'")[0][0]
    assert partial == 5

    proc, err = start(tmp_path, config, "--once")  # the lock died with the killed process
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, open(err).read()[-2000:]
    assert '"source": "amo", "status": "ok"' in out  # its JSON summary line (--log-format json)
    assert query(db, "SELECT count(*) FROM sync_runs WHERE status = 'running'") == [(0,)]
    assert query(db, "SELECT count(*) FROM sync_runs WHERE status = 'ok'")[0][0] > partial

    # the reference: one uninterrupted sync of the same account into a fresh mirror
    ref_cfg = runtime.load_config(write_config(tmp_path, amo_sandbox, name="ref.db"))
    with runtime.open_mirror(ref_cfg) as mirror:
        adapter = runtime.make_adapter(ref_cfg, ref_cfg.sources[0])
        try:
            assert {r.status for r in sync_source(mirror, adapter)} == {"ok"}
        finally:
            adapter.close()
    got, want = entity_rows(db), entity_rows(str(tmp_path / "ref.db"))
    assert sum(len(v) for v in want.values()) > 1000
    for table in schema.ENTITY_TABLES:
        assert got[table] == want[table], table


def test_sigterm_mid_sync_records_interrupted_exits_0_and_restart_resumes(amo_sandbox, tmp_path):
    config = write_config(tmp_path, amo_sandbox, kpi_after_sync=False)
    db = str(tmp_path / "mirror.db")
    amo_sandbox.latency_ms = 60
    proc, err = start(tmp_path, config, "--run-now")  # the daemon, nightly cron far away
    assert (
        signal_when(
            proc,
            lambda: (query(db, "SELECT count(*) FROM sync_runs WHERE status = 'ok'") or [[0]])[0][0] >= 3,
            "three streams committed",
        )
        == 0
    )
    statuses = [s for (s,) in query(db, "SELECT status FROM sync_runs ORDER BY id")]
    assert "running" not in statuses and statuses[-1] == "interrupted"
    assert set(statuses) == {"ok", "interrupted"}
    assert "stopping after the current page" in open(err).read()

    amo_sandbox.latency_ms = 0
    proc, err = start(tmp_path, config, "--once")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0 and '"source": "amo", "status": "ok"' in out, open(err).read()[-2000:]
    last = query(
        db,
        "SELECT stream, status FROM sync_runs WHERE run_id = "
        "(SELECT run_id FROM sync_runs ORDER BY id DESC LIMIT 1)",
    )
    assert {s for _, s in last} == {"ok"} and len(last) == statuses.count("ok") + statuses.count(
        "interrupted"
    )
