"""Sandbox performance: dataset generation and amoCRM page serving.

    python benchmarks/bench_sandbox.py [--size 100000] [--requests 50]

Targets: 100k deals generated in < 30 s; a 250-row /api/v4/leads page served in < 20 ms
(median, no latency, keep-alive client, as the connector uses one requests.Session).
"""

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import requests  # noqa: E402

from sandbox.amocrm import AmoSandbox  # noqa: E402
from sandbox.data import generate  # noqa: E402


def median_ms(session, url, headers, params_list):
    times = []
    for params in params_list:
        t = time.perf_counter()
        r = session.get(url, headers=headers, params=params, timeout=30)
        times.append((time.perf_counter() - t) * 1000)
        assert r.status_code == 200 and len(r.json()["_embedded"]["leads"]) == 250, r.status_code
    return statistics.median(times), max(times)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=100_000)
    ap.add_argument("--requests", type=int, default=50)
    args = ap.parse_args(argv)

    t = time.perf_counter()
    ds = generate(seed=1, size=args.size)
    gen_s = time.perf_counter() - t
    print(
        f"generate {args.size} deals: {gen_s:.2f} s  (target < 30 s)  "
        f"[{len(ds.calls)} calls, {len(ds.stage_changes)} stage changes]"
    )

    with AmoSandbox(ds, limits=False) as server, requests.Session() as s:
        url = server.url + "/api/v4/leads"
        h = {"Authorization": f"Bearer {server.access_token}"}
        pages = max(1, (len(ds.deals) - 500) // 250)
        # Warm-up builds the sorted index once (as the first page of a sync would).
        s.get(url, headers=h, params={"limit": 250, "order[updated_at]": "asc"}, timeout=60)
        plain = [{"limit": 250, "page": 1 + i % pages, "with": "contacts"} for i in range(args.requests)]
        med, worst = median_ms(s, url, h, plain)
        print(f"/api/v4/leads 250 rows, id order: median {med:.1f} ms, max {worst:.1f} ms (target < 20 ms)")
        since = sorted(d["updated_at"] for d in ds.deals)[len(ds.deals) // 3]
        incr = [
            {
                "limit": 250,
                "page": 1 + i % 20,
                "with": "contacts",
                "order[updated_at]": "asc",
                "filter[updated_at][from]": since,
            }
            for i in range(args.requests)
        ]
        med, worst = median_ms(s, url, h, incr)
        print(
            f"/api/v4/leads 250 rows, updated_at filter+order: median {med:.1f} ms, "
            f"max {worst:.1f} ms (target < 20 ms)"
        )
        t = time.perf_counter()
        ds.update("deals", ds.deals[0]["id"], name="touched")
        r = s.get(url, headers=h, params={"limit": 250, "order[updated_at]": "asc"}, timeout=60)
        print(
            f"first page after a write (index rebuild): "
            f"{(time.perf_counter() - t) * 1000:.0f} ms, status {r.status_code}"
        )


if __name__ == "__main__":
    main()
