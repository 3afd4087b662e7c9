"""A spent refresh token on both sandboxes' OAuth, through the CLI.

The sandboxes rotate refresh tokens (single use). The test loses the reply of the connector's
own refresh: the sandbox rotates, then cuts the body in half, so the stored refresh token is
spent and the new one is gone. That sync, and the next one (which sends the spent token once
and is refused), each end with exit 1 and one line saying "re-authorise: run
`crm-connector auth SOURCE`", send one re-authorise alert through [notify] (the channel is
mocked), and make exactly one token request. Re-authorising with a fresh code then syncs.
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from connector.cli import main
from tests.e2e.portal_scenarios import on_request

AMO = ("amo", "/oauth2/access_token", "/api/")
B24 = ("b24", "/oauth/token", "/rest/")


@pytest.fixture
def alerts(monkeypatch):
    sent = []
    monkeypatch.setattr(
        "connector.run.notify.apprise_sender", lambda urls: lambda title, body: sent.append((title, body))
    )
    return sent


def config(tmp_path, source: str) -> str:
    path = tmp_path / "config.toml"
    path.write_text(f"""
[storage]
path = "{tmp_path / "mirror.db"}"

[notify]
urls = ["json://127.0.0.1:9/alerts"]

{source}
""")
    return str(path)


@pytest.fixture
def amo(tmp_path, amo_sandbox):
    srv = amo_sandbox
    return srv, config(
        tmp_path,
        f"""[[sources]]
name = "amo"
kind = "amocrm"
base_url = "{srv.url}"
client_id = "{srv.client_id}"
client_secret = "{srv.client_secret}"
redirect_uri = "{srv.redirect_uri}"
requests_per_second = 100.0
""",
    )


@pytest.fixture
def b24(tmp_path, b24_sandbox):
    srv = b24_sandbox
    return srv, config(
        tmp_path,
        f"""[[sources]]
name = "b24"
kind = "bitrix24"
portal_url = "{srv.url}"
client_id = "sandbox.app"
client_secret = "sandbox-secret"
oauth_url = "{srv.oauth_url}"
requests_per_second = 100.0
""",
    )


def cli(path: str, *args):
    result = CliRunner().invoke(main, ["--config", path, *args])
    return result.exit_code, result.stdout, result.stderr


def token_requests(srv, token_path: str) -> int:
    return len(srv.requests_to(token_path))


def lose_next_refresh_reply(srv, api_prefix: str) -> None:
    """The first API call after this gets 401 (expired); the refresh it causes is served by a
    sandbox that rotates the token and then cuts the reply in half."""
    srv.expire_access_tokens()
    on_request(srv, lambda req: req.path.startswith(api_prefix), lambda: srv.fail_next("truncated"), nth=1)


def assert_locked_out(srv, path, name, token_path, alerts, code, err) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1, err
    assert len(lines) == 1, err
    assert f"re-authorise: run `crm-connector auth {name}" in lines[0]
    assert "later" not in lines[0] and "the source's other streams are not run" in lines[0]
    assert token_requests(srv, token_path) == 1
    assert len(alerts) == 1 and alerts[0][0] == f"crm-connector: re-authorise source '{name}'"
    assert f"crm-connector auth {name}" in alerts[0][1]


@pytest.mark.parametrize("crm", ["amo", "b24"])
def test_a_lost_refresh_reply_locks_the_source_out_and_says_so_once(crm, request, alerts):
    srv, path = request.getfixturevalue(crm)
    name, token_path, api_prefix = AMO if crm == "amo" else B24
    code, out, err = cli(path, "auth", name, "--code", srv.issue_code())
    assert code == 0, err
    code, out, err = cli(path, "sync", "--stream", "users")
    assert code == 0, err

    srv.clear_log()
    lose_next_refresh_reply(srv, api_prefix)
    code, out, err = cli(path, "sync")
    assert_locked_out(srv, path, name, token_path, alerts, code, err)
    assert "new refresh token is lost" in err or "most likely spent" in err

    # The next run: the stored refresh token is spent; it is sent once, refused, not resent.
    srv.clear_log()
    alerts.clear()
    srv.expire_access_tokens()
    code, out, err = cli(path, "sync")
    assert_locked_out(srv, path, name, token_path, alerts, code, err)
    assert "refused" in err

    # Doing what the line says works.
    code, out, err = cli(path, "auth", name, "--code", srv.issue_code())
    assert code == 0, err
    code, out, err = cli(path, "sync")
    assert code == 0, err
