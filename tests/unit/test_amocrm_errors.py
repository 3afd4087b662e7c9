"""amoCRM error paths with `responses`: bad JSON, bad shapes, 5xx, 429, 403 block, 401."""

import json
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
import responses

from adapters import redact
from adapters.errors import AuthError, BlockedError, StreamError
from tests.unit.test_amocrm_support import BASE, RUN, TOKEN, fetch_all, hal, make_adapter, serve_pages

BM = json.dumps({"since": "2026-11-01T00:00:00Z", "api_filter": True})
TASKS_BM = json.dumps({"since": "2026-11-01T00:00:00Z"})  # tasks take no api_filter


@pytest.fixture
def adapter(tmp_path):
    redact.register(TOKEN)
    a = make_adapter(tmp_path)
    yield a
    a.close()


@pytest.mark.parametrize(
    "bad",
    ['{"_page": 2, "_embedded": {"leads": [{"id"', "<html><body><h1>502 Bad Gateway</h1></body></html>"],
)
@responses.activate
def test_a_200_that_is_not_json_is_retried_like_a_502(adapter, bad):
    item = {"status_id": 7, "pipeline_id": 3}
    pages = [
        hal("leads", [{"id": 1, "updated_at": 1, **item}], True),
        hal("leads", [{"id": 2, "updated_at": 2, **item}]),
    ]
    served = []

    def cb(request):  # page 2's first answer is cut short or an HTML page; its retry is good
        no = int(dict(parse_qsl(urlsplit(request.url).query)).get("page", 1))
        served.append(no)
        if no == 2 and served.count(2) == 1:
            return 200, {"Content-Type": "application/json"}, bad
        return (200, {}, json.dumps(pages[no - 1])) if no <= 2 else (204, {}, "")

    responses.add_callback(responses.GET, BASE + "/api/v4/leads", callback=cb)
    got = [r["id"] for page in adapter.fetch("deals", BM, RUN) for r in page.rows.get("deals", [])]
    assert got == [1, 2]
    assert served.count(2) == 2 and len(adapter.http.slept) == 1


@responses.activate
def test_a_body_that_stays_malformed_fails_the_stream_naming_stream_and_page(adapter):
    first = hal("leads", [{"id": 1, "updated_at": 1, "status_id": 7, "pipeline_id": 3}], True)

    served = []

    def cb(request):  # the first answer is good; every later one (page 2 on) is not
        served.append(request.url)
        if len(served) == 1:
            return 200, {}, json.dumps(first)
        return 200, {"Content-Type": "application/json"}, "<html>Bad gateway</html>"

    responses.add_callback(responses.GET, BASE + "/api/v4/leads", callback=cb)
    got = []
    with pytest.raises(StreamError) as err:
        for page in adapter.fetch("deals", BM, RUN):
            got.append(page)
    msg = str(err.value)
    assert "not JSON" in msg and "stream 'deals'" in msg and "page 2" in msg
    assert "main" in msg and "6 attempts" in msg
    assert len(got) == 1 and got[0].rows["deals"][0]["id"] == 1  # page 1 was yielded first


@responses.activate
def test_missing_embedded_is_unexpected_shape(adapter):
    serve_pages("/api/v4/contacts", [{"_page": 1, "_links": {}}])
    with pytest.raises(
        StreamError,
        match=r"stream 'contacts', page 1: unexpected page shape "
        r"\(no _embedded.contacts list\)",
    ):
        fetch_all(adapter, "contacts", BM)


@responses.activate
def test_item_without_id_is_skipped_and_reported_by_its_place(adapter):
    serve_pages("/api/v4/companies", [hal("companies", [{"name": "no id"}, {"id": 5, "name": "ok"}])])
    pages = fetch_all(adapter, "companies", BM)
    assert [r["id"] for p in pages for r in p.rows.get("companies", [])] == [5]
    assert [q for p in pages for q in p.problems] == [
        {"item": "#1 on the page", "field": "id", "value": None, "why": "missing", "skipped": True}
    ]


@responses.activate
def test_a_price_that_is_not_a_number_is_null_and_reported_naming_the_deal(adapter):
    # Never stored as something else: the deal is kept with no amount, and the run says why.
    serve_pages(
        "/api/v4/leads",
        [
            hal(
                "leads",
                [
                    {"id": 77, "price": "abc", "updated_at": 1, "status_id": 7, "pipeline_id": 3},
                    {"id": 78, "price": "12,5 руб", "updated_at": 1, "status_id": 7, "pipeline_id": 3},
                ],
            )
        ],
    )
    pages = fetch_all(adapter, "deals", BM)
    deals = {r["id"]: r for p in pages for r in p.rows.get("deals", [])}
    assert (deals[77]["amount"], deals[78]["amount"]) == (None, 12.5)
    assert [q for p in pages for q in p.problems] == [
        {"item": 77, "field": "price", "value": "abc", "why": "not a number", "skipped": False}
    ]


@responses.activate
def test_a_list_of_links_that_is_not_a_list_skips_the_deal_naming_the_field(adapter):
    serve_pages(
        "/api/v4/leads",
        [
            hal(
                "leads",
                [{"id": 77, "updated_at": 1, "status_id": 7, "pipeline_id": 3, "_embedded": {"contacts": 5}}],
            )
        ],
    )
    pages = fetch_all(adapter, "deals", BM)
    assert not any(p.rows.get("deals") for p in pages)
    assert [q for p in pages for q in p.problems] == [
        {
            "item": 77,
            "field": "_embedded.contacts",
            "value": 5,
            "why": "not a list of objects",
            "skipped": True,
        }
    ]


@responses.activate
def test_persistent_500_fails_stream_after_retries(adapter):
    responses.get(BASE + "/api/v4/tasks", status=500, json={"title": "Internal"})
    with pytest.raises(StreamError) as err:
        fetch_all(adapter, "tasks", TASKS_BM)
    msg = str(err.value)
    assert "stream 'tasks', page 1" in msg and "HTTP 500" in msg and "6 attempts" in msg
    assert len(responses.calls) == 6 and len(adapter.http.slept) == 5
    assert TOKEN not in msg


@responses.activate
def test_429_then_success_is_retried(adapter):
    responses.get(BASE + "/api/v4/tasks", status=429, body="Too Many Requests")
    responses.get(BASE + "/api/v4/tasks", status=204)
    pages = fetch_all(adapter, "tasks", TASKS_BM)
    assert len(responses.calls) == 2 and len(adapter.http.slept) == 1
    assert pages[-1].bookmark


@responses.activate
def test_connection_error_retried(adapter):
    responses.get(BASE + "/api/v4/tasks", body=requests.ConnectionError("reset"))
    serve_pages("/api/v4/tasks", [hal("tasks", [{"id": 5}])])
    assert [r["id"] for p in fetch_all(adapter, "tasks", TASKS_BM) for r in p.rows.get("tasks", [])] == [5]


@responses.activate
def test_403_blocks_the_source(adapter):
    html = "<html><head><title>403 Forbidden</title></head><body>nginx</body></html>"
    responses.get(BASE + "/api/v4/leads", status=403, body=html, content_type="text/html")
    with pytest.raises(BlockedError) as err:
        fetch_all(adapter, "deals", BM)
    msg = str(err.value)
    assert "'main'" in msg and "stopped" in msg and "contact amoCRM support" in msg
    assert len(responses.calls) == 1
    with pytest.raises(BlockedError):  # every later request is refused without HTTP
        fetch_all(adapter, "tasks", TASKS_BM)
    with pytest.raises(BlockedError):
        adapter.check()
    assert len(responses.calls) == 1


@responses.activate
def test_long_lived_token_rejected(adapter):
    responses.get(
        BASE + "/api/v4/account",
        status=401,
        json={"title": "Unauthorized", "status": 401, "detail": "Неверный логин или пароль"},
    )
    with pytest.raises(AuthError) as err:
        adapter.check()
    msg = str(err.value)
    assert "token rejected (401); create a new long-lived token and set access_token" in msg
    assert TOKEN not in msg and len(responses.calls) == 1


@responses.activate
def test_402_and_400_are_stream_errors_without_retry(adapter):
    responses.get(
        BASE + "/api/v4/leads",
        status=402,
        json={"title": "Payment Required", "detail": "Account is not paid"},
    )
    with pytest.raises(StreamError, match="HTTP 402: Account is not paid"):
        fetch_all(adapter, "deals", BM)
    assert len(responses.calls) == 1


@responses.activate
def test_check_describes_account(adapter):
    responses.get(BASE + "/api/v4/account", json={"id": 31, "name": "Acme", "subdomain": "acme"})
    assert adapter.check() == "amoCRM account 'Acme' (subdomain acme, id 31)"
    assert responses.calls[0].request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert adapter.requests == 1
