"""How many requests a full Bitrix24 sync sends: past its burst the leaky bucket lets 2 a second
through, so on a standard plan the request count, not server time, bounds a full sync.

A fixed 2,000-deal sandbox portal (seed 1), every stream, with the cost model's server seconds
(0.1 s a list page, passing in a thousandth of that) so batches are sized as on a real portal.
Its sub-calls fill at least ~125 full batches (6,036 activities, each with its own binding
sub-call: ~120 of them); planned ID windows of about one full batch each come close (160
requests, 35 without the bindings).
"""

from __future__ import annotations

from adapters.bitrix24.adapter import Bitrix24Adapter
from connector.config.loader import SourceConfig
from connector.mirror.store import Mirror
from connector.run.sync import sync_source
from sandbox.bitrix24 import Bitrix24Sandbox
from sandbox.data import generate
from tests.e2e.portal_check import assert_mirror_equals_portal

MAX_REQUESTS = 170  # 211 before windows were planned as one full batch each
MAX_LIST_REQUESTS = 40  # every stream but the activities' bindings: 81 before


def test_a_full_sync_of_a_fixed_portal_sends_few_full_batches(tmp_path):
    ds = generate(seed=1, size=2000)
    srv = Bitrix24Sandbox(
        ds, limits=False, cost_model=True, page_cost_s=0.1, time_scale=0.001, operating_budget_s=1e9
    )
    with srv:
        cfg = SourceConfig(
            name="b24",
            kind="bitrix24",
            webhook_url=srv.webhook_url,
            max_workers=50,
            operating_budget_s=1e9,
            requests_per_second=1000.0,
            bucket_size=1000,
        )
        a = Bitrix24Adapter(cfg, None)
        with Mirror(str(tmp_path / "mirror.db")) as mirror:
            results = sync_source(mirror, a, full=True)
            assert [r.status for r in results] == ["ok"] * len(results), [
                (r.stream, r.error) for r in results if r.status != "ok"
            ]
            assert_mirror_equals_portal(mirror, srv, "b24")
        a.close()
        sent = len(srv.request_log)
        bindings = sum(
            1
            for r in srv.request_log
            if all(
                c.startswith("crm.activity.binding.list") for c in r["params"].get("cmd", {"": "-"}).values()
            )
        )
    per_stream = {r.stream: r.requests for r in results}
    assert sent == a.requests
    assert sent <= MAX_REQUESTS, per_stream
    assert sent - bindings <= MAX_LIST_REQUESTS, per_stream
