"""`crm-connector status` on a hand-built mirror: bookmarks are shown readably, not as JSON."""

from __future__ import annotations

from click.testing import CliRunner

from adapters.base import Page
from connector.cli import main
from connector.store import Mirror


def test_status_describes_bookmarks(tmp_path):
    db = tmp_path / "mirror.db"
    path = tmp_path / "config.toml"
    path.write_text(f"""
[storage]
path = "{db}"

[[sources]]
name = "main"
kind = "amocrm"
base_url = "https://example.amocrm.ru"
access_token = "tok-secret-123"
""")
    with Mirror(str(db)) as m:
        for stream, bookmark in (("deals", '{"api_filter":false,"since":"2026-11-23T10:00:00Z"}'),
                                 ("events", '{"last_id":{"calls":42}}')):
            run = m.start_run("r1", "main", stream, "2026-11-23T10:00:00Z")
            m.save_page("main", stream, Page(bookmark=bookmark))
            m.finish_run(run, "ok", 3, 1)
    res = CliRunner().invoke(main, ["--config", str(path), "status"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert "bookmark" in lines[0]
    deals = next(line for line in lines if line.startswith("main") and " deals " in line)
    events = next(line for line in lines if line.startswith("main") and " events " in line)
    assert "since 2026-11-23 10:00:00 UTC; no API filter" in deals
    assert "after calls #42" in events
    assert "{" not in res.output and "tok-secret-123" not in res.output
