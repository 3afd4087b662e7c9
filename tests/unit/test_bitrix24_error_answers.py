"""Bitrix24 error answers are read before a retry (`responses` mocks, no server).

PORTAL_DELETED and OVERLOAD_LIMIT stop the source at once, with a line saying what happened
and what to do; only QUERY_LIMIT_EXCEEDED is a limit answer (the bucket is taken as full, the
requests in flight are cut); a 503 that is not Bitrix24's JSON, a proxy's page, is a server
error: retried, and the source's pace left as it was.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
import responses

from adapters.bitrix24.adapter import Bitrix24Adapter
from adapters.errors import BlockedError
from tests.unit import b24_adapters
from tests.unit.b24_adapters import HOOK

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)
USERS = {"result": [{"ID": "1", "NAME": "A", "ACTIVE": True}], "total": 0}
PROXY_503 = "<html><head><title>503 Service Temporarily Unavailable</title></head></html>"


def adapter() -> Bitrix24Adapter:
    return b24_adapters.adapter(max_workers=4)


def users(a) -> list:
    return list(a.fetch("users", None, NOW))


@pytest.mark.parametrize(
    "status, code, description, says",
    [
        (500, "PORTAL_DELETED", "Portal was deleted", "check the portal address in the config"),
        (403, "PORTAL_DELETED", "Portal was deleted", "check the portal address in the config"),
        (503, "OVERLOAD_LIMIT", "REST API is blocked due to overload", "contact support"),
        (401, "OVERLOAD_LIMIT", "REST API is blocked due to overload", "contact support"),
    ],
)
@responses.activate
def test_a_whole_portal_answer_stops_the_source_at_once_saying_what_to_do(status, code, description, says):
    a = adapter()
    responses.post(HOOK + "user.get", status=status, json={"error": code, "error_description": description})
    with pytest.raises(BlockedError) as err:
        users(a)
    line = str(err.value)
    assert code in line and says in line and "\n" not in line and "s3cretcode" not in line
    assert a.requests == 1  # not retried
    assert a.client.limit_errors == 0 and a.client.throttle.cuts == 0
    with pytest.raises(BlockedError):  # the source's next request is not even sent
        a.client.call("profile")
    assert len(responses.calls) == 1


@responses.activate
def test_a_proxys_503_page_is_retried_and_leaves_the_pace_alone():
    a = adapter()
    responses.post(HOOK + "user.get", status=503, body=PROXY_503, content_type="text/html")
    responses.post(HOOK + "user.get", json=USERS)
    pages = users(a)
    assert pages[0].rows["users"][0]["id"] == 1
    assert a.requests == 2
    assert a.client.limit_errors == 0
    assert a.client.throttle.cuts == 0 and a.client.throttle.limit == a.client.throttle.ceiling
    assert a.client.bucket.level < a.client.bucket.capacity / 2  # not marked full


@responses.activate
def test_query_limit_exceeded_is_the_one_503_that_slows_the_source():
    a = adapter()
    responses.post(
        HOOK + "user.get",
        status=503,
        json={"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"},
    )
    responses.post(HOOK + "user.get", json=USERS)
    users(a)
    assert a.requests == 2
    assert a.client.limit_errors == 1 and a.client.throttle.cuts == 1
    assert a.client.bucket.level > a.client.bucket.capacity / 2  # the server's bucket is full
