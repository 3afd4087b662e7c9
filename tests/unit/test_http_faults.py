"""adapters/http.py under faults: a host that cannot be reached fails fast and named; a 2xx
that is not JSON is retried like a 502; a call sent `once` is never resent after it may have
reached the server; the backoff starts small."""

import random
import socket

import pytest
import requests
import responses

from adapters.base import Page
from adapters.errors import ReplyLost, StreamError, UnreachableError
from adapters.http import FIRST_BACKOFF_S, HttpClient, connect_failure
from connector.mirror.store import Mirror
from connector.run.sync import sync_source
from tests.unit.test_sync import Scripted, rows

URL = "https://crm.example.test/api/v4/leads"


def client(**kw):
    c = HttpClient("main", **kw)
    c.slept = []
    c.sleep = c.slept.append
    return c


def dead_port() -> int:
    """A port on 127.0.0.1 nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- unreachable hosts -------------------------------------------------------------------------


def test_refused_port_is_tried_twice_then_named_with_host_and_cause():
    port = dead_port()
    c = client()
    with pytest.raises(UnreachableError) as err:
        c.request("GET", f"http://127.0.0.1:{port}/api/v4/users")
    msg = str(err.value)
    assert f"cannot reach 127.0.0.1 port {port}: connection refused (2 attempts)" in msg
    assert "source 'main'" in msg
    assert c.requests == 2 and c.slept == [FIRST_BACKOFF_S]


def test_unresolvable_host_is_a_dns_failure_tried_twice(monkeypatch):
    asked = []
    real = socket.getaddrinfo

    def resolver(host, *args, **kw):  # no DNS query leaves this machine
        if host == "crm.example.test":
            asked.append(host)
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    c = client()
    with pytest.raises(UnreachableError) as err:
        c.request("GET", URL)
    assert "cannot reach crm.example.test: DNS lookup failed (Name or service not known)" in str(err.value)
    assert len(asked) == 2 and c.requests == 2


@responses.activate
def test_connect_timeout_is_not_retried_and_says_how_long_it_waited():
    responses.get(URL, body=requests.ConnectTimeout("connect timed out"))
    c = client(timeout=(3.0, 60.0))
    with pytest.raises(UnreachableError, match="crm.example.test: no answer to connect within 3 s"):
        c.request("GET", URL)
    assert c.requests == 1 and c.slept == []


def test_tls_failure_is_named_and_not_retried():
    from ssl import SSLCertVerificationError

    cause = SSLCertVerificationError(1, "certificate verify failed")
    cause.verify_message = "self-signed certificate"
    exc = requests.exceptions.SSLError(cause)
    assert connect_failure(exc) == ("TLS handshake failed (self-signed certificate)", False)


@responses.activate
def test_a_reset_mid_reply_is_not_a_dead_host_and_keeps_the_full_ladder():
    responses.get(URL, body=requests.ConnectionError("Connection aborted: RemoteDisconnected"))
    c = client(max_attempts=4)
    with pytest.raises(StreamError, match="failed after 4 attempts: connection failed"):
        c.request("GET", URL)
    assert c.requests == 4


def test_an_unreachable_host_stops_the_source_and_its_other_streams_are_not_attempted(tmp_path):
    down = UnreachableError("source 'fake': cannot reach crm.example.test: connection refused")
    adapter = Scripted({"a": [down], "b": [Page(rows=rows(1, 2))], "c": [Page(rows=rows(3, 4))]})
    with Mirror(str(tmp_path / "m.db")) as mirror:
        results = sync_source(mirror, adapter)
        assert [r.status for r in results] == ["failed"] * 3 and results[0].stops_source
        assert adapter.requests == 1  # b and c were never fetched
        assert all(r.error == f"not run: {down}" for r in results[1:])
        assert mirror.conn.execute("SELECT count(*) FROM contacts").fetchone()[0] == 0


# -- 200s that are not JSON ----------------------------------------------------------------------


@pytest.mark.parametrize("body", ['{"_embedded": {"leads": [{"id": 1', "<html><h1>502</h1></html>"])
@responses.activate
def test_a_200_that_is_not_json_is_retried_and_the_good_body_returned(body):
    responses.get(URL, body=body, content_type="application/json")
    responses.get(URL, json={"ok": 1})
    c = client()
    r = c.request("GET", URL, expect_json=True)
    assert r.parsed == {"ok": 1} and c.requests == 2 and len(c.slept) == 1


@responses.activate
def test_a_body_that_stays_unreadable_fails_after_every_attempt_saying_so():
    responses.get(URL, body="<html>proxy error</html>", content_type="text/html")
    c = client(max_attempts=3)
    with pytest.raises(StreamError) as err:
        c.request("GET", URL, expect_json=True)
    assert "failed after 3 attempts: HTTP 200 with a body that is not JSON (24 bytes, text/html)" in str(
        err.value
    )
    assert c.requests == 3


@responses.activate
def test_error_pages_and_empty_bodies_are_not_body_faults():
    responses.get(URL, status=404, body="<html>not found</html>")
    responses.get(URL, status=204)
    c = client()
    assert c.request("GET", URL, expect_json=True).status_code == 404
    assert c.request("GET", URL, expect_json=True).parsed is None
    assert c.requests == 2 and c.slept == []


def test_backoff_starts_small_and_doubles_with_jitter():
    random.seed(5)
    c = client()

    class State:
        def __init__(self, n):
            self.attempt_number = n
            self.outcome = type("O", (), {"exception": lambda self: requests.ConnectionError("x")})()

    waits = [c._wait(State(n)) for n in range(1, 6)]
    for n, w in enumerate(waits):
        assert 0.5 * FIRST_BACKOFF_S * 2**n <= w <= 1.5 * FIRST_BACKOFF_S * 2**n
    assert sum(waits) < 12  # the whole ladder of 6 attempts; the old one took about 18 s


# -- calls sent once (single-use refresh tokens) ----------------------------------------------------


@responses.activate
def test_a_once_call_is_not_resent_after_a_lost_reply():
    responses.post(URL, body=requests.ReadTimeout("read timed out"))
    c = client()
    with pytest.raises(ReplyLost, match="the reply was lost \\(timed out\\)"):
        c.request("POST", URL, once=True)
    assert c.requests == 1


@responses.activate
def test_a_once_call_returns_a_5xx_or_unreadable_reply_instead_of_resending():
    responses.post(URL, status=502)
    responses.post(URL, body="{cut", content_type="application/json")
    c = client()
    assert c.request("POST", URL, once=True).status_code == 502
    assert c.request("POST", URL, once=True, expect_json=True).text == "{cut"
    assert c.requests == 2


def test_a_once_call_is_retried_when_the_connection_was_never_made():
    c = client()
    with pytest.raises(UnreachableError):
        c.request("POST", f"http://127.0.0.1:{dead_port()}/oauth2/access_token", once=True)
    assert c.requests == 2
