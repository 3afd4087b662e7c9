"""The loopback catcher behind `crm-connector auth` (adapters/oauth_redirect.py) and the
Bitrix24 sign-in's refusals: clear messages, nothing of the code or the secret shown."""

from __future__ import annotations

import socket
import threading

import pytest
import requests

from adapters.bitrix24 import auth
from adapters.errors import AuthError
from adapters.oauth_redirect import RedirectCatcher


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    "uri",
    [
        "https://example.com/oauth",
        "http://127.0.0.1/cb",
        "https://127.0.0.1:8765/cb",
        "http://10.0.0.5:8765/cb",
    ],
)
def test_redirect_uri_must_be_plain_http_on_this_machine_with_a_port(uri):
    with pytest.raises(AuthError, match="redirect_uri must be http://127.0.0.1:PORT"):
        RedirectCatcher(uri, "b24")


def test_a_busy_port_is_named():
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        with pytest.raises(AuthError, match=f"cannot listen on 127.0.0.1:{port}"):
            RedirectCatcher(f"http://127.0.0.1:{port}/cb", "b24")


def test_no_redirect_within_the_timeout():
    catcher = RedirectCatcher(f"http://127.0.0.1:{free_port()}/cb", "b24")
    with pytest.raises(
        AuthError,
        match=r"no sign-in redirect arrived within 0.2 s; run "
        r"`crm-connector auth b24` again",
    ):
        catcher.wait("s", 0.2, lambda code: "never")


def browse(uri: str, catcher: RedirectCatcher, state: str, paths: list[str]):
    """Run catcher.wait in a thread while the 'browser' requests `paths`."""
    got, used = {}, []

    def serve():
        try:
            got["message"] = catcher.wait(state, 10, lambda code: used.append(code) or "done")
        except AuthError as err:
            got["error"] = str(err)

    t = threading.Thread(target=serve)
    t.start()
    pages = [requests.get(uri.rsplit("/", 1)[0] + p, timeout=5) for p in paths]
    t.join(10)
    return got, used, pages


def test_other_paths_are_ignored_and_the_code_is_used_once():
    uri = f"http://127.0.0.1:{free_port()}/cb"
    got, used, pages = browse(
        uri, RedirectCatcher(uri, "b24"), "s1", ["/favicon.ico", "/cb?code=abc&state=s1"]
    )
    assert [p.status_code for p in pages] == [404, 200]
    assert got == {"message": "done"} and used == ["abc"]


def test_a_foreign_state_is_refused_without_using_the_code():
    uri = f"http://127.0.0.1:{free_port()}/cb"
    got, used, pages = browse(uri, RedirectCatcher(uri, "b24"), "s1", ["/cb?code=abc&state=zz"])
    assert pages[0].status_code == 400 and used == []
    assert "state does not match" in got["error"] and "abc" not in pages[0].text


def test_a_refusal_from_the_portal_is_reported():
    uri = f"http://127.0.0.1:{free_port()}/cb"
    got, used, _ = browse(uri, RedirectCatcher(uri, "b24"), "s1", ["/cb?error=access_denied&state=s1"])
    assert "sign-in refused by the CRM (access_denied)" in got["error"] and used == []


class FakeClient:
    name, uses_webhook = "b24", False

    def __init__(self, **cfg):
        self.cfg = type(
            "Cfg",
            (),
            {"portal_url": "https://p.bitrix24.ru", "client_id": "local.1", "redirect_uri": None, **cfg},
        )


def test_bitrix24_oauth_without_redirect_uri_says_which_key_to_set():
    with pytest.raises(AuthError, match="set redirect_uri .* catch the 30-second code"):
        auth.sign_in(FakeClient(), print)


def test_bitrix24_authorize_url_has_the_documented_parameters():
    assert (
        auth.authorize_url("https://p.bitrix24.ru", "local.1", "xyz")
        == "https://p.bitrix24.ru/oauth/authorize/?client_id=local.1&state=xyz"
    )
