"""Storage faults at the command line: an unwritable mirror, lock or token
location, a directory or a file under a file as the path, a file that is not a database, a
truncated or corrupt mirror, a full disk. Each is one line naming the path and what to do, exit
2 (the config must change) or 1 (runtime), no traceback, nothing committed lost; nothing is
written into a damaged mirror; `status` and `kpi show` write nothing and work in a read-only
directory; `check` proves the locations writable without leaving anything behind.

Read-only directories are real: chmod, and when the tests run as root (whom chmod does not
stop) the command runs in a child process without CAP_DAC_OVERRIDE, so permissions bind it.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from connector.cli import main
from connector.mirror import storage
from connector.mirror.store import Mirror
from connector.run import jobs

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = """
[storage]
path = "{db}"

[[sources]]
name = "main"
kind = "amocrm"
base_url = "{url}"
access_token = "{token}"

[kpi.fields]
deals_won = "KPI: Deals won"
"""


def write_config(tmp_path, db, url="http://127.0.0.1:9", token="tok-storage-1") -> str:
    path = tmp_path / "config.toml"
    path.write_text(CONFIG.format(db=db, url=url, token=token))
    return str(path)


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    monkeypatch.setattr(jobs, "check_source", lambda cfg, src: "ok (stub)")


def cli(config: str, *args):
    return CliRunner().invoke(main, ["--config", config, *args])


def one_line(r, code: int) -> str:
    """The command's whole output is one `error:` line, with exit `code` and no traceback."""
    lines = r.output.splitlines()
    assert r.exit_code == code and len(lines) == 1 and lines[0].startswith("error: "), (
        r.exit_code,
        r.output,
        r.exception,
    )
    return lines[0]


def sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def filled_mirror(path: str, rows: int = 3000) -> str:
    """A mirror of `rows` deals (several hundred pages), checkpointed into the main file."""
    m = Mirror(path)
    with m.db.atomic():
        m.set_bookmark("main", "deals", '{"since": "2026-01-01T00:00:00Z"}')
        m.conn.executemany(
            "INSERT INTO deals (source, id, name, raw) VALUES ('main', ?, ?, ?)",
            ((i, f"deal {i}", "x" * 300) for i in range(rows)),
        )
    m.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    m.close()
    return path


# -- a bad location: exit 2 ------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [["status"], ["sync"], ["kpi"], ["run", "--once"], ["run"], ["kpi", "show", "main", "contact", "1"]],
)
def test_a_directory_as_the_mirror_path_is_one_line_exit_2(tmp_path, command):
    """`run` (the daemon) refuses to start rather than fail every night. The config is what
    must change: the line names its file and key."""
    (tmp_path / "mirror").mkdir()
    config = write_config(tmp_path, tmp_path / "mirror")
    line = one_line(cli(config, *command), 2)
    assert line == (
        f"error: {config}: storage.path: {tmp_path / 'mirror'} is a directory, not a "
        f"file; set it to a file name inside it"
    )


@pytest.mark.parametrize("command", [["status"], ["sync"], ["kpi"], ["run", "--once"]])
def test_a_path_under_a_regular_file_is_one_line_exit_2(tmp_path, command):
    (tmp_path / "file").write_text("not a directory")
    config = write_config(tmp_path, tmp_path / "file" / "mirror.db")
    line = one_line(cli(config, *command), 2)
    assert f"{tmp_path / 'file' / 'mirror.db'}" in line
    assert "a part of the path is a file, not a directory; set [storage] path" in line


@pytest.mark.parametrize("command", [["status"], ["sync"], ["kpi"], ["run", "--once"]])
def test_a_file_that_is_not_a_database_is_left_alone(tmp_path, command):
    db = tmp_path / "notes.txt"
    db.write_text("shopping list\n" * 100)
    before = sha(db)
    line = one_line(cli(write_config(tmp_path, db), *command), 2)
    assert line == (
        f"error: mirror {db} is not a SQLite database; point [storage] path at the "
        f"mirror, or move this file away to start a new one"
    )
    assert sha(db) == before


# -- a damaged mirror: exit 1, nothing written -------------------------------------------------


def _garbage(path: str, offset: int, size: int) -> None:
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(bytes((i * 37 + 11) % 256 for i in range(size)))


@pytest.mark.parametrize(
    "damage,expect",
    [
        (lambda p: os.truncate(p, os.path.getsize(p) // 2 + 100), "is truncated ("),
        (lambda p: os.truncate(p, 4096 * 20), "is truncated ("),
        (lambda p: os.truncate(p, 60), "is truncated (60 bytes, shorter than the 100-byte header)"),
        (lambda p: _garbage(p, 4096 * 150, 4096), "is corrupt ("),
        (lambda p: _garbage(p, 4096 * 150 + 1000, 500), "is corrupt ("),
        (lambda p: _garbage(p, 4096, 4096), "is corrupt ("),
    ],
    ids=[
        "truncated-mid-page",
        "truncated-at-a-page",
        "truncated-header",
        "garbage-page",
        "garbage-in-a-page",
        "garbage-schema-page",
    ],
)
@pytest.mark.parametrize("command", [["sync"], ["kpi"]])
def test_a_damaged_mirror_is_never_written(tmp_path, damage, expect, command):
    db = filled_mirror(str(tmp_path / "mirror.db"))
    damage(db)
    before = sha(db)
    line = one_line(cli(write_config(tmp_path, db), *command), 1)
    assert line.startswith(f"error: mirror {db} ") and expect in line
    assert line.endswith(
        "restore it from a backup, or move it away and run `crm-connector sync --full` to rebuild it"
    )
    assert sha(db) == before and wal_frames(db) == 0


def wal_frames(db: str) -> int:
    """Bytes in the mirror's write-ahead log: 0 when nothing was written (SQLite may leave an
    empty -wal and its -shm index beside a WAL database it opened)."""
    return os.path.getsize(db + "-wal") if os.path.exists(db + "-wal") else 0


def test_check_json_reports_the_location(tmp_path):
    (tmp_path / "file").write_text("not a directory")
    db = tmp_path / "file" / "mirror.db"
    r = CliRunner().invoke(main, ["--config", write_config(tmp_path, db), "check", "--json"])
    doc = json.loads(r.stdout)
    assert r.exit_code == 2 and doc["ok"] is False and doc["streams"] == []
    assert doc["storage"] == [
        f"mirror {db}: a part of the path is a file, not a directory; set "
        f"[storage] path to a path under a directory",
        f"token file {db}.tokens.json: a part of the path is a file, not a "
        f"directory; set [storage] token_path to a path under a directory",
    ]


@pytest.mark.parametrize("key", ["path", "token_path"])
def test_a_storage_path_naming_a_directory_names_the_config_file(tmp_path, key):
    (tmp_path / "there").mkdir()
    config = tmp_path / "config.toml"
    text = CONFIG.format(db=tmp_path / "mirror.db", url="http://127.0.0.1:9", token="tok-storage-1")
    if key == "path":
        text = text.replace(f'path = "{tmp_path / "mirror.db"}"', f'path = "{tmp_path / "there"}"')
    else:
        text = text.replace("[storage]\n", f'[storage]\ntoken_path = "{tmp_path / "there"}"\n')
    config.write_text(text)
    line = one_line(cli(str(config), "check"), 2)
    assert line == (
        f"error: {config}: storage.{key}: {tmp_path / 'there'} is a directory, not a "
        f"file; set it to a file name inside it"
    )


def test_check_reports_a_corrupt_mirror(tmp_path):
    db = filled_mirror(str(tmp_path / "mirror.db"))
    _garbage(db, 4096 * 150, 4096)
    r = cli(write_config(tmp_path, db), "check")
    errors = [x for x in r.output.splitlines() if x.startswith("error:")]
    assert r.exit_code == 1 and len(errors) == 1 and "is corrupt (" in errors[0], r.output


# -- a full disk or a failing lock file: exit 1 or 2 by the cause ------------------------------


@pytest.mark.parametrize(
    "code,exit_code,says",
    [
        (errno.ENOSPC, 1, "the disk is full (No space left on device); free some space"),
        (
            errno.EROFS,
            2,
            "is not writable (read-only file system); make it writable by this user, or set "
            "[storage] path to a writable place",
        ),
        (errno.EACCES, 2, "is not writable (permission denied)"),
        (errno.EIO, 1, "I/O error reading or writing the disk"),
    ],
)
def test_the_lock_file_failing_is_one_line_naming_it(tmp_path, monkeypatch, code, exit_code, says):
    """The lock file is made before the mirror is opened (run --once used to exit 1 with a
    bare `OSError ... .lock`)."""
    real_open = os.open

    def failing_open(path, flags, *args, **kwargs):
        if str(path).endswith(".lock"):
            raise OSError(code, os.strerror(code), path)
        return real_open(path, flags, *args, **kwargs)

    config = write_config(tmp_path, tmp_path / "mirror.db")
    monkeypatch.setattr(os, "open", failing_open)
    lock = tmp_path / "mirror.db.main.lock"
    for command in (["sync"], ["kpi"]):
        line = one_line(cli(config, *command), exit_code)
        assert line.startswith(f"error: lock file {lock}") and says in line, line
    r = cli(config, "run", "--once")
    assert r.exit_code == exit_code and f"error: main: lock file {lock}" in r.output
    assert "Traceback" not in r.output and "OSError" not in r.output


def test_storage_errors_name_the_cause_for_each_errno(tmp_path):
    p = str(tmp_path / "m.db")
    assert storage.from_os_error(OSError(errno.EDQUOT, "quota"), p).exit_code == 1
    assert "disk is full" in str(storage.from_os_error(OSError(errno.EDQUOT, "quota"), p))
    err = storage.from_os_error(OSError(errno.EROFS, "ro"), str(tmp_path / "t.json"), "token file")
    assert err.exit_code == 2 and "set [storage] token_path to a writable place" in str(err)


# -- read-only commands never write; a read-only directory still lets them work ----------------


def _without_dac_override():
    """In the child: drop CAP_DAC_OVERRIDE (root ignores permissions with it); not root: no-op."""
    if os.geteuid() == 0:
        PR_CAPBSET_DROP, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 24, 1, 2
        libc = ctypes.CDLL(None, use_errno=True)
        for cap in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
            if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def run_restricted(config: str, *args) -> subprocess.CompletedProcess:
    """The command in a child process that file permissions bind, even when we are root."""
    return subprocess.run(
        [sys.executable, "-m", "connector", "--config", config, *args],
        env=dict(os.environ, PYTHONPATH=ROOT),
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=_without_dac_override,
    )


@pytest.fixture
def read_only_dir(tmp_path):
    """A directory holding a synced-looking mirror and the config, then made read-only."""
    d = tmp_path / "ro"
    d.mkdir()
    db = filled_mirror(str(d / "mirror.db"), rows=50)
    config = write_config(d, db)
    os.chmod(db, 0o444)
    os.chmod(d, 0o555)
    yield d, db, config
    os.chmod(d, 0o755)


def test_status_and_kpi_show_work_in_a_read_only_directory(read_only_dir):
    d, db, config = read_only_dir
    before, files = sha(db), sorted(os.listdir(d))
    r = run_restricted(config, "status")
    assert r.returncode == 0 and "since 2026-01-01" in r.stdout, r.stderr
    r = run_restricted(config, "kpi", "show", "main", "contact", "1")
    assert r.returncode == 1 and r.stderr.startswith("error: no KPIs for contact 1"), r.stderr
    assert sha(db) == before and sorted(os.listdir(d)) == files


@pytest.mark.parametrize(
    "command,what", [(["sync"], "lock file"), (["kpi"], "lock file"), (["run", "--once"], "mirror")]
)
def test_writing_commands_in_a_read_only_directory_say_so_in_one_line(read_only_dir, command, what):
    d, db, config = read_only_dir
    r = run_restricted(config, *command)
    lines = r.stderr.splitlines()
    assert r.returncode == 2 and len(lines) == 1 and r.stdout == "", (r.returncode, r.stdout, r.stderr)
    assert lines[0].startswith(f"error: {what} {d}/mirror.db")
    assert (
        f"its directory {d} is not writable (permission denied); make it writable by this user, "
        f"or set [storage] path to a writable place" in lines[0]
    )


def test_check_finds_an_unwritable_location_and_status_a_read_only_mirror(read_only_dir):
    d, db, config = read_only_dir
    r = run_restricted(config, "check")
    errors = r.stderr.splitlines()
    assert r.returncode == 2 and len(errors) == 2, r.stderr
    assert errors[0].startswith(f"error: mirror {db}: its directory {d} is not writable")
    assert errors[1].startswith(f"error: token file {db}.tokens.json: its directory {d} is not writable")
    assert "set [storage] token_path to a writable place" in errors[1]


def test_a_read_only_mirror_in_a_writable_directory(tmp_path):
    db = filled_mirror(str(tmp_path / "mirror.db"), rows=50)
    config = write_config(tmp_path, db)
    os.chmod(db, 0o444)
    r = run_restricted(config, "status")
    assert r.returncode == 0 and "since 2026-01-01" in r.stdout, r.stderr
    r = run_restricted(config, "sync")
    assert r.returncode == 2 and r.stderr == (
        f"error: mirror {db} is read-only (permission denied); make it writable by this user, or "
        f"set [storage] path to a writable place\n"
    ), r.stderr


def test_status_changes_nothing_in_the_mirror(tmp_path):
    """No lock file, not a byte of the mirror: status only looks."""
    db = filled_mirror(str(tmp_path / "mirror.db"), rows=50)
    before, files = sha(db), sorted(os.listdir(tmp_path))
    config = write_config(tmp_path, db)
    r = cli(config, "status")
    assert r.exit_code == 0, r.output
    assert sha(db) == before and wal_frames(db) == 0
    assert set(os.listdir(tmp_path)) - set(files) <= {"mirror.db-wal", "mirror.db-shm", "config.toml"}


def test_status_without_a_mirror_creates_none(tmp_path):
    config = write_config(tmp_path, tmp_path / "new" / "mirror.db")
    r = cli(config, "status")
    assert r.exit_code == 0 and "no sync has run yet" in r.output
    assert not os.path.exists(tmp_path / "new")


def test_check_proves_the_locations_writable_and_leaves_nothing(tmp_path):
    db = filled_mirror(str(tmp_path / "mirror.db"), rows=50)
    config = write_config(tmp_path, db)
    files, before = sorted(os.listdir(tmp_path)), sha(db)
    r = cli(config, "check")
    assert r.exit_code == 0 and "error" not in r.output, r.output
    assert sha(db) == before and wal_frames(db) == 0
    assert set(os.listdir(tmp_path)) - set(files) <= {"mirror.db-wal", "mirror.db-shm"}


def _header_ahead_of_the_file(tmp_path) -> str:
    """A mirror as a checkpoint cut short by a full disk leaves it: page 1, copied first from
    the write-ahead log, counts pages that are still only in the log. SQLite reads it whole."""
    import shutil
    import sqlite3
    import struct

    live = filled_mirror(str(tmp_path / "live.db"), rows=50)
    conn = sqlite3.connect(live)
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    with conn:
        conn.executemany(
            "INSERT INTO deals (source, id, name, raw) VALUES ('main', ?, ?, ?)",
            ((i, f"deal {i}", "y" * 300) for i in range(50, 3000)),
        )
    db = str(tmp_path / "mirror.db")
    shutil.copy(live, db)
    shutil.copy(live + "-wal", db + "-wal")
    conn.close()
    wal = open(db + "-wal", "rb").read()
    size, at, page1 = struct.unpack(">I", wal[8:12])[0], 32, None
    while at + 24 + size <= len(wal):
        if struct.unpack(">I", wal[at : at + 4])[0] == 1:
            page1 = wal[at + 24 : at + 24 + size]
        at += 24 + size
    with open(db, "r+b") as fh:
        fh.write(page1)
    head = open(db, "rb").read(100)
    assert os.path.getsize(db) < int.from_bytes(head[28:32], "big") * size
    return db


def test_pages_still_in_the_write_ahead_log_are_not_a_truncated_mirror(tmp_path):
    db = _header_ahead_of_the_file(tmp_path)
    assert storage.header_problem(db) is None
    r = cli(write_config(tmp_path, db), "check")
    assert r.exit_code == 0 and "error" not in r.output, r.output
    with Mirror(db) as m:
        assert m.table_counts("main")["deals"] == 3000
