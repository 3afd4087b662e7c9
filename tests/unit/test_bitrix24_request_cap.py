"""Bitrix24 cuts one request at 60 s, a batch's sub-calls included (`responses` mocks).

A batch holds as many sub-calls as fit in 45 s at the seconds per sub-call the server reported;
a batch that fails as a cut one does (the front end's 504 page, no answer in time) is not
sent again the same way: independent sub-calls go again in two halves; a linked chain raises
RequestCut at once, and the next batch planned is half as big. Other faults (a 500 page, a
reset) are transient: the batch is sent again whole.
"""

from __future__ import annotations

import json

import pytest
import requests
import responses

from adapters.bitrix24.answers import RequestCut
from adapters.bitrix24.client import Bitrix24Client
from adapters.bitrix24.duration import RequestCap
from adapters.errors import StreamError
from connector.config.loader import SourceConfig

HOOK = "https://portal.example.com/rest/1/s3cretcode/"
LIST = "crm.deal.list"
GATEWAY_504 = "<html><head><title>504 Gateway Time-out</title></head></html>"


@pytest.fixture
def client() -> Bitrix24Client:
    c = Bitrix24Client(
        SourceConfig(
            name="b24", kind="bitrix24", webhook_url=HOOK, requests_per_second=1000.0, bucket_size=1000
        )
    )
    c.sleep = c.http.sleep = lambda s: None
    c.budget.observe(LIST, {"operating": 0})  # the budget knows the method: no probing alone
    return c


def cmds(n: int, method: str = LIST) -> dict:
    return {f"p{k}": (method, {"start": -1}) for k in range(n)}


def batch_answer(n: int, seconds: float) -> dict:
    keys = [f"p{k}" for k in range(n)]
    return {
        "result": {
            "result": {k: [] for k in keys},
            "result_error": [],
            "result_total": [],
            "result_next": [],
            "result_time": {k: {"duration": seconds, "operating": 0} for k in keys},
        },
        "time": {"duration": n * seconds},
    }


def test_room_is_what_fits_in_45_seconds_and_a_cut_halves_it():
    cap = RequestCap()
    assert cap.room({LIST: 50}) == 50  # unknown methods: 0.5 s a sub-call
    cap.observe({LIST: [5.0, 5.0]})
    assert cap.room({LIST: 50}) == 9
    cap.observe({LIST: [1.0]})  # a faster answer counts a little at a time
    assert 9 < cap.room({LIST: 50}) < 45
    cap.observe({"crm.deal.contact.items.get": [2.0]})
    pair = cap.room({LIST: 50, "crm.deal.contact.items.get": 50})
    assert cap.seconds({LIST: pair, "crm.deal.contact.items.get": pair}) <= 45
    cap.cut([LIST] * 20)
    assert cap.room({LIST: 50}) == 10


@responses.activate
def test_a_batch_sized_from_the_reported_seconds_per_sub_call(client):
    responses.post(HOOK + "batch", json=batch_answer(2, 6.0))
    client.batch(cmds(2))
    n, held = client.reserve({LIST: 50})
    client.budget.release(held)
    assert n == 7  # 7 x 6 s = 42 s: under 45


@pytest.mark.parametrize(
    "cut",
    [
        {"status": 504, "body": GATEWAY_504, "content_type": "text/html"},
        {"body": requests.ReadTimeout("read timed out")},
    ],
    ids=["504 page", "read timeout"],
)
@responses.activate
def test_a_cut_batch_is_not_sent_again_the_same_way(client, cut):
    responses.post(HOOK + "batch", **cut)
    with pytest.raises(RequestCut):
        client.batch(cmds(20), linked=True)
    assert client.requests == 1 and client.cuts == 1
    n, held = client.reserve({LIST: 20})
    client.budget.release(held)
    assert n == 10


@responses.activate
def test_independent_sub_calls_of_a_cut_batch_go_again_in_two_halves(client):
    responses.post(HOOK + "batch", status=504, body=GATEWAY_504, content_type="text/html")
    sizes = []

    def answer(request):
        n = len(json.loads(request.body)["cmd"])
        sizes.append(n)
        body = batch_answer(20, 1.0)["result"]
        keys = list(json.loads(request.body)["cmd"])
        part = {s: {k: v for k, v in body[s].items() if k in keys} for s in ("result", "result_time")}
        return 200, {}, json.dumps({"result": {**part, "result_error": []}, "time": {}})

    responses.add_callback("POST", HOOK + "batch", callback=answer)
    res = client.batch(cmds(20))
    assert sizes == [10, 10] and client.requests == 3 and client.cuts == 1
    assert sorted(res.results) == sorted(cmds(20)) and not res.errors


@responses.activate
def test_a_lone_call_and_bitrix24s_own_5xx_are_retried_as_before(client):
    responses.post(HOOK + LIST, status=504, body=GATEWAY_504, content_type="text/html")
    responses.post(HOOK + LIST, json={"result": [], "total": 0})
    assert client.call(LIST, {"start": -1})["result"] == []
    assert client.requests == 2
    err = {"error": "INTERNAL_SERVER_ERROR", "error_description": "Internal server error"}
    responses.post(HOOK + "batch", status=500, json=err)
    with pytest.raises(StreamError) as caught:
        client.batch(cmds(20))
    assert not isinstance(caught.value, RequestCut)
    assert client.requests == 2 + 6 and client.cuts == 0


@pytest.mark.parametrize(
    "fault",
    [
        {"status": 500, "body": "<html>500</html>", "content_type": "text/html"},
        {"status": 502, "body": "<html>502</html>", "content_type": "text/html"},
        {"body": requests.ConnectionError("connection aborted: remote end closed")},
    ],
    ids=["500 page", "502 page", "reset"],
)
@responses.activate
def test_a_transient_fault_on_a_batch_is_retried_whole(client, fault):
    responses.post(HOOK + "batch", **fault)
    responses.post(HOOK + "batch", json=batch_answer(20, 0.1))
    assert len(client.batch(cmds(20)).results) == 20
    assert client.requests == 2 and client.cuts == 0
