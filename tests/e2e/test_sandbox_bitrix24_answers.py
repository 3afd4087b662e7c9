"""The Bitrix24 sandbox answers as the REST docs say, on raw HTTP (no adapter in between):
the 60-second cap on one request, whole-portal errors, a proxy's 503 page, the token answer's
`client_endpoint` and `expires_in`, and field creation refused to a non-administrator."""

from __future__ import annotations

import requests

from sandbox.bitrix24 import Bitrix24Sandbox


def batch(srv, n: int) -> requests.Response:
    cmd = {f"p{k}": "crm.deal.list?start=-1&select[0]=ID" for k in range(n)}
    return requests.post(srv.webhook_url + "batch", json={"cmd": cmd}, timeout=10)


def test_a_request_past_60_seconds_of_server_time_is_cut(b24_dataset):
    with Bitrix24Sandbox(
        b24_dataset, limits=False, cost_model=True, page_cost_s=10.0, time_scale=0.001
    ) as srv:
        ok = batch(srv, 5)  # 50 s
        assert ok.status_code == 200
        times = ok.json()["result"]["result_time"]
        assert all(10.0 <= t["duration"] < 11.0 for t in times.values())  # server seconds
        cut = batch(srv, 7)  # 70 s
        assert cut.status_code == 504 and cut.headers["Content-Type"].startswith("text/html")
        assert srv.cut_requests == 1
        # the sub-calls run before the cut were charged to the method's operating time
        assert srv.operating.used("crm.deal.list")[0] >= 50 + 60


def test_whole_portal_answers_and_a_proxys_503(b24_sandbox):
    srv = b24_sandbox
    srv.portal_deleted = True
    r = requests.post(srv.webhook_url + "profile", timeout=10)
    assert (r.status_code, r.json()["error"]) == (500, "PORTAL_DELETED")
    srv.portal_deleted, srv.rest_blocked = False, True
    r = requests.post(srv.webhook_url + "profile", timeout=10)
    assert (r.status_code, r.json()["error"]) == (503, "OVERLOAD_LIMIT")
    srv.rest_blocked = False
    srv.fail_next("503")
    r = requests.post(srv.webhook_url + "profile", timeout=10)
    assert r.status_code == 503 and r.headers["Content-Type"].startswith("text/html")
    assert requests.post(srv.webhook_url + "profile", timeout=10).status_code == 200


def test_token_answers_name_the_rest_address_and_the_lifetime(b24_dataset):
    with Bitrix24Sandbox(b24_dataset, limits=False, rest_base="/moved/rest/", access_ttl_s=1800) as srv:
        tokens = requests.get(
            srv.oauth_url,
            params={
                "grant_type": "authorization_code",
                "client_id": "sandbox.app",
                "client_secret": "sandbox-secret",
                "code": srv.issue_code(),
            },
            timeout=10,
        ).json()
        assert tokens["client_endpoint"] == srv.url + "/moved/rest/" and tokens["expires_in"] == 1800
        auth = {"auth": tokens["access_token"]}
        assert requests.post(tokens["client_endpoint"] + "profile", json=auth, timeout=10).status_code == 200
        other = requests.post(srv.url + "/rest/profile", json=auth, timeout=10)
        assert (other.status_code, other.json()["error"]) == (401, "invalid_token")


def test_only_a_crm_administrator_may_add_a_field(b24_sandbox):
    srv = b24_sandbox
    srv.admin = False
    fields = {"fields": {"USER_TYPE_ID": "double", "FIELD_NAME": "KPI_X"}}
    r = requests.post(srv.webhook_url + "crm.contact.userfield.add", json=fields, timeout=10)
    assert r.status_code == 400 and r.json() == {"error": "", "error_description": "Access denied"}
    assert requests.post(srv.webhook_url + "profile", timeout=10).json()["result"]["ADMIN"] is False
    srv.admin = True
    r = requests.post(srv.webhook_url + "crm.contact.userfield.add", json=fields, timeout=10)
    assert r.status_code == 200 and isinstance(r.json()["result"], int)
