"""A first amoCRM sync (every stream, or `--streams`) from the sandbox at 7 req/s with 100 ms
latency; report the whole sync's share of the request ceiling, and the deals' throughput.

The ceiling is 7 requests/s (x 250 deals = 1,750 rows/s for the deals); target >= 0.9 of it for
the whole first sync, every stream, and a peak RSS of the connector process < 300 MB. The
sandbox (whose 100k-deal dataset alone takes ~350 MB) runs in a child process so its memory is
not counted. `--parallel-streams 1` runs the streams one after another (the old way).

Run from the repository root:
    python -m benchmarks.bench_amocrm_sync [--size 100000] [--workers 4] [--parallel-streams 8]
        [--streams deals]

After the redesign (declared streams, 2026-11-26): 99,220 deals in 61.4 s, 403 requests,
1,615 rows/s = 0.923 of the ceiling, peak RSS 49 MB.

Keyset restarts (no row skipped when the list changes mid-read: each request from the newest
updated_at seen; one request in flight, sent while the previous page is stored), --size 30000:
29,774 deals in 22.1 s, 132 requests, 1,349 rows/s = 0.771 of the ceiling (BELOW the 0.9
target), peak RSS 45 MB.
(Same code on the next engineer's machine: 19.8 s, 132 requests, 0.858.)

Overlapping planned pages, prefetched (still no row skipped: each page repeats >= 1 row of the
one before it and is checked; a failed check restarts from the newest value; no second read of
bulk instants), --size 30000, two runs: 29,774 deals in 18.5 s / 18.4 s, 123 / 122 requests,
1,606 / 1,620 rows/s = 0.918 / 0.925 of the ceiling, peak RSS 47 MB.

With the overlapping keyset reader (2026-11-26), default size 100k: 99,220 deals in
62.2-62.7 s, 405 requests (2 answered 429), 1,583-1,595 rows/s = 0.905-0.911 of the ceiling, 52 MB.

Tasks, events and newest-first cards on the overlap reader (the deals path unchanged),
2026-11-26, load average 2.7: 99,220 deals in 62.1 s, 404 requests (1 answered
429), 1,599 rows/s = 0.913 of the ceiling, 54 MB. On a busier machine (load 3-4, more 429s)
it read 0.846-0.876, and main's code 0.887 right after: the figure follows the load.

Acquisition channels (deals ask `with=contacts,source`; the sandbox sends sources and UTM fields),
--size 30000 on a shared, loaded machine: main 18.7 s / 0.911; this branch 0.861, 0.816 (runs
with 1 and 2 answers 429), then 18.6 s / 0.916 and 18.3 s / 0.927: the same pace; 50 MB.
Streams side by side (2026-12-06, load 4-9), --size 10000, every stream: 92.0 s, 604 requests,
6.56 requests/s = 0.938 of the ceiling (1 answered 429, at request 7), 65 MB; with
--parallel-streams 1: 91.1 s, 594 requests, 0.931 (1 answered 429). Events (418 requests, after
every stream whose entities they write) run alone at the end either way; the deals stream took
27.3 s beside the others against 6.3 s alone.
Default size (100k deals, every stream, side by side): 961.5 s, 6,360 requests, 6.61 requests/s
= 0.945 of the ceiling (5 answered 429), 123 MB; events 4,728 requests, 714 s.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import tempfile
import threading
import time

CEILING_RPS = 7
PAGE = 250


def serve(size: int, latency_ms: float, rate: float, conn) -> None:
    """Child process: generate the dataset, serve it, report the request log when told."""
    from sandbox.amocrm import AmoSandbox
    from sandbox.data import generate

    ds = generate(seed=1, size=size)
    with AmoSandbox(ds, limits=True, rate=rate, latency_ms=latency_ms) as server:
        conn.send((server.url, server.access_token))
        conn.recv()  # wait for "done"
        log = server.request_log
        conn.send(
            {
                "requests": len(log),
                "429": sum(1 for r in log if r["status"] == 429),
                "429_at": [i for i, r in enumerate(log) if r["status"] == 429],
                "403": sum(1 for r in log if r["status"] == 403),
            }
        )


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=100_000)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--rps", type=float, default=7.0, help="the connector's requests_per_second")
    ap.add_argument("--latency-ms", type=float, default=100.0)
    ap.add_argument("--parallel-streams", type=int, default=8, help="streams at once (1: one after another)")
    ap.add_argument("--streams", help="comma-separated streams to sync (default: every stream)")
    args = ap.parse_args()

    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=serve, args=(args.size, args.latency_ms, CEILING_RPS, child), daemon=True)
    t = time.perf_counter()
    proc.start()
    url, token = parent.recv()
    print(
        f"sandbox: {args.size} deals, limits on ({CEILING_RPS} req/s), "
        f"{args.latency_ms:.0f} ms latency; ready in {time.perf_counter() - t:.1f} s"
    )

    from adapters.amocrm.adapter import AmoCrmAdapter
    from connector.config.loader import SourceConfig
    from connector.mirror.store import Mirror
    from connector.mirror.tokens import TokenStore
    from connector.run.sync import sync_source

    with tempfile.TemporaryDirectory() as tmp:
        source = SourceConfig(
            name="bench",
            kind="amocrm",
            base_url=url,
            access_token=token,
            requests_per_second=args.rps,
            max_workers=args.workers,
            parallel_streams=args.parallel_streams,
        )
        adapter = AmoCrmAdapter(source, TokenStore(f"{tmp}/tokens.json"))
        mirror = Mirror(f"{tmp}/mirror.db")
        peak = {"rss": 0.0}
        stop = threading.Event()

        def sample():  # psutil's view, sampled, alongside ru_maxrss
            import psutil

            me = psutil.Process()
            while not stop.wait(0.2):
                peak["rss"] = max(peak["rss"], me.memory_info().rss / 2**20)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        streams = args.streams.split(",") if args.streams else None
        t0 = time.perf_counter()
        results = sync_source(mirror, adapter, streams=streams)
        seconds = time.perf_counter() - t0
        stop.set()
        deals = mirror.conn.execute("SELECT count(*) FROM deals").fetchone()[0]
        requests = adapter.requests
        adapter.close()
        mirror.close()

    parent.send("done")
    server = parent.recv()
    proc.join(timeout=10)

    print(
        f"first sync, {'every stream' if not streams else ', '.join(streams)}, "
        f"parallel_streams {args.parallel_streams}: {seconds:.1f} s, client requests={requests} "
        f"server saw={server['requests']} (429: {server['429']} at request no. {server['429_at']}, "
        f"403: {server['403']})"
    )
    print(f"  {'stream':16} {'status':7} {'rows':>8} {'seconds':>8} {'requests':>8}")
    for r in results:
        print(f"  {r.stream:16} {r.status:7} {r.rows:8d} {r.seconds:8.1f} {r.requests:8d}")
    share = server["requests"] / seconds / CEILING_RPS
    print(
        f"whole sync: {server['requests'] / seconds:.2f} requests/s = {share:.3f} of the {CEILING_RPS} "
        f"requests/s ceiling (target >= 0.9: {'PASS' if share >= 0.9 else 'FAIL'})"
    )
    deal = next((r for r in results if r.stream == "deals"), None)
    if deal is not None and deal.seconds > 0:
        rate = deals / deal.seconds
        ceiling = CEILING_RPS * PAGE
        print(
            f"deals stream: {deals} deals in {deal.seconds:.1f} s, {rate:.0f} rows/s = {rate / ceiling:.3f} of "
            f"the {ceiling} rows/s ceiling (its own pace, beside the other streams)"
        )
    rss = max(peak_rss_mb(), peak["rss"])
    print(
        f"peak RSS of the connector process: {rss:.0f} MB (target < 300: {'PASS' if rss < 300 else 'FAIL'})"
    )


if __name__ == "__main__":
    main()
