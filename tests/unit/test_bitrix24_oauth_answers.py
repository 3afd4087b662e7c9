"""What Bitrix24's token answers and field refusals say, taken at their word (`responses`).

- Calls go to the `client_endpoint` the token answer names, not to the configured portal
  (never to a plain-http one for an https portal).
- The access token's lifetime is the answer's `expires_in`, on this machine's clock: a token
  past it is renewed before it is sent; a token within it is used, whatever the server's own
  clock said in `expires`.
- `crm.*.userfield.add` refused with "Access denied" says only a CRM administrator may create
  fields, and what to do.
"""

from __future__ import annotations

import json

import pytest
import responses

from adapters.bitrix24.client import Bitrix24Client
from adapters.bitrix24.fields import create_field
from adapters.errors import NotPermitted
from connector.config.loader import SourceConfig
from connector.mirror.tokens import TokenStore

PORTAL = "https://portal.example.com"
MOVED = "https://portal-renamed.bitrix24.eu/rest/"
OAUTH = "https://oauth.bitrix.info/oauth/token/"


def client(tmp_path) -> Bitrix24Client:
    cfg = SourceConfig(
        name="b24",
        kind="bitrix24",
        portal_url=PORTAL,
        client_id="app",
        client_secret="shh-secret",
        requests_per_second=100.0,
    )
    return Bitrix24Client(cfg, TokenStore(str(tmp_path / "tokens.json")))


def token_answer(n: int, endpoint: str = MOVED, expires_in=3600, expires=1_000_000_000) -> dict:
    # `expires`: the server's clock, here far behind ours; `expires_in`: the lifetime
    return {
        "access_token": f"access-{n}",
        "refresh_token": f"refresh-{n}",
        "expires": expires,
        "expires_in": expires_in,
        "client_endpoint": endpoint,
        "server_endpoint": "https://oauth.bitrix.info/rest/",
        "domain": "portal-renamed.bitrix24.eu",
        "member_id": "m1",
        "user_id": 1,
    }


def profile_answer(request):
    return 200, {}, json.dumps({"result": {"ID": 1, "auth": json.loads(request.body)["auth"]}})


@responses.activate
def test_calls_go_to_the_client_endpoint_of_the_token_answer(tmp_path):
    c = client(tmp_path)
    responses.get(OAUTH, json=token_answer(1))
    responses.add_callback("POST", MOVED + "profile", callback=profile_answer)
    c.exchange_code("code-1")
    assert c.call("profile")["result"]["auth"] == "access-1"
    assert [r.request.url.split("?")[0] for r in responses.calls] == [OAUTH, MOVED + "profile"]


@responses.activate
def test_a_plain_http_client_endpoint_is_not_trusted_with_an_https_portals_token(tmp_path):
    c = client(tmp_path)
    responses.get(OAUTH, json=token_answer(1, endpoint="http://portal-renamed.bitrix24.eu/rest/"))
    responses.add_callback("POST", PORTAL + "/rest/profile", callback=profile_answer)
    c.exchange_code("code-1")
    assert c.call("profile")["result"]["ID"] == 1


@responses.activate
def test_the_token_lifetime_is_expires_in_on_our_clock(tmp_path):
    c = client(tmp_path)
    now = [2_000_000_000.0]
    c.oauth.clock = lambda: now[0]
    responses.get(OAUTH, json=token_answer(1, expires_in=1800))
    responses.get(OAUTH, json=token_answer(2, expires_in=1800))
    responses.add_callback("POST", MOVED + "profile", callback=profile_answer)
    c.exchange_code("code-1")
    # within its half hour: sent as it is, though the server's `expires` lies in our past
    now[0] += 1500
    assert c.call("profile")["result"]["auth"] == "access-1"
    assert len(responses.calls) == 2
    # past it: renewed before it is sent, so no call is refused for it
    now[0] += 400
    assert c.call("profile")["result"]["auth"] == "access-2"
    urls = [r.request.url.split("?")[0] for r in responses.calls]
    assert urls == [OAUTH, MOVED + "profile", OAUTH, MOVED + "profile"]
    assert "refresh_token=refresh-1" in responses.calls[2].request.url


@responses.activate
def test_a_refused_field_creation_says_only_a_crm_administrator_may_create_fields():
    hook = "https://portal.example.com/rest/1/s3cretcode/"
    c = Bitrix24Client(SourceConfig(name="b24", kind="bitrix24", webhook_url=hook, requests_per_second=100.0))
    responses.post(
        hook + "crm.contact.userfield.add",
        status=400,
        json={"error": "", "error_description": "Access denied"},
    )
    with pytest.raises(NotPermitted) as err:
        create_field(c, "contact", "KPI_WIN_RATE", "KPI: Win rate, %")
    line = str(err.value)
    assert "only a CRM administrator may create custom fields" in line
    assert "UF_CRM_KPI_WIN_RATE ('KPI: Win rate, %')" in line and "code KPI_WIN_RATE" in line
    assert "s3cretcode" not in line and "\n" not in line
    assert len(responses.calls) == 1  # a refusal is not retried
