"""The amoCRM sandbox server beyond reads: custom fields and write-back, OAuth and token
expiry, rate limits and blocking, forced and seeded faults, HTTPS."""

import json

import pytest
import requests

from sandbox.amocrm import AmoSandbox
from sandbox.data import generate
from tests.fixtures_amocrm import all_pages, get


# ---- custom fields and write-back ------------------------------------------------------------
def test_custom_fields_paged_by_50_and_created_by_post(amo_dataset, amo_sandbox, amo_headers):
    url = amo_sandbox.url + "/api/v4/companies/custom_fields"
    payload = [
        {"type": "numeric", "name": f"KPI {i}", "code": f"KPI_{i}", "is_api_only": True} for i in range(60)
    ]
    r = requests.post(url, json=payload, headers=amo_headers, timeout=5)
    assert r.status_code == 201
    created = r.json()["_embedded"]["custom_fields"]
    assert len(created) == 60 and created[0]["type"] == "numeric" and created[0]["is_api_only"]
    # At most 50 a page whatever limit asks, but pages step by the limit asked, as in amoCRM:
    # limit=250 serves fields 1-50 and nothing links to 51-63.
    first = requests.get(url, params={"limit": 250}, headers=amo_headers, timeout=5).json()
    assert len(first["_embedded"]["custom_fields"]) == 50 and "next" not in first["_links"]
    assert (
        requests.get(url, params={"limit": 250, "page": 2}, headers=amo_headers, timeout=5).status_code == 204
    )
    fields, pages = all_pages(amo_sandbox, "/api/v4/companies/custom_fields", amo_headers, limit=50)
    assert pages == 2 and len(fields) == 63
    r = requests.post(
        url, json=[{"type": "numeric", "name": "Dup", "code": "KPI_1"}], headers=amo_headers, timeout=5
    )
    assert r.status_code == 400 and r.json()["validation-errors"][0]["request_id"] == "0"


def test_patch_changes_later_reads_and_bumps_updated_at(amo_dataset, amo_sandbox, amo_headers):
    f = amo_dataset.add_field("contact", "KPI: Win rate, %", "numeric", code="KPI_WIN_RATE")
    a, b = [c for c in amo_dataset.contacts if not c["is_deleted"]][:2]
    old = a["updated_at"]
    body = [
        {"id": a["id"], "custom_fields_values": [{"field_id": f["id"], "values": [{"value": "42.5"}]}]},
        {"id": b["id"], "custom_fields_values": [{"field_code": "KPI_WIN_RATE", "values": [{"value": "7"}]}]},
    ]
    r = requests.patch(amo_sandbox.url + "/api/v4/contacts", json=body, headers=amo_headers, timeout=5)
    assert r.status_code == 200
    out = r.json()["_embedded"]["contacts"]
    assert [o["id"] for o in out] == [a["id"], b["id"]] and out[0]["updated_at"] > old
    item = get(
        amo_sandbox, "/api/v4/contacts", amo_headers, **{"filter[updated_at][from]": out[0]["updated_at"]}
    ).json()["_embedded"]["contacts"]
    values = {
        i["id"]: {v["field_id"]: v["values"][0]["value"] for v in i["custom_fields_values"]} for i in item
    }
    assert values[a["id"]][f["id"]] == "42.5" and values[b["id"]][f["id"]] == "7"
    clear = [{"id": a["id"], "custom_fields_values": [{"field_id": f["id"], "values": None}]}]
    r = requests.patch(amo_sandbox.url + "/api/v4/contacts", json=clear, headers=amo_headers, timeout=5)
    assert r.status_code == 200 and f["id"] not in a["custom"]


@pytest.mark.parametrize(
    "bad, path",
    [
        ({"field": "numeric", "value": "forty"}, "custom_fields_values.0.values.0.value"),
        ({"field": 123, "value": "1"}, "custom_fields_values.0.field_id"),
        ({"card": 999, "value": "1"}, "id"),
    ],
)
def test_bad_patch_rejects_whole_batch(amo_dataset, amo_sandbox, amo_headers, bad, path):
    f = amo_dataset.add_field("company", "KPI", "numeric")
    good, target = [c for c in amo_dataset.companies if not c["is_deleted"]][:2]
    field_id = f["id"] if bad.get("field") == "numeric" or "card" in bad else bad["field"]
    body = [
        {"id": good["id"], "custom_fields_values": [{"field_id": f["id"], "values": [{"value": "1"}]}]},
        {
            "id": bad.get("card", target["id"]),
            "custom_fields_values": [{"field_id": field_id, "values": [{"value": bad["value"]}]}],
        },
    ]
    r = requests.patch(amo_sandbox.url + "/api/v4/companies", json=body, headers=amo_headers, timeout=5)
    assert r.status_code == 400 and r.headers["Content-Type"] == "application/problem+json"
    (err,) = r.json()["validation-errors"]
    assert err["request_id"] == "1" and err["errors"][0]["path"] == path
    assert f["id"] not in good["custom"]  # nothing applied


def test_patch_batch_over_50_is_400(amo_dataset, amo_sandbox, amo_headers):
    body = [{"id": c["id"]} for c in amo_dataset.contacts[:51]]
    r = requests.patch(amo_sandbox.url + "/api/v4/contacts", json=body, headers=amo_headers, timeout=5)
    assert r.status_code == 400


# ---- OAuth -----------------------------------------------------------------------------------
def _token(server, **body):
    base = {
        "client_id": server.client_id,
        "client_secret": server.client_secret,
        "redirect_uri": server.redirect_uri,
    }
    return requests.post(server.url + "/oauth2/access_token", json={**base, **body}, timeout=5)


def test_oauth_code_then_refresh_rotation(amo_sandbox):
    code = amo_sandbox.issue_code()
    r = _token(amo_sandbox, grant_type="authorization_code", code=code)
    assert r.status_code == 200 and r.json()["token_type"] == "Bearer"
    first = r.json()
    assert _token(amo_sandbox, grant_type="authorization_code", code=code).status_code == 400
    auth = {"Authorization": "Bearer " + first["access_token"]}
    assert get(amo_sandbox, "/api/v4/account", auth).status_code == 200
    r = _token(amo_sandbox, grant_type="refresh_token", refresh_token=first["refresh_token"])
    second = r.json()
    assert r.status_code == 200 and second["refresh_token"] != first["refresh_token"]
    reused = _token(amo_sandbox, grant_type="refresh_token", refresh_token=first["refresh_token"])
    assert reused.status_code == 401 and reused.json()["hint"] == "Token has been revoked"
    assert (
        _token(amo_sandbox, grant_type="refresh_token", refresh_token=second["refresh_token"]).status_code
        == 200
    )
    bad = _token(
        amo_sandbox, grant_type="authorization_code", code=amo_sandbox.issue_code(), client_secret="wrong"
    )
    assert bad.status_code == 401 and "wrong" not in bad.text


def test_expired_access_token_gets_401(amo_sandbox):
    tokens = _token(amo_sandbox, grant_type="authorization_code", code=amo_sandbox.issue_code()).json()
    auth = {"Authorization": "Bearer " + tokens["access_token"]}
    assert get(amo_sandbox, "/api/v4/users", auth).status_code == 200
    amo_sandbox.expire_access_tokens()
    assert get(amo_sandbox, "/api/v4/users", auth).status_code == 401


# ---- limits and faults -----------------------------------------------------------------------
class FakeClock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_rate_limit_429_then_block(amo_sandbox, amo_headers):
    clock = FakeClock()
    amo_sandbox.clock = clock
    amo_sandbox.set_limits(True)
    codes = [get(amo_sandbox, "/api/v4/account", amo_headers).status_code for _ in range(9)]
    assert codes == [200] * 7 + [429, 429]
    r = get(amo_sandbox, "/api/v4/account", amo_headers)
    assert r.headers["Content-Type"] == "application/problem+json" and r.json()["status"] == 429
    clock.t += 1.01
    assert get(amo_sandbox, "/api/v4/account", amo_headers).status_code == 200
    amo_sandbox.block_after = 4
    clock.t += 1.01
    codes = [get(amo_sandbox, "/api/v4/account", amo_headers).status_code for _ in range(9)]
    assert codes[:7] == [200] * 7 and codes[7] == 429 and codes[8] == 403
    clock.t += 60
    r = get(amo_sandbox, "/api/v4/account", amo_headers)
    assert r.status_code == 403 and "nginx" in r.text and r.headers["Content-Type"] == "text/html"
    amo_sandbox.unblock()
    assert get(amo_sandbox, "/api/v4/account", amo_headers).status_code == 200


def test_forced_faults_and_request_log(amo_sandbox, amo_headers):
    amo_sandbox.fail_next("500")
    r = get(amo_sandbox, "/api/v4/leads", amo_headers)
    assert r.status_code == 500 and r.json()["status"] == 500
    amo_sandbox.fail_next("truncated")
    r = get(amo_sandbox, "/api/v4/leads", amo_headers)
    with pytest.raises(json.JSONDecodeError):
        json.loads(r.text)
    amo_sandbox.fail_next("reset")
    with pytest.raises(requests.ConnectionError):
        get(amo_sandbox, "/api/v4/leads", amo_headers)
    amo_sandbox.fail_next("badjson")
    assert get(amo_sandbox, "/api/v4/leads", amo_headers).text.startswith("<html>")
    assert get(amo_sandbox, "/api/v4/leads", amo_headers, limit=3).status_code == 200
    log = amo_sandbox.request_log
    assert [e["fault"] for e in log] == ["500", "truncated", "reset", "badjson", None]
    assert log[-1]["params"] == {"limit": "3"} and log[-1]["status"] == 200
    assert log[2]["status"] is None


def test_fault_rate_is_seeded(amo_dataset, amo_headers):
    def run():
        with AmoSandbox(amo_dataset, limits=False, fault_rate=0.5, seed=3) as s:
            return [get(s, "/api/v4/account", amo_headers).status_code for _ in range(12)]

    first = run()
    assert first == run() and 500 in first and 200 in first


def test_https_with_self_signed_certificate(amo_headers):
    with AmoSandbox(generate(1, 30), limits=False, https=True) as s:
        assert s.url.startswith("https://")
        r = requests.get(s.url + "/api/v4/account", headers=amo_headers, verify=s.cert_path, timeout=5)
        assert r.status_code == 200


def test_single_card_patch(amo_dataset, amo_sandbox, amo_headers):
    f = amo_dataset.fields["company"][1]  # "Discount, %", numeric
    company = next(c for c in amo_dataset.companies if not c["is_deleted"])
    r = requests.patch(
        f"{amo_sandbox.url}/api/v4/companies/{company['id']}",
        headers=amo_headers,
        json={"custom_fields_values": [{"field_id": f["id"], "values": [{"value": 12}]}]},
        timeout=5,
    )
    assert r.status_code == 200 and company["custom"][f["id"]] == 12
    assert r.json()["_embedded"]["companies"][0]["updated_at"] == company["updated_at"]


def test_timeout_fault_holds_then_drops(amo_dataset, amo_headers):
    with AmoSandbox(amo_dataset, limits=False, timeout_hold_s=2.0) as s:
        s.fail_next("timeout")
        with pytest.raises(requests.Timeout):
            requests.get(s.url + "/api/v4/account", headers=amo_headers, timeout=0.2)
        assert requests.get(s.url + "/api/v4/account", headers=amo_headers, timeout=5).status_code == 200
