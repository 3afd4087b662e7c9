"""amoCRM OAuth with `responses`: code exchange, refresh on 401, rotation persisted before use."""

import json

import pytest
import responses

from adapters import redact
from adapters.errors import AuthError
from tests.unit.test_amocrm_support import BASE, make_adapter

OAUTH = dict(
    access_token=None,
    client_id="integration-id",
    client_secret="client-secret-XYZ123",
    redirect_uri="https://example.com/oauth",
)
TOKEN_URL = BASE + "/oauth2/access_token"
ACCOUNT = BASE + "/api/v4/account"


@pytest.fixture
def oauth(tmp_path):
    redact.register(OAUTH["client_secret"])
    a = make_adapter(tmp_path, **OAUTH)
    yield a
    a.close()


def saved(adapter):
    with open(adapter.auth.tokens.path) as fh:
        return json.load(fh)["main"]


def grant(access, refresh):
    return {
        "token_type": "Bearer",
        "expires_in": 86400,
        "server_time": 1,
        "access_token": access,
        "refresh_token": refresh,
    }


@responses.activate
def test_oauth_without_saved_pair_says_run_auth(oauth):
    with pytest.raises(AuthError, match=r"crm-connector auth main --code CODE"):
        oauth.check()
    assert len(responses.calls) == 0


@responses.activate
def test_exchange_code_saves_pair_and_returns_safe_message(oauth):
    responses.post(TOKEN_URL, json=grant("access-AAA-111111", "refresh-RRR-111111"))
    msg = oauth.exchange_code("def502-code")
    body = json.loads(responses.calls[0].request.body)
    assert body == {
        "client_id": "integration-id",
        "client_secret": "client-secret-XYZ123",
        "redirect_uri": "https://example.com/oauth",
        "grant_type": "authorization_code",
        "code": "def502-code",
    }
    assert "Authorization" not in responses.calls[0].request.headers
    pair = saved(oauth)
    assert pair["access_token"] == "access-AAA-111111" and pair["refresh_token"] == "refresh-RRR-111111"
    assert pair["expires_at"].endswith("Z")
    assert "authorised" in msg and "access-AAA" not in msg and "refresh-RRR" not in msg
    import os

    assert os.stat(oauth.auth.tokens.path).st_mode & 0o777 == 0o600
    responses.get(ACCOUNT, json={"id": 1, "name": "A", "subdomain": "a"})
    oauth.check()
    assert responses.calls[1].request.headers["Authorization"] == "Bearer access-AAA-111111"


@responses.activate
def test_exchange_code_rejected(oauth):
    responses.post(TOKEN_URL, status=400, json={"hint": "Authorization code has been revoked", "status": 400})
    with pytest.raises(AuthError) as err:
        oauth.exchange_code("old-code")
    assert "code has been revoked" in str(err.value) and "fresh code" in str(err.value)
    assert "client-secret-XYZ123" not in str(err.value)


@responses.activate
def test_401_refreshes_once_persists_before_retry(oauth):
    oauth.auth.tokens.save("main", {"access_token": "old-access-0001", "refresh_token": "old-refresh-0001"})
    seen = []

    def account(request):
        auth = request.headers["Authorization"]
        seen.append((auth, saved(oauth)["access_token"]))  # what is on disk at send time
        if auth == "Bearer old-access-0001":
            return 401, {}, json.dumps({"title": "Unauthorized", "status": 401})
        return 200, {}, json.dumps({"id": 1, "name": "Acme", "subdomain": "acme"})

    responses.add_callback(responses.GET, ACCOUNT, callback=account)
    responses.post(TOKEN_URL, json=grant("new-access-0002", "new-refresh-0002"))
    assert "Acme" in oauth.check()
    posts = [c for c in responses.calls if c.request.method == "POST"]
    assert len(posts) == 1
    body = json.loads(posts[0].request.body)
    assert body["grant_type"] == "refresh_token" and body["refresh_token"] == "old-refresh-0001"
    assert body["redirect_uri"] == "https://example.com/oauth"
    # the retried request went out only after the new pair was on disk
    assert seen == [
        ("Bearer old-access-0001", "old-access-0001"),
        ("Bearer new-access-0002", "new-access-0002"),
    ]
    assert saved(oauth)["refresh_token"] == "new-refresh-0002"


@responses.activate
def test_second_401_after_refresh_is_auth_error_no_second_refresh(oauth):
    oauth.auth.tokens.save("main", {"access_token": "old-access-0001", "refresh_token": "r-0001xx"})
    responses.get(ACCOUNT, status=401, json={"title": "Unauthorized"})
    responses.post(TOKEN_URL, json=grant("new-access-0002", "r-0002xx"))
    with pytest.raises(AuthError, match="even after a refresh"):
        oauth.check()
    assert [c.request.method for c in responses.calls] == ["GET", "POST", "GET"]


@responses.activate
def test_revoked_refresh_token_tells_admin_to_reauthorise(oauth):
    oauth.auth.tokens.save("main", {"access_token": "old-access-0001", "refresh_token": "spent-refresh-01"})
    responses.get(ACCOUNT, status=401, json={"title": "Unauthorized"})
    responses.post(
        TOKEN_URL,
        status=401,
        json={
            "hint": "Token has been revoked",
            "title": "Некорректный запрос",
            "status": 401,
            "type": "https://developers.amocrm.ru/v3/errors/OAuthProblemJson",
        },
    )
    with pytest.raises(AuthError) as err:
        oauth.check()
    msg = str(err.value)
    assert "Token has been revoked" in msg and "crm-connector auth main --code CODE" in msg
    assert "spent-refresh-01" not in msg and "client-secret-XYZ123" not in msg
    assert [c.request.method for c in responses.calls] == ["GET", "POST"]  # no refresh loop


@responses.activate
def test_pair_refreshed_elsewhere_is_reused_without_refreshing(oauth):
    oauth.auth.tokens.save("main", {"access_token": "old-access-0001", "refresh_token": "r-0001xx"})

    def account(request):
        if request.headers["Authorization"] == "Bearer old-access-0001":
            # meanwhile another process refreshed and saved a new pair
            oauth.auth.tokens.save(
                "main", {"access_token": "other-access-03", "refresh_token": "other-refresh-03"}
            )
            return 401, {}, "{}"
        return 200, {}, json.dumps({"id": 1, "name": "Acme", "subdomain": "acme"})

    responses.add_callback(responses.GET, ACCOUNT, callback=account)
    oauth.check()
    assert [c.request.method for c in responses.calls] == ["GET", "GET"]
    assert responses.calls[1].request.headers["Authorization"] == "Bearer other-access-03"


def test_oauth_keys_missing_is_auth_error(tmp_path):
    a = make_adapter(tmp_path, access_token=None, client_id="x")
    with pytest.raises(AuthError, match="client_secret"):
        a.exchange_code("code")
