"""How fast the Bitrix24 sandbox serves a 50-command `crm.deal.list` start=-1 batch.

Target: median < 20 ms on a 100k-deal dataset, no latency, cost model off.
Run: python -m benchmarks.bench_sandbox_bitrix24 [--size 100000] [--runs 30]

Each select is measured twice over the same table regions: "first read" (rows never served
before: rendered and JSON-encoded) and "again" (the server reuses each row's encoded JSON
until the dataset changes, as on a re-sync, a retry or the reconciliation pass).
"sync batch" is what `adapters/bitrix24/paging.py` sends for deals: 25 pages with the sync's
select (`*`, `UF_*`) chained by `$result[...]` references, each with its `crm.item.list`
contact-link page.
"""

from __future__ import annotations

import argparse
import statistics
import time

import requests

from sandbox.bitrix24 import Bitrix24Sandbox
from sandbox.data import generate

SELECTS = {
    "ID only (reconciliation)": ["ID"],
    "14 columns": [
        "ID",
        "TITLE",
        "CATEGORY_ID",
        "STAGE_ID",
        "STAGE_SEMANTIC_ID",
        "OPPORTUNITY",
        "CURRENCY_ID",
        "ASSIGNED_BY_ID",
        "CONTACT_ID",
        "COMPANY_ID",
        "DATE_CREATE",
        "DATE_MODIFY",
        "CLOSED",
        "CLOSEDATE",
    ],
    "* + UF_* (the sync's select)": ["*", "UF_*"],
}


def _sel(select: list[str]) -> str:
    return "&".join(f"select[]={s.replace('*', '%2A')}" for s in select)


def batch_body(first_ids: list[int], select: list[str]) -> dict:
    """50 windows of 50 deals each, the shape an ID-window full load sends."""
    return {
        "halt": 0,
        "cmd": {
            f"c{i}": f"crm.deal.list?order[ID]=ASC&filter[%3EID]={lo}&{_sel(select)}&start=-1"
            for i, lo in enumerate(first_ids)
        },
    }


def sync_body(first_id: int) -> dict:
    """25 chained deal pages plus their contact links, as the sync's paging sends them."""
    cmd = {}
    for k in range(25):
        lower = first_id if k == 0 else f"$result[p{k - 1}][49][ID]"
        cmd[f"p{k}"] = (
            f"crm.deal.list?select[0]=%2A&select[1]=UF_%2A&filter[%3EID]={lower}&order[ID]=ASC&start=-1"
        )
        cmd[f"q{k}"] = (
            f"crm.item.list?entityTypeId=2&select[0]=id&select[1]=contactIds"
            f"&filter[%3Eid]={lower}&order[id]=ASC&start=-1"
        )
    return {"halt": 0, "cmd": cmd}


def measure(s: requests.Session, url: str, bodies: list[dict], warmup: int = 3):
    wall, server, rows = [], [], 0
    for i, body in enumerate(bodies):
        t0 = time.perf_counter()
        r = s.post(url, json=body, timeout=30)
        dt = time.perf_counter() - t0
        data = r.json()
        res = data["result"]["result"]
        rows = sum(
            len(v) if isinstance(v, list) else len(v.get("items", ()))
            for v in (res.values() if isinstance(res, dict) else res)
        )
        if i >= warmup:  # the first requests warm up the connection and the code paths
            wall.append(dt * 1000)
            server.append(data["time"]["duration"] * 1000)
    return wall, server, rows


def report(label: str, wall: list[float], server: list[float], rows: int) -> None:
    med = statistics.median(wall)
    print(
        f"{label:44s} rows/batch={rows:5d}  round trip median {med:6.1f} ms "
        f"(p90 {sorted(wall)[max(0, int(len(wall) * 0.9) - 1)]:6.1f})  "
        f"server time median {statistics.median(server):6.1f} ms  "
        f"[{'OK' if med < 20 else 'over'} vs 20 ms target]"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args()
    t = time.perf_counter()
    ds = generate(seed=1, size=args.size)
    print(f"dataset: {args.size} deals generated in {time.perf_counter() - t:.1f} s")
    ids = [d["id"] for d in ds.deals]
    n = args.runs + 3
    # Disjoint regions while the table lasts, so a "first read" is one.
    bases = [(run * 2500) % max(1, len(ids) - 2600) for run in range(n)]
    with Bitrix24Sandbox(ds, limits=False, cost_model=False) as b24, requests.Session() as s:
        url = b24.webhook_url + "batch"
        for label, select in SELECTS.items():
            bodies = [batch_body([ids[b + 50 * i] for i in range(50)], select) for b in bases]
            report(label + ", first read", *measure(s, url, bodies))
            report(label + ", again", *measure(s, url, bodies))
        bodies = [sync_body(ids[b]) for b in bases]
        b24.portal.pages.clear()  # forget the deal rows the selects above encoded
        report("sync batch (25 deal + 25 link pages), first", *measure(s, url, bodies))
        report("sync batch (25 deal + 25 link pages), again", *measure(s, url, bodies))


if __name__ == "__main__":
    main()
