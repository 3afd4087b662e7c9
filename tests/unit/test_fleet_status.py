"""`crm-connector status` under the celery engine: each source's fleet job as the board in a real
Redis holds it (queued, running and on which worker, finished with its result), in the text
table and in `--json`; a Redis that does not answer is one line naming the URL, exit 2."""

from __future__ import annotations

import json
import socket
import uuid

import pytest
from click.testing import CliRunner

from connector.cli import main
from connector.fleet.board import PREFIX, Board

pytestmark = pytest.mark.redis


def write_config(tmp_path, broker_url: str, names: list[str]) -> str:
    sources = "\n".join(
        f'[[sources]]\nname = "{n}"\nkind = "amocrm"\nbase_url = "https://{n}.amocrm.ru"\n'
        f'access_token = "token-of-{n}"\n'
        for n in names
    )
    path = tmp_path / "fleet.toml"
    path.write_text(f"""
[storage]
path = "{tmp_path}/mirrors/{{source}}.db"

[engine]
kind = "celery"
broker_url = "{broker_url}"

{sources}
""")
    return str(path)


@pytest.fixture
def names(redis_client):
    """Four source names of this test's own; their board keys are deleted afterwards."""
    tag = uuid.uuid4().hex[:8]
    out = [f"{what}-{tag}" for what in ("queued", "running", "finished", "never")]
    yield out
    for n in out:
        redis_client.delete(f"{PREFIX}:job:{n}")
    for key in redis_client.scan_iter(f"{PREFIX}:done:task-{out[0][-8:]}-*"):
        redis_client.delete(key)


def status(config: str, *args):
    return CliRunner().invoke(main, ["--config", config, "status", *args], env={"COLUMNS": "200"})


def fleet_rows(output: str) -> dict[str, str]:
    """The rows of the "Fleet jobs" table by source (after its header and rule)."""
    table = output.split("Fleet jobs (celery engine):\n", 1)[1].splitlines()
    assert table[0].split() == ["source", "job", "state", "worker", "since", "result"], table
    return {line.split()[0]: line for line in table[2:] if line.strip()}


def test_status_shows_queued_running_and_finished_fleet_jobs(tmp_path, redis_url, redis_client, names):
    queued, running, finished, never = names
    tag = queued[-8:]
    board = Board(redis_client)
    board.queued(queued, f"task-{tag}-1", "sync")
    board.running(running, f"task-{tag}-2", "sync", "crm-4242@host-7")
    board.finished(
        finished,
        f"task-{tag}-3",
        "incremental",
        "crm-77@host-2",
        {"status": "ok", "rows": 12345, "error": None, "worker": "crm-77@host-2"},
    )
    config = write_config(tmp_path, redis_url, names)

    res = status(config)
    assert res.exit_code == 0, res.output
    rows = fleet_rows(res.output)
    assert set(rows) == set(names)
    assert rows[queued].split()[1:3] == ["sync", "queued"] and "@" not in rows[queued]
    assert rows[running].split()[1:4] == ["sync", "running", "crm-4242@host-7"]
    assert rows[finished].split()[1:4] == ["incremental", "finished", "crm-77@host-2"]
    assert rows[finished].rstrip().endswith("ok, 12,345 rows")
    assert rows[never].split()[1] == "none"
    for n in (queued, running, finished):
        assert "s ago" in rows[n]

    doc = json.loads(status(config, "--json").output)
    jobs = {j["source"]: j for j in doc["fleet_jobs"]}
    assert (jobs[queued]["state"], jobs[queued]["task_id"]) == ("queued", f"task-{tag}-1")
    assert (jobs[running]["state"], jobs[running]["worker"]) == ("running", "crm-4242@host-7")
    assert (jobs[finished]["state"], jobs[finished]["status"], jobs[finished]["rows"]) == (
        "finished",
        "ok",
        "12345",
    )
    assert jobs[never] == {"state": "none", "source": never}


def test_a_failed_job_shows_its_error_and_the_next_state_replaces_the_last(
    tmp_path, redis_url, redis_client, names
):
    source = names[0]
    board = Board(redis_client)
    board.finished(
        source,
        f"task-{source[-8:]}-9",
        "sync",
        "crm-1@h",
        {"status": "failed", "rows": 0, "error": "access token rejected (401)"},
    )
    config = write_config(tmp_path, redis_url, names)
    row = fleet_rows(status(config).output)[source]
    assert "finished" in row and "failed, 0 rows: access token rejected (401)" in row

    board.queued(source, f"task-{source[-8:]}-10", "sync")  # the next run: the old result goes
    row = fleet_rows(status(config).output)[source]
    assert " queued " in row and "failed" not in row and "401" not in row


def test_status_with_redis_unreachable_is_one_line_naming_the_url_exit_2(tmp_path, names):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = write_config(tmp_path, f"redis://:pw@127.0.0.1:{port}/0", names)
    res = status(config)
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and f"redis://:***@127.0.0.1:{port}/0" in lines[0], lines
    assert "pw@" not in res.output
