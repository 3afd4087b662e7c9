"""A full disk during `crm-connector sync` against the amoCRM sandbox (issue 12.6/11): one line
naming the mirror, exit 1, every page committed before kept, and the next run completes."""

from __future__ import annotations

import sqlite3

from connector.store import Mirror
from tests.unit.test_storage_faults import cli, write_config


def test_a_full_disk_during_sync_is_one_line_and_keeps_what_was_committed(tmp_path, monkeypatch,
                                                                          amo_sandbox):
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
    assert r.exit_code == 1 and "Traceback" not in r.output and errors == [
        f"error: mirror {db}: the disk is full; free some space, then run again (nothing committed "
        f"was lost)"], r.output
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    kept = conn.execute("SELECT count(*) FROM sync_state WHERE last_success_at IS NOT NULL").fetchone()[0]
    assert kept >= 1      # the streams before the disk filled are there, bookmarks and all
    conn.close()

    monkeypatch.setattr(Mirror, "_open", open_)     # space freed: the next run completes
    r = cli(config, "sync")
    assert r.exit_code == 0, r.output
