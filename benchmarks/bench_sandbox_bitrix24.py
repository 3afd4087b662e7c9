"""How fast the Bitrix24 sandbox serves a 50-command `crm.deal.list` start=-1 batch.

Target: median < 20 ms on a 100k-deal dataset, no latency, cost model off.
Run: cd /work/main && python -m benchmarks.bench_sandbox_bitrix24 [--size 100000] [--runs 30]
"""

from __future__ import annotations

import argparse
import statistics
import time

import requests

from connector.sandbox.bitrix24 import Bitrix24Sandbox
from connector.sandbox.data import generate

SELECTS = {
    "ID only (reconciliation)": ["ID"],
    "sync columns": ["ID", "TITLE", "CATEGORY_ID", "STAGE_ID", "STAGE_SEMANTIC_ID", "OPPORTUNITY",
                     "CURRENCY_ID", "ASSIGNED_BY_ID", "CONTACT_ID", "COMPANY_ID", "DATE_CREATE",
                     "DATE_MODIFY", "CLOSED", "CLOSEDATE"],
    "* + UF_*": ["*", "UF_*"],
}


def batch_body(first_ids: list[int], select: list[str]) -> dict:
    """50 windows of 50 deals each, the shape an ID-window full load sends."""
    sel = "&".join(f"select[]={s.replace('*', '%2A')}" for s in select)
    return {"halt": 0, "cmd": {
        f"c{i}": f"crm.deal.list?order[ID]=ASC&filter[%3EID]={lo}&{sel}&start=-1"
        for i, lo in enumerate(first_ids)}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args()
    t = time.perf_counter()
    ds = generate(seed=1, size=args.size)
    print(f"dataset: {args.size} deals generated in {time.perf_counter() - t:.1f} s")
    ids = [d["id"] for d in ds.deals]
    with Bitrix24Sandbox(ds, limits=False, cost_model=False) as b24, requests.Session() as s:
        url = b24.webhook_url + "batch"
        for label, select in SELECTS.items():
            wall, server, rows = [], [], 0
            for run in range(args.runs + 3):
                # a different region of the table each run, so nothing is served twice
                base = (run * 2500 * 7) % max(1, len(ids) - 2600)
                body = batch_body([ids[base + 50 * i] for i in range(50)], select)
                t0 = time.perf_counter()
                r = s.post(url, json=body, timeout=30)
                dt = time.perf_counter() - t0
                data = r.json()["result"]
                rows = sum(len(v) for v in data["result"].values())
                if run >= 3:  # the first runs warm up connections and caches
                    wall.append(dt * 1000)
                    server.append(r.json()["time"]["duration"] * 1000)
            med = statistics.median(wall)
            print(f"{label:28s} rows/batch={rows:5d}  round trip median {med:6.1f} ms "
                  f"(p90 {sorted(wall)[int(len(wall) * 0.9) - 1]:6.1f})  "
                  f"server time median {statistics.median(server):6.1f} ms  "
                  f"[{'OK' if med < 20 else 'over'} vs 20 ms target]")


if __name__ == "__main__":
    main()
