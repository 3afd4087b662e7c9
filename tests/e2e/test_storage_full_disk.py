"""A full disk during `crm-connector sync` against the amoCRM sandbox: one line
naming the mirror, exit 1, every page committed before kept, and the next run completes."""

from __future__ import annotations

import sqlite3

import pytest

from connector.mirror.store import Mirror
from tests.unit.test_storage_faults import cli, write_config


def test_a_full_disk_during_sync_is_one_line_and_keeps_what_was_committed(tmp_path, monkeypatch, amo_sandbox):
    """A real SQLITE_FULL: the mirror may not grow past a few hundred pages (`max_page_count`)."""
    db = str(tmp_path / "mirror.db")
    config = write_config(tmp_path, db, amo_sandbox.url, amo_sandbox.access_token)
    open_ = Mirror._open

    def small_disk(self, path):
        open_(self, path)
        self.conn.execute("PRAGMA max_page_count = 150")

    monkeypatch.setattr(Mirror, "_open", small_disk)
    r = cli(config, "sync")
    errors = [x for x in r.output.splitlines() if x.startswith("error:")]
    assert (
        r.exit_code == 1
        and "Traceback" not in r.output
        and errors
        == [
            f"error: mirror {db}: the disk is full; free some space, then run again (nothing committed "
            f"was lost)"
        ]
    ), r.output
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    kept = conn.execute("SELECT count(*) FROM sync_state WHERE last_success_at IS NOT NULL").fetchone()[0]
    assert kept >= 1  # the streams before the disk filled are there, bookmarks and all
    conn.close()

    monkeypatch.setattr(Mirror, "_open", open_)  # space freed: the next run completes
    r = cli(config, "sync")
    assert r.exit_code == 0, r.output


def _oauth_config(tmp_path, server, token_path) -> str:
    config = tmp_path / "oauth.toml"
    config.write_text(f"""
[storage]
path = "{tmp_path / "mirror.db"}"
token_path = "{token_path}"

[[sources]]
name = "amo"
kind = "amocrm"
base_url = "{server.url}"
client_id = "{server.client_id}"
client_secret = "{server.client_secret}"
redirect_uri = "{server.redirect_uri}"
""")
    return str(config)


def test_auth_with_an_unwritable_token_file_is_one_line(amo_dataset, tmp_path):
    """`auth` saving the tokens under a regular file: exit 2, the token file named, no secret."""
    from click.testing import CliRunner

    from connector.cli import main
    from sandbox.amocrm import AmoSandbox

    (tmp_path / "file").write_text("x")
    token_path = tmp_path / "file" / "tokens.json"
    with AmoSandbox(amo_dataset, limits=False, access_token=None) as server:
        r = CliRunner().invoke(
            main,
            [
                "--config",
                _oauth_config(tmp_path, server, token_path),
                "auth",
                "amo",
                "--code",
                server.issue_code(),
            ],
        )
    lines = r.output.splitlines()
    assert r.exit_code == 2 and len(lines) == 1, r.output
    assert lines[0] == (
        f"error: token file {token_path}: a part of the path is a file, not a "
        f"directory; set [storage] token_path to a path under a directory"
    )
    assert server.client_secret not in r.output


def test_a_full_disk_when_saving_tokens_is_one_line(tmp_path, monkeypatch):
    import errno
    import os

    import pytest

    from connector.mirror.storage import StorageError
    from connector.mirror.tokens import TokenStore

    real_open = os.open

    def full(path, flags, *args, **kwargs):
        if ".tmp." in str(path):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        return real_open(path, flags, *args, **kwargs)

    store = TokenStore(str(tmp_path / "tokens.json"))
    monkeypatch.setattr(os, "open", full)
    with pytest.raises(StorageError) as err:
        store.save("amo", {"access_token": "a-secret-1", "refresh_token": "r-secret-1"})
    assert err.value.exit_code == 1 and str(err.value).startswith(
        f"token file {tmp_path / 'tokens.json'}: the disk is full"
    )
    assert "secret" not in str(err.value)
    assert not [f for f in os.listdir(tmp_path) if ".tmp." in f]


def _gone(db: str) -> None:
    import os

    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(db + suffix):
            os.unlink(db + suffix)


def _replaced(db: str) -> None:
    import os

    _gone(db)
    other = sqlite3.connect(db + ".other")
    other.execute("CREATE TABLE t (x)")
    other.close()
    os.replace(db + ".other", db)


@pytest.mark.parametrize("when", ["a page", "the end"])
@pytest.mark.parametrize("how,says", [(_gone, "was deleted"), (_replaced, "was replaced by another file")])
def test_the_mirror_deleted_or_replaced_mid_sync_fails_the_run(
    tmp_path, monkeypatch, amo_sandbox, how, says, when
):
    """The run wrote into a file nobody can see any more: not a success. Deleted after the
    first page commits (later pages notice), or after the last page of the last stream (the
    run's end notices)."""
    db = str(tmp_path / "mirror.db")
    config = write_config(tmp_path, db, amo_sandbox.url, amo_sandbox.access_token)
    save, pages = Mirror.save_page, []

    def saving(self, source, stream, page, *args, **kwargs):
        pages.append(stream)
        written = save(self, source, stream, page, *args, **kwargs)
        if when == "a page" and len(pages) == 1:
            how(db)
        return written

    monkeypatch.setattr(Mirror, "save_page", saving)
    args = []
    if when == "the end":  # one stream: gone once its run is recorded, nothing after it
        finish = Mirror.finish_run

        def then_gone(self, *a, **kw):
            finish(self, *a, **kw)
            how(db)

        monkeypatch.setattr(Mirror, "finish_run", then_gone)
        args = ["--stream", "pipelines"]
    r = cli(config, "sync", *args)
    errors = [x for x in r.output.splitlines() if x.startswith("error:")]
    assert r.exit_code == 1 and "Traceback" not in r.output and len(errors) == 1, r.output
    assert errors[0].startswith(f"error: mirror {db} {says} while the run was writing to it"), errors
    assert "streams ok" not in r.output and len(pages) >= 1
