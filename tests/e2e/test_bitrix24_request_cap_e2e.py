"""Bitrix24's 60-second cap on one request, against the sandbox's cost model.

The sandbox's list pages take 10 s of server time here (its time scale makes that 10 ms of
real time) and a request whose sub-calls add up to more than 60 s is cut (a 504 page).
- A full sync sizes every batch from the seconds per sub-call the portal reported: no request
  is cut, every stream ends ok and the mirror equals the portal.
- The portal slows down under a running sync (pages from 1 s to 6 s): the batch planned for
  1-second pages is cut, and read again in batches half as big, never sent the same way twice.
"""

from __future__ import annotations

import json

import pytest

from adapters.bitrix24.adapter import Bitrix24Adapter
from connector.config.loader import SourceConfig
from connector.mirror.store import Mirror
from connector.run.sync import sync_source
from sandbox.bitrix24 import Bitrix24Sandbox
from tests.e2e.portal_check import assert_mirror_equals_portal
from tests.e2e.portal_scenarios import on_request


@pytest.fixture(autouse=True)
def short_pauses(monkeypatch):
    monkeypatch.setattr("adapters.http.FIRST_BACKOFF_S", 0.001)


def slow_portal(ds, page_cost_s: float) -> Bitrix24Sandbox:
    return Bitrix24Sandbox(
        ds,
        limits=False,
        cost_model=True,
        page_cost_s=page_cost_s,
        count_cost_s=0.0,
        time_scale=0.001,
        operating_budget_s=1e9,
    )


def adapter(srv) -> Bitrix24Adapter:
    # the operating budget lifted here as on the portal: the cap is the limit under test (10-s
    # pages would spend a method's 480 s in a few dozen requests, then wait ten real minutes)
    # the bucket too: the portal's is off, and the cap is what this file tests
    cfg = SourceConfig(
        name="b24",
        kind="bitrix24",
        webhook_url=srv.webhook_url,
        operating_budget_s=1e9,
        requests_per_second=500.0,
        bucket_size=10_000,
    )
    return Bitrix24Adapter(cfg, None)


def sub_calls(entry: dict) -> list[str]:
    """The sub-calls of a logged batch request, as sent (method?query)."""
    return list(entry["params"].get("cmd", {}).values())


def deal_batches(srv) -> list[dict]:
    return [
        r
        for r in srv.request_log
        if r["path"].endswith("/batch") and any("crm.deal.list" in c for c in sub_calls(r))
    ]


def test_a_full_sync_sizes_batches_to_stay_under_the_cap(b24_dataset, tmp_path):
    with slow_portal(b24_dataset, 10.0) as srv:
        a = adapter(srv)
        with Mirror(str(tmp_path / "mirror.db")) as mirror:
            results = sync_source(mirror, a)
            assert [r.status for r in results] == ["ok"] * len(results), [
                (r.stream, r.error) for r in results if r.status != "ok"
            ]
            assert_mirror_equals_portal(mirror, srv, "b24")
        a.close()
        assert srv.cut_requests == 0 and a.client.cuts == 0
        assert max(len(sub_calls(r)) for r in srv.request_log) > 2  # batches, not one call each


def test_a_batch_cut_at_the_cap_is_read_again_in_smaller_batches(b24_dataset, tmp_path):
    with slow_portal(b24_dataset, 1.0) as srv:
        # the deals' third request (the plan, the probe, then the first full batch) finds the
        # portal six times slower than the probe did
        on_request(
            srv,
            lambda req: req.path.endswith("/batch") and b"crm.deal.list" in req.body,
            lambda: setattr(srv, "page_cost_s", 6.0),
            nth=3,
        )
        a = adapter(srv)
        with Mirror(str(tmp_path / "mirror.db")) as mirror:
            results = sync_source(mirror, a, streams=["deals"])
            assert [r.status for r in results] == ["ok"], results[0].error
            assert_mirror_equals_portal(mirror, srv, "b24", tables=("deals", "deal_contacts"))
        a.close()
    batches = deal_batches(srv)
    cut = [i for i, r in enumerate(batches) if r["status"] == 504]
    assert cut == [2] and srv.cut_requests == 1 and a.client.cuts == 1
    assert len(sub_calls(batches[3])) <= len(sub_calls(batches[2])) // 2  # smaller, at once
    assert all(r["status"] == 200 for r in batches[3:])
    sent = [json.dumps(sub_calls(r)) for r in batches]
    assert len(sent) == len(set(sent))  # no batch sent twice the same way
