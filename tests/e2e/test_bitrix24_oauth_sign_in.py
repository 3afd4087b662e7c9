"""`crm-connector auth SOURCE` for a Bitrix24 OAuth app, end to end against the sandbox.

The command runs as a real process. The test plays the browser: it opens the printed authorize
URL on the sandbox portal, which redirects (as a signed-in, consenting user) to the app's
redirect URI, where the command listens on 127.0.0.1; the command trades the 30-second code at
once and saves the tokens (0600). A code older than 30 s (the sandbox's OAuth clock moved on,
no sleeping) fails with a message that says so. No secret reaches the output.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

SECRET = "sandbox-secret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def app(b24_sandbox, tmp_path):
    """A config with one OAuth source on the sandbox; the sandbox knows the app's redirect URI."""
    redirect = f"http://127.0.0.1:{free_port()}/bitrix24"
    b24_sandbox.oauth.redirect_uri = redirect
    path = tmp_path / "config.toml"
    path.write_text(f"""
[storage]
path = "{tmp_path / "mirror.db"}"
token_path = "{tmp_path / "tokens.json"}"

[[sources]]
name = "b24"
kind = "bitrix24"
portal_url = "{b24_sandbox.url}"
client_id = "sandbox.app"
client_secret = "{SECRET}"
oauth_url = "{b24_sandbox.oauth_url}"
redirect_uri = "{redirect}"
""")
    return b24_sandbox, str(path), tmp_path / "tokens.json"


def start_auth(config: str) -> tuple[subprocess.Popen, str]:
    """Run `auth b24` and read the URL it prints once it listens."""
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.Popen(
        [sys.executable, "-m", "connector", "--config", config, "auth", "b24", "--timeout", "30"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    shown = []
    for line in proc.stdout:
        shown.append(line)
        if "/oauth/authorize/" in line:
            return proc, "".join(shown)
    proc.kill()
    raise AssertionError("no authorize URL printed: " + "".join(shown) + proc.stderr.read())


def authorize_url(printed: str) -> str:
    return next(w for w in printed.split() if "/oauth/authorize/" in w)


def test_sign_in_in_the_browser_saves_tokens(app):
    srv, config, token_file = app
    proc, printed = start_auth(config)
    url = authorize_url(printed)
    assert url.startswith(f"{srv.url}/oauth/authorize/?")
    assert parse_qs(urlsplit(url).query)["client_id"] == ["sandbox.app"]

    page = requests.get(url, timeout=20)  # the browser follows the portal's redirect
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert page.status_code == 200 and "Signed in" in page.text
    assert page.url.startswith(srv.oauth.redirect_uri + "?code=")
    assert out.strip().splitlines()[-1] == (
        f"source 'b24': authorized for 127.0.0.1:{srv.port} (user 1); tokens saved"
    )

    assert stat.S_IMODE(os.stat(token_file).st_mode) == 0o600
    pair = json.loads(token_file.read_text())["b24"]
    srv.oauth.check(pair["access_token"])  # the sandbox accepts the saved token
    code = parse_qs(urlsplit(page.url).query)["code"][0]
    for secret in (SECRET, pair["access_token"], pair["refresh_token"], code):
        assert secret not in printed + out + err + page.text


def test_a_code_older_than_30_seconds_fails_clearly(app):
    srv, config, token_file = app
    proc, printed = start_auth(config)
    redirect = requests.get(authorize_url(printed), allow_redirects=False, timeout=20)
    assert redirect.status_code == 302
    srv.oauth.advance(31)  # the user took 31 s to get back
    page = requests.get(redirect.headers["Location"], timeout=20)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 1
    assert "expired (a code lives 30 seconds)" in err and "crm-connector auth b24" in err
    assert page.status_code == 400 and "expired" in page.text
    assert not token_file.exists()
    assert SECRET not in printed + out + err + page.text


def test_a_code_within_30_seconds_still_works(app):
    srv, config, token_file = app
    proc, printed = start_auth(config)
    redirect = requests.get(authorize_url(printed), allow_redirects=False, timeout=20)
    srv.oauth.advance(29)
    assert requests.get(redirect.headers["Location"], timeout=20).status_code == 200
    proc.communicate(timeout=20)
    assert proc.returncode == 0 and token_file.exists()


def test_the_portal_rejects_an_unknown_app_and_a_foreign_redirect(app):
    srv, _, _ = app
    base = f"{srv.url}/oauth/authorize/"
    unknown = requests.get(
        base, params={"client_id": "other.app", "state": "x"}, allow_redirects=False, timeout=10
    )
    assert unknown.status_code == 400 and unknown.json()["error"] == "invalid_client"
    foreign = requests.get(
        base,
        params={"client_id": "sandbox.app", "state": "x", "redirect_uri": "http://evil.example/cb"},
        allow_redirects=False,
        timeout=10,
    )
    assert foreign.status_code == 400 and foreign.json()["error"] == "invalid_request"
    ok = requests.get(
        base, params={"client_id": "sandbox.app", "state": "s1"}, allow_redirects=False, timeout=10
    )
    query = parse_qs(urlsplit(ok.headers["Location"]).query)
    assert query["state"] == ["s1"] and {"code", "domain", "member_id", "scope", "server_domain"} <= set(
        query
    )


def test_amocrm_keeps_code_by_hand_and_says_so_without_it(amo_dataset, tmp_path):
    from click.testing import CliRunner

    from connector.cli import main
    from sandbox.amocrm import AmoSandbox

    with AmoSandbox(amo_dataset, limits=False, access_token=None) as server:
        config = tmp_path / "config.toml"
        config.write_text(f"""
[storage]
path = "{tmp_path / "mirror.db"}"

[[sources]]
name = "amo"
kind = "amocrm"
base_url = "{server.url}"
client_id = "{server.client_id}"
client_secret = "{server.client_secret}"
redirect_uri = "{server.redirect_uri}"
""")
        run = CliRunner().invoke(
            main, ["--config", str(config), "auth", "amo", "--code", server.issue_code()]
        )
        assert run.exit_code == 0 and "authorised; tokens saved" in run.output, run.output
        bare = CliRunner().invoke(main, ["--config", str(config), "auth", "amo"])
        assert bare.exit_code == 1
        assert "crm-connector auth amo --code CODE" in bare.output
        assert server.client_secret not in run.output + bare.output
