"""`crm-connector status` on a hand-built mirror: bookmarks shown readably, the text fits the
terminal ($COLUMNS), and `--json` / `--log-format json` give one JSON document."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from adapters.base import Page
from connector.cli import main
from connector.mirror.store import Mirror

TOKEN_ERROR = "amoCRM source 'main': token rejected (401); create a new long-lived token and set access_token"


@pytest.fixture
def config(tmp_path):
    """A mirror with an ok deals run, an ok events run, a failed users run and a stream that
    failure left unrun."""
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
        for stream, bookmark in (
            ("deals", '{"api_filter":false,"since":"2026-11-23T10:00:00Z"}'),
            ("events", '{"last_id":{"calls":42}}'),
        ):
            run = m.start_run("r1", "main", stream, "2026-11-23T10:00:00Z")
            m.save_page("main", stream, Page(bookmark=bookmark))
            m.finish_run(run, "ok", 1234, 1)
        for stream, error in (("users", TOKEN_ERROR), ("tasks", f"not run: {TOKEN_ERROR}")):
            run = m.start_run("r2", "main", stream, "2026-11-24T10:00:00Z")
            m.finish_run(run, "failed", 0, 1, error)
    return path


def _status(config, *args, columns=200):
    return CliRunner().invoke(main, ["--config", str(config), "status", *args], env={"COLUMNS": str(columns)})


def test_status_describes_bookmarks(config):
    res = _status(config)
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0] == f"Mirror: {config.parent / 'mirror.db'}"
    assert "bookmark (UTC)" in lines[2]
    deals = next(line for line in lines if line.startswith("main") and " deals " in line)
    events = next(line for line in lines if line.startswith("main") and " events " in line)
    assert "since 2026-11-23 10:00:00; no API filter" in deals and " 1,234 " in deals
    assert "after calls #42" in events
    assert "{" not in res.output and "tok-secret-123" not in res.output


def test_status_fits_80_columns_wrapping_bookmarks_and_errors(config):
    res = _status(config, columns=80)
    assert res.exit_code == 0, res.output
    mirror, _, *lines = res.output.splitlines()
    assert mirror.startswith("Mirror: /")  # a path is never wrapped: it stays one to copy
    assert max(len(line) for line in lines) <= 80, res.output
    deals = lines.index(next(line for line in lines if line.startswith("main") and " deals " in line))
    start = lines[0].index("bookmark")
    # the bookmark column wraps onto an indented line of its own
    assert lines[deals][start:] + " " + lines[deals + 1].strip() == "since 2026-11-23 10:00:00; no API filter"
    assert lines[deals + 1][:start].strip() == ""
    errors = "\n".join(lines[lines.index("Last errors:") :])
    assert " ".join(errors.split()).startswith(
        f"Last errors: main/users (failed; last ok never): {TOKEN_ERROR} (so not run: tasks)"
    )
    assert errors.count("token rejected") == 1  # the unrun stream is named, not repeated


@pytest.mark.parametrize("args", [("--json",), ("--log-format", "json")])
def test_status_json_is_one_document(config, args):
    res = CliRunner().invoke(main, ["--config", str(config), "status", *args])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    streams = {s["stream"]: s for s in doc["streams"]}
    assert set(streams) == {"deals", "events", "users", "tasks"}
    assert streams["deals"]["bookmark"] == '{"api_filter":false,"since":"2026-11-23T10:00:00Z"}'
    assert streams["deals"]["bookmark_text"] == "since 2026-11-23 10:00:00 UTC; no API filter"
    assert streams["deals"]["last_rows"] == 1234 and streams["deals"]["last_status"] == "ok"
    assert streams["users"]["last_error"] == TOKEN_ERROR
    assert doc["kpi_jobs"] == []
    assert doc["mirrors"] == [{"path": str(config.parent / "mirror.db"), "sources": ["main"], "exists": True}]
    assert [(r["source"], r["job"]) for r in doc["next_runs"]] == [("main", "sync")]
