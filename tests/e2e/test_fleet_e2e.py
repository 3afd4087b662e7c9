"""The celery engine end to end: real `crm-connector worker` processes (two, four threads each)
on a real Redis, `crm-connector run --once` as a real process, against 12 sandbox portals of
both CRMs (7 amoCRM + 5 Bitrix24), each enforcing its own API limits, one mirror file each.

Each test gets a Redis database of its own (flushed before and after), portals and source
names of its own, and workers of its own. Waits are conditions with deadlines; the SIGKILL is
sent from inside a portal's request handler, when the board says the job asking is running on
the worker to kill: a point in the job, not a moment in time.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from urllib.parse import urlsplit, urlunsplit

import pytest

from adapters.amocrm.config import sandbox_source as amo_source
from adapters.bitrix24.config import sandbox_source as b24_source
from connector.fleet.board import Board
from sandbox.amocrm import AmoSandbox
from sandbox.bitrix24 import Bitrix24Sandbox
from sandbox.data import generate
from tests.e2e.portal_check import assert_mirror_equals_portal

pytestmark = [pytest.mark.e2e, pytest.mark.redis]

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONNECTOR = [sys.executable, "-m", "connector"]
AMO, B24 = 7, 5
SIZE = 200
THREADS = 4
VISIBILITY_S, LEASE_S = 10, 5
RUN_DEADLINE_S = 120  # generous: the machine is shared; a healthy run takes seconds
_DBS = itertools.cycle(range(9, 16))  # Redis databases of these tests' own


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=ROOT, COLUMNS="250", PYTHONUNBUFFERED="1")


def _with_db(url: str, db: int) -> str:
    """`url` on database `db` (a unix socket's URL names it as `?db=N`)."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        query = [q for q in parts.query.split("&") if q and not q.startswith("db=")]
        return f"unix://{parts.path}?{'&'.join(query + [f'db={db}'])}"
    return urlunsplit(parts._replace(path=f"/{db}"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def broker(redis_url):
    """(url, client) of a Redis database no other test uses at the same time, empty."""
    import redis

    url = _with_db(redis_url, next(_DBS))
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url, client
    client.flushdb()
    client.close()


class Portal:
    def __init__(self, name: str, kind: str, server):
        self.name, self.kind, self.server = name, kind, server

    @property
    def limit_answers(self) -> int:
        """Requests the portal refused for its limits (amoCRM 429s; Bitrix24's
        QUERY_LIMIT_EXCEEDED and OPERATION_TIME_LIMIT)."""
        return self.server.violations if self.kind == "amocrm" else self.server.limit_errors


@pytest.fixture
def portals():
    """7 amoCRM + 5 Bitrix24 sandboxes, limits on, each its own data; names unique per test.
    They count requests on arrival (the kernel's stamp, sandbox/httpbase.py), so this busy
    process holding a request back does not make it count with later ones."""
    tag = uuid.uuid4().hex[:6]
    out = []
    try:
        for i in range(AMO):
            srv = AmoSandbox(generate(seed=10 + i, size=SIZE), limits=True, rate=7.0).start()
            out.append(Portal(f"amo{i}-{tag}", "amocrm", srv))
        for i in range(B24):
            srv = Bitrix24Sandbox(generate(seed=20 + i, size=SIZE), limits=True).start()
            out.append(Portal(f"b24-{i}-{tag}", "bitrix24", srv))
        yield out
    finally:
        for p in out:
            p.server.stop()


def write_config(tmp_path, broker_url: str, portals: list[Portal], bad: dict | None = None) -> str:
    """A celery-engine config: one mirror file per source; `bad` overrides a source's keys."""
    blocks = []
    for p in portals:
        keys = amo_source(p.server) if p.kind == "amocrm" else b24_source(p.server)
        keys.update((bad or {}).get(p.name, {}))
        lines = "\n".join(f'{k} = "{v}"' for k, v in keys.items())
        blocks.append(f'[[sources]]\nname = "{p.name}"\nkind = "{p.kind}"\n{lines}\n')
    path = tmp_path / "fleet.toml"
    path.write_text(f"""
[storage]
path = "{tmp_path}/mirrors/{{source}}.db"

[engine]
kind = "celery"
broker_url = "{broker_url}"
visibility_timeout_s = {VISIBILITY_S}
lease_s = {LEASE_S}

[schedule]
sync = "0 2 * * *"

{chr(10).join(blocks)}
""")
    return str(path)


def cli(tmp_path, config: str, *args, stdout=subprocess.PIPE) -> tuple[subprocess.Popen, str]:
    err = str(tmp_path / f"{args[0]}-{time.monotonic_ns()}.log")
    with open(err, "w") as fh:
        proc = subprocess.Popen(
            CONNECTOR + ["--config", config, *args],
            cwd=str(tmp_path),
            env=_env(),
            stdout=stdout,
            stderr=fh,
            text=True,
        )
    return proc, err


class Workers:
    """The test's worker processes; never outlive the test."""

    def __init__(self, tmp_path, config: str):
        self.tmp_path, self.config = tmp_path, config
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, str] = {}

    def start(self, *names: str) -> None:
        for name in names:
            node = f"{name}@fleettest"
            proc, log = cli(
                self.tmp_path,
                self.config,
                "worker",
                "-c",
                str(THREADS),
                "--name",
                node,
                stdout=subprocess.DEVNULL,
            )
            self.procs[node], self.logs[node] = proc, log
        for node in self.procs:
            self.wait_ready(node)

    def wait_ready(self, node: str, deadline_s: float = 60) -> None:
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            if f"{node} ready." in open(self.logs[node]).read():
                return
            proc = self.procs[node]
            assert proc.poll() is None, f"worker {node} exited (rc {proc.returncode}): {self.tail(node)}"
            time.sleep(0.05)  # polling interval
        pytest.fail(f"worker {node} not ready after {deadline_s}s: {self.tail(node)}")

    def tail(self, node: str, n: int = 3000) -> str:
        return open(self.logs[node]).read()[-n:]

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def workers(tmp_path):
    made: list[Workers] = []

    def make(config: str, *names: str) -> Workers:
        w = Workers(tmp_path, config)
        made.append(w)
        w.start(*names)
        return w

    yield make
    for w in made:
        w.stop()


def run_once(
    tmp_path, config: str, deadline_s: float = RUN_DEADLINE_S
) -> tuple[int | None, dict[str, str], str]:
    """`run --once` to the end: exit code (None: killed at the deadline), each source's
    summary line, stderr."""
    proc, err = cli(tmp_path, config, "run", "--once")
    try:
        out, _ = proc.communicate(timeout=deadline_s)
        code = proc.returncode
    except subprocess.TimeoutExpired:  # code None: still waiting at the deadline
        proc.kill()
        out, _ = proc.communicate()
        code = None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines = {}
    for line in out.splitlines():
        m = re.match(r"([A-Za-z0-9_.-]+): (.*)$", line)
        if m:
            lines[m.group(1)] = m.group(2)
    return code, lines, open(err).read()


def mirror(tmp_path, source: str) -> str:
    return str(tmp_path / "mirrors" / f"{source}.db")


def runs_of(db: str) -> list[tuple]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT run_id, stream, status, rows FROM sync_runs ORDER BY id").fetchall()
    finally:
        conn.close()


def assert_every_mirror_complete(tmp_path, portals: list[Portal]) -> None:
    for p in portals:
        assert os.path.exists(mirror(tmp_path, p.name)), f"no mirror file for {p.name}"
        assert_mirror_equals_portal(mirror(tmp_path, p.name), p.server, p.name)


def assert_no_limit_answers(portals: list[Portal]) -> None:
    refused = {p.name: p.limit_answers for p in portals if p.limit_answers}
    assert refused == {}, f"portals answered 'over the limit': {refused}"


# ---- a: the whole fleet ----------------------------------------------------------------------


def test_run_once_on_two_workers_mirrors_twelve_portals_within_their_limits(
    tmp_path, broker, portals, workers
):
    url, client = broker
    config = write_config(tmp_path, url, portals)
    fleet = workers(config, "w1", "w2")

    code, lines, err = run_once(tmp_path, config)
    assert code == 0, err[-3000:]
    for p in portals:
        assert re.fullmatch(r"ok, [\d,]+ rows; KPIs: .+", lines.get(p.name, "")), (p.name, lines)
        assert int(lines[p.name].split()[1].replace(",", "")) > 0

    # one mirror file per source, each equal to its portal; no portal ever said "too many"
    assert {f for f in os.listdir(tmp_path / "mirrors") if f.endswith(".db")} == {
        f"{p.name}.db" for p in portals
    }
    assert_every_mirror_complete(tmp_path, portals)
    assert_no_limit_answers(portals)
    assert all(p.server.request_log for p in portals)

    # status: each source's fleet job finished, and on which of the two workers
    proc, serr = cli(tmp_path, config, "status")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, open(serr).read()[-2000:]
    fleet_part = out.split("Fleet jobs (celery engine):", 1)[1]
    for p in portals:
        row = next((ln for ln in fleet_part.splitlines() if ln.startswith(p.name + " ")), None)
        assert row is not None, (p.name, fleet_part)
        assert re.search(r"\bsync\s+finished\s+w[12]@fleettest\b.*\bok, [\d,]+ rows", row), row
    board = Board(client)
    assert {board.get(p.name)["worker"] for p in portals} == set(fleet.procs)  # both took jobs
    # each job ran once (one sync run per mirror) and let go of its portal's lease
    for p in portals:
        assert len({r[0] for r in runs_of(mirror(tmp_path, p.name))}) == 1, p.name
    assert client.keys("crm:lease:*") == []


# ---- b: one portal refuses its credentials ---------------------------------------------------


def test_a_portal_with_wrong_credentials_fails_alone(tmp_path, broker, portals, workers):
    url, _ = broker
    amo_bad, b24_bad = portals[2], portals[AMO + 1]
    bad = {
        amo_bad.name: {"access_token": "not-the-token"},
        b24_bad.name: {"webhook_url": b24_bad.server.webhook_url.replace("sandboxsecret123", "wrong")},
    }
    config = write_config(tmp_path, url, portals, bad=bad)
    workers(config, "w1", "w2")

    code, lines, err = run_once(tmp_path, config)
    assert code == 1, (lines, err[-3000:])
    for p in portals:
        if p.name in bad:
            assert lines.get(p.name, "").startswith("failed"), (p.name, lines)
            assert f"error: {p.name}: " in err
        else:
            assert lines.get(p.name, "").startswith("ok, "), (p.name, lines)
    assert "not-the-token" not in err and "/wrong/" not in err
    good = [p for p in portals if p.name not in bad]
    assert_every_mirror_complete(tmp_path, good)
    assert_no_limit_answers(portals)


# ---- c: a worker killed mid-run --------------------------------------------------------------


def kill_when_running_on(
    portals: list[Portal], board: Board, victim: subprocess.Popen, node: str, path: str, then=None
) -> dict:
    """Wrap every portal's handler: the first GET of `path` from a job the board shows
    running on worker `node` SIGKILLs that worker's process (and reaps it) before the portal
    answers, then calls `then()` if given. Returns {"fired": Event, "source": that job's
    source, "board": every source's board entry at that moment}."""
    state = {"fired": threading.Event(), "source": None, "board": {}}
    lock = threading.Lock()
    for p in portals:
        handle = p.server.handle

        def wrapped(req, p=p, handle=handle):
            if req.method == "GET" and req.path.rstrip("/") == path:
                with lock:
                    job = board.get(p.name)
                    if (
                        not state["fired"].is_set()
                        and job.get("state") == "running"
                        and job.get("worker") == node
                    ):
                        state["board"] = {q.name: board.get(q.name) for q in portals}
                        state["source"] = p.name
                        os.kill(victim.pid, signal.SIGKILL)
                        victim.wait(60)
                        if then is not None:
                            then()
                        state["fired"].set()
                        return p.server.fault_response()
            return handle(req)

        p.server.handle = wrapped
    return state


def test_a_worker_killed_mid_run_its_jobs_run_again_and_every_mirror_is_complete(
    tmp_path, broker, portals, workers
):
    url, client = broker
    config = write_config(tmp_path, url, portals)
    fleet = workers(config, "w1", "w2")
    victim_node, survivor = "w1@fleettest", "w2@fleettest"
    victim = fleet.procs[victim_node]
    # events come last (streams side by side: every other stream has ended): killed when
    # events are asked for
    kill = kill_when_running_on(portals, Board(client), victim, victim_node, "/api/v4/events")

    code, lines, err = run_once(tmp_path, config)
    assert kill["fired"].is_set(), "the worker was never killed: no amoCRM job ran on it"
    assert victim.returncode == -signal.SIGKILL
    assert code == 0, (lines, err[-3000:], fleet.tail(survivor))
    for p in portals:
        assert lines.get(p.name, "").startswith("ok, "), (p.name, lines)
    assert_every_mirror_complete(tmp_path, portals)
    assert_no_limit_answers(portals)

    # the jobs the dead worker held ran again on the survivor; every other job ran once
    killed = {
        s
        for s, job in kill["board"].items()
        if job.get("state") == "running" and job.get("worker") == victim_node
    }
    assert kill["source"] in killed
    board = Board(client)
    for p in portals:
        job = board.get(p.name)
        assert job["state"] == "finished" and job["status"] == "ok", (p.name, job)
        run_ids = {r[0] for r in runs_of(mirror(tmp_path, p.name))}
        if p.name in killed:
            assert job["worker"] == survivor, (p.name, job)
            assert len(run_ids) <= 2, (p.name, runs_of(mirror(tmp_path, p.name)))
        else:
            assert len(run_ids) == 1, (p.name, "ran twice", runs_of(mirror(tmp_path, p.name)))

    # the job killed asking for events: its run was left 'running' and is closed as
    # interrupted; the second run resumed from the bookmarks the first one committed
    runs = runs_of(mirror(tmp_path, kill["source"]))
    order = list(dict.fromkeys(r[0] for r in runs))
    assert len(order) == 2, runs
    first = {r[1]: r for r in runs if r[0] == order[0]}
    second = {r[1]: r for r in runs if r[0] == order[1]}
    from adapters.amocrm.streams import STREAMS

    streams = [s.name for s in STREAMS if s.name != "events"]
    assert {s: r[2] for s, r in first.items()} == {**dict.fromkeys(streams, "ok"), "events": "interrupted"}, (
        runs
    )
    assert {r[2] for r in second.values()} == {"ok"} and "events" in second, runs
    for stream in ("companies", "contacts"):  # read again only from the bookmark on
        assert second[stream][3] < first[stream][3], (stream, runs)
    assert client.keys("crm:lease:*") == []  # the dead worker's lease ran out, no other is left


def test_a_worker_killed_in_its_restore_sweep_does_not_hold_redelivery_back(
    tmp_path, broker, portals, workers
):
    """Each worker sweeps Redis for jobs whose worker vanished, under one mutex key that it
    sets with an expiry; a worker killed inside its sweep leaves the key to expire. Here the
    kill leaves it as such a worker would (the app's own expiry): the dead worker's jobs must
    still come back within a run's deadline."""
    from connector.config import loader
    from connector.fleet.app import make_app

    url, client = broker
    config = write_config(tmp_path, url, portals)
    options = make_app(loader.load(config)).conf.broker_transport_options
    expire_s = options.get("unacked_mutex_expire", 300)  # kombu's default: 5 minutes
    fleet = workers(config, "w1", "w2")
    victim_node = "w1@fleettest"
    kill = kill_when_running_on(
        portals,
        Board(client),
        fleet.procs[victim_node],
        victim_node,
        "/api/v4/leads",
        then=lambda: client.set("unacked_mutex", b"token-of-the-dead-worker", px=int(expire_s * 1000)),
    )

    code, lines, err = run_once(tmp_path, config, deadline_s=VISIBILITY_S * 6)
    assert kill["fired"].is_set()
    assert code == 0, (lines, err[-3000:])
    assert all(lines.get(p.name, "").startswith("ok, ") for p in portals), lines
    assert_every_mirror_complete(tmp_path, [p for p in portals if p.name == kill["source"]])


# ---- d: no Redis ------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["run", "--once"], ["worker", "-c", "1"]])
def test_unreachable_redis_is_one_line_naming_the_url_and_exit_2(tmp_path, command):
    with AmoSandbox(size=20, limits=False) as amo:
        port = _free_port()
        url = f"redis://:pw1@127.0.0.1:{port}/4"  # a short password: masked all the same
        config = write_config(tmp_path, url, [Portal("amo-x", "amocrm", amo)])
        proc, err = cli(tmp_path, config, *command)
        try:
            out, _ = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        text = open(err).read()
        assert proc.returncode == 2, (out, text)
        lines = [ln for ln in text.splitlines() if ln.strip()]
        assert len(lines) == 1, lines
        assert lines[0].startswith("error: ") and f"redis://:***@127.0.0.1:{port}/4" in lines[0], lines[0]
        assert "pw1" not in text + out
        assert out == "" and not amo.request_log
