"""The store's own cost, no HTTP: `Mirror.save_page` of 250-deal pages (each deal with its
contact, contact link and task, so four tables), first written, then written again (upserts).

Run from the repository root: python -m benchmarks.bench_mirror_write [--pages 400]

Prints the writing process's CPU seconds (steadier than wall time on a shared machine) and rows
per CPU second. A sync is paced by the CRM's API (amoCRM 7 requests/s = 1,750 deals/s), far below
what the store writes, so this shows the store's share of a run, not a run's length.

Single-column keys for Datasette (`key` primary key on the tables rows point at, generated
`*_key` link columns), 2026-12-06, default 400 pages (100k deals + 100k contacts + 100k links +
100k tasks), main and the branch alternating 3 times, load 4-6: before 5.5-6.0 CPU s for the
first write and 5.6-5.9 s for the rewrite (67-72k rows/s); after 6.6-7.2 s (55-61k rows/s) and
7.0-7.7 s (52-57k rows/s). The extra primary-key index and the generated columns (SQLite
computes them whenever a row is written) cost ~20 % of the store's CPU. A sync stays paced by
the API: bench_amocrm_sync --size 30000, main and the branch back to back, 18.6 s (0.915 of
the ceiling) and 18.6 s (0.917).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

from adapters.base import Page
from connector.mirror.store import Mirror

RAW = json.dumps(
    {"custom_fields_values": [{"field_id": i, "values": [{"value": "x" * 20}]} for i in range(8)]}
)
T0, T1 = "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z"


def page(p: int, size: int = 250) -> Page:
    deals, contacts, links, tasks = [], [], [], []
    for i in range(p * size + 1, (p + 1) * size + 1):
        deals.append(
            dict(
                id=i,
                name=f"Deal {i}",
                pipeline_id=1,
                stage_id=142 if i % 3 else 100,
                status="won",
                amount=i * 1.5,
                currency="RUB",
                responsible_user_id=i % 20,
                contact_id=i,
                company_id=i % 5000,
                channel="web",
                created_at=T0,
                updated_at=T1,
                closed_at=None,
                is_deleted=0,
                raw=RAW,
            )
        )
        contacts.append(
            dict(
                id=i,
                name=f"Contact {i}",
                company_id=i % 5000,
                responsible_user_id=i % 20,
                created_at=T0,
                updated_at=T1,
                is_deleted=0,
                raw=RAW,
            )
        )
        links.append(dict(deal_id=i, contact_id=i, is_main=1))
        tasks.append(
            dict(
                id=i,
                text="Call back",
                responsible_user_id=i % 20,
                entity_type="deal",
                entity_id=i,
                is_completed=0,
                due_at=T1,
                created_at=T0,
                updated_at=T1,
                is_deleted=0,
                raw=RAW,
            )
        )
    return Page(rows={"deals": deals, "deal_contacts": links, "contacts": contacts, "tasks": tasks})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pages", type=int, default=400)
    args = ap.parse_args()
    pages = [page(p) for p in range(args.pages)]
    rows = sum(pg.count() for pg in pages)
    with tempfile.TemporaryDirectory() as tmp:
        m = Mirror(f"{tmp}/mirror.db")
        for label in ("first write", "rewrite"):
            t = time.process_time()
            for pg in pages:
                m.save_page("bench", "deals", pg)
            cpu = time.process_time() - t
            print(f"{label}: {rows:,} rows in {cpu:.1f} CPU s ({rows / cpu:,.0f} rows/s)")
        m.close()


if __name__ == "__main__":
    main()
