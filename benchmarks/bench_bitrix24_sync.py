"""Full and nightly Bitrix24 sync against the sandbox with its server cost model on.

    cd /work/main && python -m benchmarks.bench_bitrix24_sync [--deals 100000] [--peer-cap 600]

The server: leaky bucket 50 / 2 req/s, 0.1 s per uncounted list page (counted pages cost
more as the table grows), 480 s operating budget per method per 10 minutes, 100 ms latency.
Prints: our full sync of the deals stream (deals + contact links), time, rows/s, requests,
limit errors we caused, peak RSS; a nightly incremental of every stream after 1% of deals
changed; then the same listing by fast-bitrix24 (`get_all("crm.deal.list")`) and b24pysdk
(`crm.deal.list().as_list_fast()`), each on a fresh server with the same data and knobs.
Those two libraries are not project dependencies: if absent, the comparison is skipped.
A peer that has not finished after `--peer-cap` seconds is reported as a lower bound.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import random
import resource
import tempfile
import threading
import time

import psutil

from adapters.bitrix24 import Bitrix24Adapter
from connector.config import SourceConfig
from connector.sandbox.bitrix24 import Bitrix24Sandbox
from connector.sandbox.data import generate
from connector.store import Mirror
from connector.sync import sync_source

KNOBS = dict(limits=True, bucket_size=50, drain_rate=2.0, cost_model=True, page_cost_s=0.1,
             operating_budget_s=480.0, operating_window_s=600.0, latency_ms=100)


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def adapter(url: str, workers: int) -> Bitrix24Adapter:
    return Bitrix24Adapter(SourceConfig(name="b24", kind="bitrix24", webhook_url=url,
                                        requests_per_second=2.0, max_workers=workers), None)


def ours(ds, workers: int, db: str) -> dict:
    with Bitrix24Sandbox(ds, **KNOBS) as srv, Mirror(db) as m:
        a = adapter(srv.webhook_url, workers)
        base = rss_mb()
        t0 = time.monotonic()
        res = sync_source(m, a, streams=["deals"], full=True)[0]
        full_s = time.monotonic() - t0
        links = m.conn.execute("SELECT count(*) FROM deal_contacts").fetchone()[0]
        out = {"status": res.status, "error": res.error, "deals": res.rows - links, "links": links,
               "seconds": full_s, "requests": res.requests, "rss_base": base, "peak": peak_mb(),
               "client_limit_errors": a.client.limit_errors, "server_limit_errors": dict(srv.limit_counts),
               "budget_wait_s": a.client.budget.waited_s}
        a.close()
    # Nightly: the other streams were loaded earlier (here on a server without the cost model,
    # to save the benchmark half an hour); then 1% of deals change and every stream runs
    # incrementally on the cost-model server.
    with Bitrix24Sandbox(ds, limits=False) as prep, Mirror(db) as m:
        a = adapter(prep.webhook_url, workers)
        sync_source(m, a, streams=[s for s in a.stream_names() if s != "deals"])
        a.close()
    rnd = random.Random(7)
    for d in rnd.sample(ds.deals, len(ds.deals) // 100):
        if not d.get("is_deleted"):
            ds.update("deal", d["id"], amount=float(d["amount"]) + 1)
    with Bitrix24Sandbox(ds, **KNOBS) as srv, Mirror(db) as m:
        a = adapter(srv.webhook_url, workers)
        t0 = time.monotonic()
        nightly = sync_source(m, a)
        out["nightly_s"] = time.monotonic() - t0
        out["nightly_requests"] = a.requests
        out["nightly_ok"] = all(r.status == "ok" for r in nightly)
        out["nightly_rows"] = sum(r.rows for r in nightly)
        out["client_limit_errors"] += a.client.limit_errors
        a.close()
    return out


def capped(fn, cap: float) -> tuple[float, object, bool]:
    """Run fn in a thread; (seconds, result, finished) with at most `cap` seconds waited."""
    box: dict = {}

    def run():
        try:
            box["result"] = fn()
        except Exception as err:  # reported, not raised: a peer's failure is a data point
            box["result"] = err
    t = threading.Thread(target=run, daemon=True)
    t0 = time.monotonic()
    # A peer that gives up drops its connections; keep the server's tracebacks off the report.
    with contextlib.redirect_stderr(io.StringIO()):
        t.start()
        t.join(cap)
    return time.monotonic() - t0, box.get("result"), not t.is_alive()


def fast_bitrix24(ds, cap: float):
    try:
        from fast_bitrix24 import Bitrix
    except ImportError:
        return None
    srv = Bitrix24Sandbox(ds, https=True, **KNOBS).start()
    os.environ["SSL_CERT_FILE"] = srv.cert_path
    try:
        b = Bitrix(srv.webhook_url, verbose=False, ssl=False)
        secs, result, done = capped(lambda: b.get_all("crm.deal.list"), cap)
        return secs, result, done, dict(srv.limit_counts)
    finally:
        srv.stop()


def b24pysdk(ds, cap: float):
    try:
        from b24pysdk import BitrixWebhook, Client
    except ImportError:
        return None
    srv = Bitrix24Sandbox(ds, https=True, **KNOBS).start()
    os.environ["REQUESTS_CA_BUNDLE"] = srv.cert_path
    try:
        host = srv.url.split("://", 1)[1]
        client = Client(BitrixWebhook(domain=host, webhook_token=f"{srv.webhook_user}/{srv.webhook_secret}"))
        fn = lambda: list(client.crm.deal.list().as_list_fast().result)  # noqa: E731
        secs, result, done = capped(fn, cap)
        return secs, result, done, dict(srv.limit_counts)
    finally:
        srv.stop()


def report_peer(name: str, run, ours_s: float, target: float) -> None:
    if run is None:
        print(f"{name}: not installed; to compare, `pip install fast-bitrix24 b24pysdk` "
              "(benchmark only, not a project dependency)")
        return
    secs, result, done, limits = run
    if isinstance(result, Exception):
        print(f"{name}: failed after {secs:.1f}s: {type(result).__name__}: {str(result)[:200]}")
        return
    rows = len(result) if done and result is not None else None
    bound = "" if done else ">= "
    print(f"{name}: {bound}{secs:.1f}s{f' for {rows} rows' if rows else ' (stopped at the cap)'}; "
          f"server limit errors {limits}; ours is {bound}{secs / ours_s:.1f}x faster (target {target}x)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--deals", type=int, default=100_000)
    ap.add_argument("--workers", type=int, default=4, help="parallel ID windows (max_workers)")
    ap.add_argument("--peer-cap", type=float, default=600.0, help="seconds to wait for each peer")
    ap.add_argument("--skip-peers", action="store_true")
    args = ap.parse_args()
    t0 = time.monotonic()
    ds = generate(seed=1, size=args.deals)
    print(f"dataset: {len(ds.deals)} deals, {len(ds.contacts)} contacts, {len(ds.tasks)} tasks, "
          f"{len(ds.calls)} calls (built in {time.monotonic() - t0:.1f}s); server knobs {KNOBS}")
    with tempfile.TemporaryDirectory() as tmp:
        r = ours(ds, args.workers, os.path.join(tmp, "mirror.db"))
    print(f"ours, full deals stream: {r['status']} {r['deals']} deals + {r['links']} contact links in "
          f"{r['seconds']:.1f}s = {r['deals'] / r['seconds']:.0f} deals/s, {r['requests']} requests "
          f"({args.workers} windows in parallel)")
    print(f"ours, nightly incremental (all streams, 1% of deals changed): {r['nightly_s']:.1f}s, "
          f"{r['nightly_requests']} requests, {r['nightly_rows']} rows, ok={r['nightly_ok']}")
    print(f"limit errors caused by our client: {r['client_limit_errors']} (server counted "
          f"{r['server_limit_errors']}); waited for the operating budget {r['budget_wait_s']:.1f}s")
    print(f"peak RSS {r['peak']:.0f} MB (process incl. the in-process sandbox dataset; "
          f"{r['rss_base']:.0f} MB before our sync)")
    if args.skip_peers:
        return
    ds = generate(seed=1, size=args.deals)  # fresh copy: the nightly run changed 1% of deals
    report_peer("fast-bitrix24 get_all('crm.deal.list')", fast_bitrix24(ds, args.peer_cap), r["seconds"], 3)
    report_peer("b24pysdk crm.deal.list().as_list_fast()", b24pysdk(ds, args.peer_cap), r["seconds"], 1.5)


if __name__ == "__main__":
    main()
