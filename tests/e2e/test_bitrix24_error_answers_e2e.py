"""Bitrix24's error answers against the sandbox: read before any retry.

- A deleted portal (500 PORTAL_DELETED) or a REST API blocked by Bitrix24 (503 OVERLOAD_LIMIT):
  `sync` sends one request, prints one line saying what happened and what to do, runs none of
  the source's other streams and exits 1.
- A proxy's HTML 503 page in front of a rate-limited portal: the request is retried, nothing
  counts as a limit answer, the source's pace is left alone, and the mirror equals the portal.
"""

from __future__ import annotations

import sqlite3

import pytest
from click.testing import CliRunner

from adapters.bitrix24.adapter import Bitrix24Adapter
from connector.cli import main
from connector.config.loader import SourceConfig
from connector.mirror.store import Mirror
from connector.run.sync import sync_source
from sandbox.bitrix24 import Bitrix24Sandbox
from tests.e2e.portal_check import assert_mirror_equals_portal


@pytest.fixture(autouse=True)
def short_pauses(monkeypatch):
    """The retry ladder as it is, with its pauses shrunk: tests count attempts, not seconds."""
    monkeypatch.setattr("adapters.http.FIRST_BACKOFF_S", 0.001)


@pytest.fixture
def config(tmp_path, b24_sandbox):
    path = tmp_path / "config.toml"
    path.write_text(f"""
[storage]
path = "{tmp_path / "mirror.db"}"

[[sources]]
name = "b24"
kind = "bitrix24"
webhook_url = "{b24_sandbox.webhook_url}"
""")
    return str(path)


@pytest.mark.parametrize(
    "knob, code, advice",
    [
        ("portal_deleted", "PORTAL_DELETED", "check the portal address in the config"),
        ("rest_blocked", "OVERLOAD_LIMIT", "only Bitrix24 support can lift; contact support"),
    ],
)
def test_a_whole_portal_answer_stops_the_sync_with_one_line(
    config, tmp_path, b24_sandbox, knob, code, advice
):
    setattr(b24_sandbox, knob, True)
    result = CliRunner().invoke(main, ["--config", config, "sync"])
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1, result.stderr
    assert "Bitrix24 source 'b24': " in errors[0] and code in errors[0] and advice in errors[0]
    assert errors[0].endswith("the source's other streams are not run")
    assert "sandboxsecret123" not in result.output
    assert len(b24_sandbox.request_log) == 1  # read, not retried
    assert "b24: 0 rows, 1 requests, 0/11 streams ok (failed: users; not run: 10 streams)" in result.stdout
    with sqlite3.connect(str(tmp_path / "mirror.db")) as conn:
        assert conn.execute("SELECT count(*) FROM users").fetchone()[0] == 0


def test_a_proxys_503_page_is_retried_without_slowing_the_sync(b24_dataset, tmp_path):
    # limits on, as on a real portal: taken for a limit answer, the page would hold every later
    # request of the sync to the bucket's drain of 2 a second
    with Bitrix24Sandbox(b24_dataset, limits=True) as srv:
        srv.fail_next("503")
        adapter = Bitrix24Adapter(
            SourceConfig(name="b24", kind="bitrix24", webhook_url=srv.webhook_url, max_workers=4), None
        )
        with Mirror(str(tmp_path / "mirror.db")) as mirror:
            results = sync_source(mirror, adapter)
            assert [r.status for r in results] == ["ok"] * len(results)
            first, retry = srv.request_log[:2]
            assert first["fault"] == "503" and first["status"] == 503
            assert retry["fault"] is None and retry["path"] == first["path"]
            assert adapter.client.limit_errors == 0 and srv.limit_errors == 0
            assert adapter.client.throttle.cuts == 0
            assert_mirror_equals_portal(mirror, srv, "b24")
        adapter.close()
