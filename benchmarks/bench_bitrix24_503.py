"""A full Bitrix24 sync, clean and with one proxy's HTML 503 page at the nth request.

    python -m benchmarks.bench_bitrix24_503 [--size 1000] [--at 2 10 30] [--repeat 2]

The sandbox runs in this process with its limits on (a bucket of 50 draining 2 req/s, as a
real portal's) and 20 ms latency. The faulty runs answer request n (`--at`) with the 503
"Service Unavailable" page of a proxy in front of the portal: HTML, not Bitrix24's JSON, so
not a limit answer. Prints per run: seconds, requests, streams ok, the limit answers the
adapter counted, and the faulty run's time as a multiple of the clean one (best of
`--repeat` runs each).

Measured 2026-12-06 (2 cores shared with other sessions), 1,000 deals, best of 2 runs each:
- before (every 503 was taken for QUERY_LIMIT_EXCEEDED: the client's bucket marked full, so
  every later request waited for the 2 req/s drain, and the requests in flight halved): clean
  1.7 s (48 requests); one proxy 503 at request 2: 23.7 s (13.8x), at 10: 20.5 s (11.9x), at
  30: 10.8 s (6.3x), 1 limit answer counted each.
- after (a 503 is a limit answer only with Bitrix24's QUERY_LIMIT_EXCEEDED; a proxy's page is a
  server error, retried after the first backoff): clean 1.7 s; at 2: 2.3 s (1.37x), at 10:
  2.2 s (1.30x), at 30: 2.4 s (1.44x), 0 limit answers counted.
- the same code with the request cap added (a 503 page is not taken for a cut request: the
  batch goes again whole), the machine busier: clean 4.6 s; at 2: 1.19x, at 10: 1.11x, at 30:
  1.07x, 0 limit answers counted.
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


def run(ds, at: int | None) -> dict:
    """One full sync into a fresh mirror; `at`: the request answered by a proxy's 503."""
    srv = Bitrix24Sandbox(ds, limits=True, latency_ms=20)
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stderr(io.StringIO()), srv:
        if at is not None:
            seen, pick = [0], srv._pick_fault

            def fault():  # drawn once per request, before it is served
                seen[0] += 1
                return "503" if seen[0] == at else pick()

            srv._pick_fault = fault
        adapter = Bitrix24Adapter(
            SourceConfig(name="b24", kind="bitrix24", webhook_url=srv.webhook_url, max_workers=4), None
        )
        t0 = time.monotonic()
        with Mirror(os.path.join(tmp, "m.db")) as mirror:
            results = sync_source(mirror, adapter)
        seconds = time.monotonic() - t0
        limits = adapter.client.limit_errors
        adapter.close()
        proxied = sum(1 for r in srv.request_log if r["fault"] == "503")
    return {
        "s": seconds,
        "requests": sum(r.requests for r in results),
        "ok": sum(r.status == "ok" for r in results),
        "streams": len(results),
        "limits": limits,
        "proxied": proxied,
    }


def best(ds, at, repeat: int) -> dict:
    return min((run(ds, at) for _ in range(repeat)), key=lambda r: r["s"])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=1000)
    ap.add_argument("--at", type=int, nargs="+", default=[2, 10, 30])
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args(argv)
    ds = generate(seed=1, size=args.size)
    clean = best(ds, None, args.repeat)
    print(
        f"clean: {clean['s']:.1f} s, {clean['requests']} requests, "
        f"{clean['ok']}/{clean['streams']} streams ok, {clean['limits']} limit answers",
        flush=True,
    )
    for at in args.at:
        f = best(ds, at, args.repeat)
        print(
            f"proxy 503 at request {at}: {f['s']:.1f} s = {f['s'] / clean['s']:.2f}x clean, "
            f"{f['requests']} requests ({f['proxied']} answered by the proxy), "
            f"{f['ok']}/{f['streams']} streams ok, {f['limits']} counted as limit answers",
            flush=True,
        )


if __name__ == "__main__":
    main()
