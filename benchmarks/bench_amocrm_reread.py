"""What amoCRM's scheduled wider reads cost in requests (records dated back by their writer:
`reread_hours` before the bookmark every `reread_every_hours`, in full every `reconcile_hours`).

A first sync of a sandbox account, then three runs with nothing changed: a plain incremental
one an hour later, the nightly reread a day later (48 h before the bookmark), the weekly full
read a week later. Prints the requests of each run, per stream for the wider ones, and what
they take at amoCRM's 7 requests per second. The sandbox's data is stamped over the years
before it was generated, a few percent of it in the last 48 hours, so the 48 h window holds a
realistic night's worth of rows. Rate limits are off: requests are counted, not timed.

Run from the repository root: python -m benchmarks.bench_amocrm_reread [--size 20000]

2026-12-06, --size 20000 (19,843 live deals; max_workers 1): first sync 1,319 requests; an
incremental run with nothing new 10; the nightly 48 h reread 17 (+7, about 1 s at 7 req/s:
deals 5, calls_leads 3, tasks 2, one each for the other streams; 2,427 rows read again); the
next run 10 again; the weekly full read 325 (46 s at 7 req/s; events are not read again).
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from datetime import datetime, timedelta, timezone

RPS = 7


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=20_000)
    args = ap.parse_args()

    from adapters.amocrm.adapter import AmoCrmAdapter
    from connector.config.loader import SourceConfig
    from connector.mirror.store import Mirror
    from sandbox.amocrm import AmoSandbox
    from sandbox.data import generate

    costs: list[str] = []

    class Costs(logging.Handler):
        def emit(self, record):
            costs.append(record.getMessage())

    log = logging.getLogger("adapters.amocrm.adapter")
    log.setLevel(logging.INFO)
    log.addHandler(Costs())

    ds = generate(seed=1, size=args.size)
    with AmoSandbox(ds, limits=False) as server, tempfile.TemporaryDirectory() as tmp:
        cfg = SourceConfig(
            name="main",
            kind="amocrm",
            base_url=server.url,
            access_token=server.access_token,
            requests_per_second=1000.0,
            max_workers=1,
        )
        adapter = AmoCrmAdapter(cfg, None)
        mirror = Mirror(f"{tmp}/mirror.db")
        start = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(minutes=2)

        def run(label: str, at: datetime) -> None:
            costs.clear()
            before = adapter.requests
            for stream in adapter.stream_names():
                for page in adapter.fetch(stream, mirror.get_bookmark("main", stream), at):
                    mirror.save_page("main", stream, page)
            n = adapter.requests - before
            print(f"{label:<34} {n:>6} requests  ({n / RPS:7.1f} s at {RPS} req/s)")
            for line in costs:
                print("    " + line.split(", ", 1)[-1])

        try:
            run("first sync (full)", start)
            run("incremental, 1 h later", start + timedelta(hours=1))
            run("nightly reread, 25 h later", start + timedelta(hours=25))
            run("incremental, 26 h later", start + timedelta(hours=26))
            run("weekly full read, 7 days later", start + timedelta(days=7, hours=1))
        finally:
            adapter.close()
            mirror.close()


if __name__ == "__main__":
    main()
