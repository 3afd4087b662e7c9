"""Streams side by side within one source (`[[sources]] parallel_streams`), against the sandboxes:
they really overlap (a request of one stream held until another stream's request arrives),
streams that write another's entities still come after it, the mirror still equals the portal,
each stream counts its own requests, and the shared limiters keep every limit answer away."""

import threading

import pytest

from adapters.amocrm.adapter import AmoCrmAdapter
from adapters.bitrix24.adapter import Bitrix24Adapter
from connector.config.loader import SourceConfig
from connector.mirror.store import Mirror
from connector.run.sync import sync_source
from sandbox.amocrm import AmoSandbox
from sandbox.bitrix24 import Bitrix24Sandbox
from sandbox.data import generate
from tests.e2e.portal_check import assert_mirror_equals_portal

HOLD_S = 10.0  # how long a held request waits for the other stream's (they never meet in sequence)


def hold_until(server, held, awaited) -> dict:
    """Hold the first request matching `held` until one matching `awaited` arrives (or HOLD_S
    passes); `met["met"]` says whether the awaited one came while the first was held."""
    original, arrived, met, lock = server.handle, threading.Event(), {"met": None}, threading.Lock()

    def handle(req):
        with lock:
            first = held(req) and met["met"] is None
            if first:
                met["met"] = False
        if awaited(req):
            arrived.set()
        if first:
            met["met"] = arrived.wait(HOLD_S)
        return original(req)

    server.handle = handle
    return met


def _b24_method(name: str):
    return lambda req: name in req.path or name.encode() in (req.body or b"")


def _b24(server, parallel: int, **kw) -> Bitrix24Adapter:
    cfg = SourceConfig(
        name="b24",
        kind="bitrix24",
        webhook_url=server.webhook_url,
        parallel_streams=parallel,
        reconcile_hours=0.0,
        **kw,
    )
    return Bitrix24Adapter(cfg, None)


def _amo(server, parallel: int, **kw) -> AmoCrmAdapter:
    cfg = SourceConfig(
        name="main",
        kind="amocrm",
        base_url=server.url,
        access_token=server.access_token,
        max_workers=4,
        parallel_streams=parallel,
        **kw,
    )
    return AmoCrmAdapter(cfg, None)


def _ok(results) -> None:
    assert [(r.stream, r.status, r.error) for r in results if r.status != "ok"] == []


@pytest.mark.parametrize("parallel,overlap", [(8, True), (1, False)])
def test_bitrix24_streams_overlap_and_the_mirror_equals_the_portal(tmp_path, parallel, overlap):
    """The deals listing is held until the calls stream (after deals in run order) sends its
    first request: side by side it does, one after another it cannot."""
    server = Bitrix24Sandbox(generate(seed=1, size=300), limits=False, cost_model=False).start()
    try:
        met = hold_until(server, _b24_method("crm.deal.list"), _b24_method("voximplant.statistic.get"))
        adapter = _b24(server, parallel, requests_per_second=500.0)
        with Mirror(str(tmp_path / "m.db")) as mirror:
            results = sync_source(mirror, adapter)
            _ok(results)
            assert met["met"] is overlap
            assert_mirror_equals_portal(mirror, server, "b24")
            # each stream counted its own requests, none twice: they add up to the source's
            assert sum(r.requests for r in results) == adapter.requests
            recorded = mirror.conn.execute("SELECT sum(requests) FROM sync_runs").fetchone()[0]
            assert recorded == adapter.requests
        adapter.close()
    finally:
        server.stop()


def test_amocrm_streams_overlap_and_events_come_after_the_cards(tmp_path):
    """Tasks (after deals in run order) arrive while the deals listing is held; the events
    stream, which flags deleted deals and completed tasks, starts only after every stream
    whose entities it writes has ended."""
    server = AmoSandbox(generate(seed=2, size=300), limits=False).start()
    try:
        met = hold_until(server, lambda r: r.path == "/api/v4/leads", lambda r: r.path == "/api/v4/tasks")
        adapter = _amo(server, 8, requests_per_second=500.0)
        with Mirror(str(tmp_path / "m.db")) as mirror:
            results = sync_source(mirror, adapter)
            _ok(results)
            assert met["met"] is True
            assert_mirror_equals_portal(mirror, server, "main")
            assert sum(r.requests for r in results) == adapter.requests
        log = [r["path"] for r in server.request_log]
        first_event = log.index("/api/v4/events")
        cards = ("/api/v4/leads", "/api/v4/contacts", "/api/v4/companies", "/api/v4/tasks")
        assert max(i for i, p in enumerate(log) if p in cards) < first_event
        adapter.close()
    finally:
        server.stop()


def test_bitrix24_parallel_streams_cause_no_limit_answers(tmp_path):
    """A small bucket (10 deep, 2/s) and the cost model's operating budget: streams side by
    side share the source's limiters, so the portal never answers with a limit error."""
    server = Bitrix24Sandbox(
        generate(seed=1, size=300),
        limits=True,
        bucket_size=10,
        drain_rate=2.0,
        cost_model=True,
        latency_ms=20,
    ).start()
    try:
        adapter = _b24(server, 8, bucket_size=10, requests_per_second=2.0)
        with Mirror(str(tmp_path / "m.db")) as mirror:
            _ok(sync_source(mirror, adapter))
            assert_mirror_equals_portal(mirror, server, "b24")
        assert server.limit_counts == {"QUERY_LIMIT_EXCEEDED": 0, "OPERATION_TIME_LIMIT": 0}
        assert adapter.client.limit_errors == 0
        adapter.close()
    finally:
        server.stop()


def test_amocrm_parallel_streams_cause_no_limit_answers(tmp_path):
    """amoCRM's 7 requests a second, enforced by the sandbox: every stream side by side through
    the one paced limiter, and not one 429."""
    server = AmoSandbox(generate(seed=2, size=300), limits=True, rate=7.0, latency_ms=20).start()
    try:
        adapter = _amo(server, 8)
        with Mirror(str(tmp_path / "m.db")) as mirror:
            _ok(sync_source(mirror, adapter))
            assert_mirror_equals_portal(mirror, server, "main")
        statuses = [r["status"] for r in server.request_log]
        assert statuses.count(429) == 0 and statuses.count(403) == 0
        adapter.close()
    finally:
        server.stop()
