"""A refresh token the CRM no longer accepts, with `responses`, both CRMs.

Refused (invalid_grant / "Token has been revoked"), or the refresh's reply lost after it was
sent: a `ReauthoriseError` saying "re-authorise: run `crm-connector auth SOURCE`", after exactly
one token request, never a resend; a second thread that hits the same 401 does not send the
spent token again. A new pair is fsynced (file, then its directory) before its first use.
"""

import json
import os
import stat
import threading

import pytest
import requests
import responses

from adapters import redact
from adapters.bitrix24.client import Bitrix24Client
from adapters.errors import AuthError, ReauthoriseError
from connector.config.loader import SourceConfig
from connector.mirror.tokens import TokenStore
from tests.unit.test_amocrm_support import BASE, make_adapter

AMO_OAUTH = dict(
    access_token=None,
    client_id="integration-id",
    client_secret="client-secret-XYZ123",
    redirect_uri="https://example.com/oauth",
)
AMO_TOKEN_URL = BASE + "/oauth2/access_token"
AMO_ACCOUNT = BASE + "/api/v4/account"
PORTAL = "https://portal.example.test"
REVOKED = {
    "hint": "Token has been revoked",
    "title": "Некорректный запрос",
    "status": 401,
    "type": "https://developers.amocrm.ru/v3/errors/OAuthProblemJson",
}


@pytest.fixture
def amo(tmp_path):
    redact.register(AMO_OAUTH["client_secret"])
    a = make_adapter(tmp_path, **AMO_OAUTH)
    a.auth.tokens.save("main", {"access_token": "old-access-0001", "refresh_token": "spent-refresh-01"})
    yield a
    a.close()


@pytest.fixture
def b24(tmp_path):
    tokens = TokenStore(str(tmp_path / "t.json"))
    tokens.save("b24", {"access_token": "old-access-1", "refresh_token": "spent-refresh-1"})
    cfg = SourceConfig(
        name="b24",
        kind="bitrix24",
        portal_url=PORTAL,
        client_id="app",
        client_secret="shh-secret",
        requests_per_second=100.0,
    )
    client = Bitrix24Client(cfg, tokens)
    client.http.sleep = lambda s: None
    yield client
    client.close()


def token_requests(url: str) -> int:
    return sum(c.request.url.startswith(url) for c in responses.calls)


@pytest.mark.parametrize("status,body", [(401, REVOKED), (400, {"hint": "Refresh token expired"})])
@responses.activate
def test_amocrm_refused_refresh_says_reauthorise_after_one_attempt(amo, status, body):
    responses.get(AMO_ACCOUNT, status=401, json={"title": "Unauthorized"})
    responses.post(AMO_TOKEN_URL, status=status, json=body)
    with pytest.raises(ReauthoriseError) as err:
        amo.check()
    msg = str(err.value)
    assert msg.startswith("amoCRM source 'main': re-authorise: run `crm-connector auth main --code CODE`")
    assert body["hint"] in msg and "spent-refresh-01" not in msg and "client-secret-XYZ123" not in msg
    assert token_requests(AMO_TOKEN_URL) == 1


@pytest.mark.parametrize(
    "fault",
    [requests.ReadTimeout("read timed out"), requests.ConnectionError("Connection aborted: reset by peer")],
)
@responses.activate
def test_amocrm_lost_refresh_reply_is_not_resent_and_says_reauthorise(amo, fault):
    responses.get(AMO_ACCOUNT, status=401, json={"title": "Unauthorized"})
    responses.post(AMO_TOKEN_URL, body=fault)
    with pytest.raises(ReauthoriseError, match="re-authorise: .*the reply was lost.*most likely spent"):
        amo.check()
    assert token_requests(AMO_TOKEN_URL) == 1


@responses.activate
def test_amocrm_unreadable_200_to_a_refresh_means_the_new_token_is_lost(amo):
    responses.get(AMO_ACCOUNT, status=401, json={"title": "Unauthorized"})
    responses.post(AMO_TOKEN_URL, body='{"access_token": "eyJ', content_type="application/json")
    with pytest.raises(ReauthoriseError, match="new refresh token is lost"):
        amo.check()
    assert token_requests(AMO_TOKEN_URL) == 1


@responses.activate
def test_amocrm_token_endpoint_5xx_is_not_a_reauthorisation(amo):
    responses.get(AMO_ACCOUNT, status=401, json={"title": "Unauthorized"})
    responses.post(AMO_TOKEN_URL, status=503)
    with pytest.raises(AuthError) as err:
        amo.check()
    assert not isinstance(err.value, ReauthoriseError) and "next run tries again" in str(err.value)
    assert token_requests(AMO_TOKEN_URL) == 1


@responses.activate
def test_amocrm_wrong_client_secret_points_at_the_config_not_at_auth(amo):
    responses.get(AMO_ACCOUNT, status=401, json={"title": "Unauthorized"})
    responses.post(AMO_TOKEN_URL, status=401, json={"hint": "Client authentication failed"})
    with pytest.raises(AuthError, match="check client_id, client_secret and redirect_uri") as err:
        amo.check()
    assert not isinstance(err.value, ReauthoriseError)


@responses.activate
def test_amocrm_threads_hitting_the_same_401_send_the_spent_token_once(amo):
    responses.get(AMO_ACCOUNT, status=401, json={"title": "Unauthorized"})
    responses.post(AMO_TOKEN_URL, status=401, json=REVOKED)
    errors = []

    def worker():
        try:
            amo.check()
        except ReauthoriseError as err:
            errors.append(err)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(errors) == 4 and token_requests(AMO_TOKEN_URL) == 1


def b24_expired():
    responses.post(
        f"{PORTAL}/rest/profile",
        status=401,
        json={"error": "expired_token", "error_description": "The access token provided has expired."},
    )


@responses.activate
def test_bitrix24_invalid_grant_says_reauthorise_not_try_again_later(b24):
    b24_expired()
    responses.get(
        b24.cfg.oauth_url,
        status=400,
        json={"error": "invalid_grant", "error_description": "Invalid refresh token"},
    )
    with pytest.raises(ReauthoriseError) as err:
        b24.call("profile")
    msg = str(err.value)
    assert msg.startswith("Bitrix24 source 'b24': re-authorise: run `crm-connector auth b24`")
    assert "later" not in msg and "spent-refresh-1" not in msg and "shh-secret" not in msg
    assert token_requests(b24.cfg.oauth_url) == 1


@pytest.mark.parametrize(
    "reply",
    [
        dict(body=requests.ReadTimeout("read timed out")),
        dict(body='{"access_token": "a', content_type="application/json"),
    ],
)
@responses.activate
def test_bitrix24_lost_or_cut_refresh_reply_says_reauthorise_after_one_attempt(b24, reply):
    b24_expired()
    responses.get(b24.cfg.oauth_url, **reply)
    with pytest.raises(ReauthoriseError, match="most likely spent") as err:
        b24.call("profile")
    assert "later" not in str(err.value)
    assert token_requests(b24.cfg.oauth_url) == 1


@responses.activate
def test_bitrix24_oauth_server_5xx_keeps_the_token_for_the_next_run(b24):
    b24_expired()
    responses.get(b24.cfg.oauth_url, status=502, body="<html>Bad gateway</html>")
    with pytest.raises(AuthError, match="next run tries again") as err:
        b24.call("profile")
    assert not isinstance(err.value, ReauthoriseError)
    assert token_requests(b24.cfg.oauth_url) == 1


@responses.activate
def test_bitrix24_a_refused_token_is_not_sent_again_by_the_next_call(b24):
    b24_expired()
    responses.get(b24.cfg.oauth_url, status=400, json={"error": "invalid_grant"})
    for _ in range(3):
        with pytest.raises(ReauthoriseError):
            b24.call("profile")
    assert token_requests(b24.cfg.oauth_url) == 1


@responses.activate
def test_new_pair_is_fsynced_file_and_directory_before_its_first_use(amo, monkeypatch):
    events = []
    real_fsync = os.fsync

    def fsync(fd):
        events.append("fsync dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    responses.get(AMO_ACCOUNT, status=401, json={"title": "Unauthorized"})
    responses.post(
        AMO_TOKEN_URL,
        json={
            "token_type": "Bearer",
            "expires_in": 86400,
            "access_token": "new-access-0002",
            "refresh_token": "new-refresh-02",
        },
    )

    def account(request):
        events.append("used " + request.headers["Authorization"].split()[-1])
        return 200, {}, json.dumps({"id": 1, "name": "Acme", "subdomain": "acme"})

    responses.add_callback("GET", AMO_ACCOUNT, callback=account)
    amo.check()
    assert events == ["fsync file", "fsync dir", "used new-access-0002"]


@responses.activate
def test_bitrix24_invalid_token_is_refreshed_too_so_a_spent_pair_is_named(b24):
    # A refresh whose reply was lost killed the access token issued with it: invalid, not expired.
    responses.post(
        f"{PORTAL}/rest/profile",
        status=401,
        json={"error": "invalid_token", "error_description": "The access token provided is invalid."},
    )
    responses.get(b24.cfg.oauth_url, status=400, json={"error": "invalid_grant"})
    with pytest.raises(ReauthoriseError, match="re-authorise: run `crm-connector auth b24`"):
        b24.call("profile")
    assert token_requests(b24.cfg.oauth_url) == 1
