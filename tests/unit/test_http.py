"""Unit tests of adapters/http.py: limiter, retries, Retry-After, 401 refresh hook, blocking."""

import threading

import pytest
import requests
import responses

from adapters.errors import BlockedError, StreamError
from adapters.http import USER_AGENT, HttpClient, RateLimiter

URL = "https://acme.amocrm.ru/api/v4/leads"


class FakeClock:
    def __init__(self):
        self.now = 0.0
        self.slept = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.slept.append(seconds)
        self.now += seconds


def client(**kw):
    c = HttpClient("main", **kw)
    c.slept = []
    c.sleep = c.slept.append
    return c


def test_limiter_allows_rate_per_window_then_waits():
    clock = FakeClock()
    lim = RateLimiter(7, clock=clock, sleep=clock.sleep)
    stamps = []
    for _ in range(21):
        lim.acquire()
        stamps.append(clock.now)
    assert stamps[:7] == [0.0] * 7
    assert clock.slept, "the 8th call must wait"
    # any 1-second window holds at most 7 calls
    for i in range(len(stamps) - 7):
        assert stamps[i + 7] - stamps[i] >= 1.0


def test_limiter_is_thread_safe():
    clock = FakeClock()
    lock = threading.Lock()

    def sleep(s):
        with lock:
            clock.now += s

    lim = RateLimiter(5, clock=clock, sleep=sleep)
    stamps, guard = [], threading.Lock()

    def worker():
        for _ in range(5):
            lim.acquire()
            with guard:
                stamps.append(clock.now)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stamps.sort()
    assert len(stamps) == 20
    for i in range(len(stamps) - 5):
        assert stamps[i + 5] - stamps[i] >= 1.0 - 1e-9


def test_limiter_below_one_per_second():
    clock = FakeClock()
    lim = RateLimiter(0.5, clock=clock, sleep=clock.sleep)
    lim.acquire()
    lim.acquire()
    assert clock.now >= 2.0


@responses.activate
def test_429_retried_honouring_retry_after():
    responses.get(URL, status=429, headers={"Retry-After": "3"})
    responses.get(URL, json={"ok": 1})
    c = client()
    r = c.request("GET", URL)
    assert r.status_code == 200 and r.json() == {"ok": 1}
    assert c.slept == [3.0]
    assert c.requests == 2


@responses.activate
def test_5xx_and_connection_errors_retried_with_backoff():
    responses.get(URL, status=502)
    responses.get(URL, body=requests.ConnectionError("refused"))
    responses.get(URL, status=503)
    responses.get(URL, json={"ok": 1})
    c = client()
    assert c.request("GET", URL).status_code == 200
    assert len(c.slept) == 3 and all(0 < s <= 60 for s in c.slept)
    assert c.requests == 4


@responses.activate
def test_persistent_500_raises_stream_error_without_secrets():
    responses.get(URL, status=500, body="secret-token-abcdef in body")
    c = client(max_attempts=3)
    c.auth_headers = lambda: {"Authorization": "Bearer secret-token-abcdef"}
    with pytest.raises(StreamError) as err:
        c.request("GET", URL, params={"limit": 250})
    msg = str(err.value)
    assert "main" in msg and "/api/v4/leads" in msg and "3 attempts" in msg and "HTTP 500" in msg
    assert "secret-token" not in msg
    assert len(responses.calls) == 3


@pytest.mark.parametrize("status", [400, 402, 403, 404, 422])
@responses.activate
def test_other_4xx_not_retried(status):
    responses.get(URL, status=status, json={"title": "x"})
    c = client()
    assert c.request("GET", URL).status_code == status
    assert len(responses.calls) == 1 and c.slept == []


@responses.activate
def test_401_one_refresh_then_one_retry():
    responses.get(URL, status=401)
    responses.get(URL, json={"ok": 1})
    tokens = iter(["old", "new"])
    current = {"t": next(tokens)}
    calls = []

    def refresh(resp):
        calls.append(resp.status_code)
        current["t"] = next(tokens)
        return True

    c = client()
    c.auth_headers = lambda: {"Authorization": f"Bearer {current['t']}"}
    c.on_unauthorized = refresh
    r = c.request("GET", URL)
    assert r.status_code == 200 and calls == [401]
    assert [x.request.headers["Authorization"] for x in responses.calls] == ["Bearer old", "Bearer new"]


@responses.activate
def test_401_twice_returns_401_after_single_refresh():
    responses.get(URL, status=401)
    calls = []
    c = client()
    c.on_unauthorized = lambda r: calls.append(1) or True
    assert c.request("GET", URL).status_code == 401
    assert calls == [1] and len(responses.calls) == 2


@responses.activate
def test_401_without_hook_or_declined_is_returned():
    responses.get(URL, status=401)
    c = client()
    c.on_unauthorized = lambda r: False
    assert c.request("GET", URL).status_code == 401
    assert len(responses.calls) == 1


@responses.activate
def test_block_stops_every_later_request():
    responses.get(URL, json={})
    c = client()
    c.request("GET", URL)
    c.block("source 'main' blocked")
    with pytest.raises(BlockedError, match="blocked"):
        c.request("GET", URL)
    assert len(responses.calls) == 1


@responses.activate
def test_user_agent_timeout_and_custom_retry_predicate():
    responses.get(URL, json={"error": "QUERY_LIMIT_EXCEEDED"}, status=200)
    responses.get(URL, json={"ok": 1})
    c = client(timeout=(1.0, 2.0), retry_statuses=lambda r: r.status_code == 200 and b"LIMIT" in r.content)
    assert c.request("GET", URL).json() == {"ok": 1}
    assert responses.calls[0].request.headers["User-Agent"] == USER_AGENT
    assert responses.calls[0].request.req_kwargs["timeout"] == (1.0, 2.0)
