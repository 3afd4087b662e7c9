"""A full Bitrix24 sync against a slow portal that cuts every request at 60 s of server time.

    python -m benchmarks.bench_bitrix24_request_cap [--size 1000] [--page-s 10]

The sandbox's list pages cost `--page-s` seconds of server time each (a 1-ms sleep per
simulated second: `time_scale=0.001`), a batch's sub-calls run one after another, and a request
whose sub-calls pass 60 s is cut with a 504 page (`request_cap_s`). The operating budget is
lifted on both sides, so the cap is the only limit. Prints the time, requests, streams ok,
requests cut and the largest batch, then each stream's outcome.

Measured 2026-12-06 (2 cores shared with other sessions, load 6-9), 1,000 deals, 10 s a page:
- before (batches planned by the operating budget alone; a cut batch sent again the same way,
  six times): 61.1 s, 127 requests, 4/11 streams ok (7 failed: "batch failed after 6 attempts:
  HTTP 504"), 102 requests cut, batches of up to 22 sub-calls (220 s of server time).
- after (sub-calls per batch from the seconds per sub-call reported, to fit 45 s; a cut batch
  goes again halved): 23.1 s, 94 requests, 11/11 streams ok, 1 request cut (a method's first
  full batch, planned before its seconds were known), batches of up to 8 sub-calls.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import tempfile
import time

from adapters.bitrix24.adapter import Bitrix24Adapter
from connector.config.loader import SourceConfig
from connector.mirror.store import Mirror
from connector.run.sync import sync_source
from sandbox.bitrix24 import Bitrix24Sandbox
from sandbox.data import generate


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=1000)
    ap.add_argument("--page-s", type=float, default=10.0)
    args = ap.parse_args(argv)
    srv = Bitrix24Sandbox(
        generate(seed=1, size=args.size),
        limits=False,
        cost_model=True,
        page_cost_s=args.page_s,
        count_cost_s=0.0,
        time_scale=0.001,
        operating_budget_s=1e9,
    )
    with srv, tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stderr(io.StringIO()):
        cfg = SourceConfig(
            name="b24", kind="bitrix24", webhook_url=srv.webhook_url, max_workers=4, operating_budget_s=1e9
        )
        adapter = Bitrix24Adapter(cfg, None)
        t0 = time.monotonic()
        with Mirror(os.path.join(tmp, "m.db")) as mirror:
            results = sync_source(mirror, adapter)
        seconds = time.monotonic() - t0
        adapter.close()
        largest = max(len(r["params"].get("cmd") or {}) for r in srv.request_log)
    print(
        f"{seconds:.1f} s, {sum(r.requests for r in results)} requests, "
        f"{sum(r.status == 'ok' for r in results)}/{len(results)} streams ok, "
        f"{srv.cut_requests} requests cut, largest batch {largest} sub-calls"
    )
    for r in results:
        print(f"  {r.stream}: {r.status}, {r.requests} requests, {r.seconds:.1f} s {r.error or ''}")


if __name__ == "__main__":
    main()
