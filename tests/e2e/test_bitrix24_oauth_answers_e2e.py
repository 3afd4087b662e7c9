"""Bitrix24 token answers and field refusals, end to end against the sandbox.

- The portal's REST address (the token answer's `client_endpoint`) is not the configured
  portal URL's /rest/: `auth` then `sync` call it, and the mirror equals the portal.
- An access token past the lifetime its answer gave (`expires_in`) is renewed before it is
  sent: no call is refused for it.
- A webhook user who is not a CRM administrator: `kpi` cannot create the KPI fields; it exits 1
  with one line saying only a CRM administrator may create fields. With an administrator's
  rights the same command writes the KPIs.
"""

from __future__ import annotations

import sqlite3
import time

import pytest
from click.testing import CliRunner

from adapters.bitrix24.adapter import Bitrix24Adapter
from connector.cli import main
from connector.config.loader import SourceConfig
from connector.mirror.store import Mirror
from connector.mirror.tokens import TokenStore
from connector.run.sync import sync_source
from sandbox.bitrix24 import Bitrix24Sandbox
from tests.e2e.portal_check import assert_mirror_equals_portal


def cli(path: str, *args):
    result = CliRunner().invoke(main, ["--config", path, *args])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def moved(b24_dataset):
    with Bitrix24Sandbox(b24_dataset, limits=False, rest_base="/portal-renamed/rest/") as srv:
        yield srv


def test_calls_go_to_the_client_endpoint_the_token_answer_names(moved, tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(f"""
[storage]
path = "{tmp_path / "mirror.db"}"
token_path = "{tmp_path / "tokens.json"}"

[[sources]]
name = "b24"
kind = "bitrix24"
portal_url = "{moved.url}"
client_id = "sandbox.app"
client_secret = "sandbox-secret"
oauth_url = "{moved.oauth_url}"
""")
    code, out, err = cli(str(path), "auth", "b24", "--code", moved.issue_code())
    assert code == 0, err
    code, out, err = cli(str(path), "sync")
    assert code == 0, err
    calls = [r for r in moved.request_log if "/oauth/" not in r["path"]]
    assert calls and all(r["path"].startswith("/portal-renamed/rest/") for r in calls)
    assert all(r["status"] == 200 for r in calls)
    assert moved.oauth.refreshes == 0
    with Mirror(str(tmp_path / "mirror.db")) as mirror:
        assert_mirror_equals_portal(mirror, moved, "b24")


def test_a_token_past_its_lifetime_is_renewed_before_it_is_sent(b24_sandbox, tmp_path):
    srv = b24_sandbox
    adapter = Bitrix24Adapter(
        SourceConfig(
            name="b24",
            kind="bitrix24",
            portal_url=srv.url,
            client_id="sandbox.app",
            client_secret="sandbox-secret",
            oauth_url=srv.oauth_url,
            requests_per_second=100.0,
        ),
        TokenStore(str(tmp_path / "tokens.json")),
    )
    adapter.exchange_code(srv.issue_code())
    # an hour and a minute later, on both clocks (the sandbox gives tokens an hour)
    srv.oauth.advance(3660)
    adapter.client.oauth.clock = lambda: time.time() + 3660
    with Mirror(str(tmp_path / "mirror.db")) as mirror:
        results = sync_source(mirror, adapter, streams=["users", "pipelines"])
        assert [r.status for r in results] == ["ok", "ok"], [r.error for r in results]
        assert_mirror_equals_portal(mirror, srv, "b24", tables=("users", "pipelines", "stages"))
    adapter.close()
    assert srv.oauth.refreshes == 1
    assert [r["status"] for r in srv.request_log if r["status"] == 401] == []


def test_kpi_without_crm_admin_rights_says_who_may_create_fields(b24_sandbox, tmp_path):
    srv = b24_sandbox
    path = tmp_path / "config.toml"
    path.write_text(f"""
[storage]
path = "{tmp_path / "mirror.db"}"

[[sources]]
name = "b24"
kind = "bitrix24"
webhook_url = "{srv.webhook_url}"
requests_per_second = 100.0

[kpi]
targets = ["contact"]

[kpi.fields]
win_rate = "KPI: Win rate, %"
""")
    code, out, err = cli(str(path), "sync")
    assert code == 0, err
    srv.admin = False
    code, out, err = cli(str(path), "kpi")
    assert code == 1
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    assert "only a CRM administrator may create custom fields" in lines[0]
    assert "UF_CRM_KPI_WIN_RATE ('KPI: Win rate, %')" in lines[0]
    assert "Traceback" not in err and "sandboxsecret123" not in err
    assert not any(name.startswith("UF_CRM_KPI") for name, _ in srv.portal.vocab.uf_fields("contact"))

    srv.admin = True  # the webhook's user made a CRM administrator: the same command works
    code, out, err = cli(str(path), "kpi")
    assert code == 0, err
    assert any(name == "UF_CRM_KPI_WIN_RATE" for name, _ in srv.portal.vocab.uf_fields("contact"))
    with sqlite3.connect(str(tmp_path / "mirror.db")) as conn:
        assert conn.execute("SELECT count(*) FROM writeback_log WHERE status = 'ok'").fetchone()[0] > 0
