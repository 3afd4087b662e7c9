"""Redis-backed amoCRM limiter: achieved rate, the worst 1-second window, cost per acquire.

    python benchmarks/bench_redis_limits.py [--procs 2] [--threads 8] [--seconds 10]
        [--url redis://...]   # default: $CRM_TEST_REDIS_URL, else a redis-server started here

`procs` processes x `threads` threads acquire on one amoCRM portal (7/s, window 1.05 s) for
about `seconds`. Prints grants/s against 7/s, the most grants in any 1-s window (the Redis
server's grant times, and the callers' own clock when acquire returned), the Redis round
trips per grant, and the round-trip cost of one acquire on an idle portal. Target: never
more than 7 in any 1-s window; a rate close to 7 / 1.05 = 6.67/s.
"""

import argparse
import multiprocessing
import os
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from adapters.redis_limits import RedisLimits  # noqa: E402
from benchmarks.redis_server import start_redis  # noqa: E402

PORTAL = "bench.amocrm.ru"
PER = 1.05


def max_in_window(stamps, width=1.0):
    stamps, best, j = sorted(stamps), 0, 0
    for i, t in enumerate(stamps):
        while j < len(stamps) and stamps[j] < t + width:
            j += 1
        best = max(best, j - i)
    return best


def worker(url, prefix, threads, seconds, start, out):
    lim = RedisLimits.from_url(url, prefix=prefix)
    grants, lock = [], threading.Lock()

    def run():
        limiter = lim.rate_limiter("amocrm", PORTAL, 7, per=PER)
        start.wait()
        end = time.time() + seconds
        mine = []
        while time.time() < end:
            at = limiter.acquire()
            mine.append((at, time.time()))
        with lock:
            grants.extend(mine)
            calls.append(limiter.round_trips)

    calls = []
    ts = [threading.Thread(target=run) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    out.put((grants, sum(calls)))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--url", default=os.environ.get("CRM_TEST_REDIS_URL"))
    args = ap.parse_args(argv)
    proc, url = (None, args.url) if args.url else start_redis()
    prefix = f"crm:bench:{os.getpid()}"
    try:
        ctx = multiprocessing.get_context("spawn")
        start, out = ctx.Event(), ctx.Queue()
        ps = [
            ctx.Process(target=worker, args=(url, prefix, args.threads, args.seconds, start, out))
            for _ in range(args.procs)
        ]
        for p in ps:
            p.start()
        time.sleep(1.0)  # let the spawned interpreters import before the clock starts
        start.set()
        grants, calls = [], 0
        for _ in ps:
            g, c = out.get(timeout=args.seconds + 120)
            grants += g
            calls += c
        for p in ps:
            p.join()
        server = sorted(a for a, _ in grants)
        local = sorted(b for _, b in grants)
        span = server[-1] - server[0]
        print(f"{args.procs} processes x {args.threads} threads on one portal, {span:.1f} s")
        print(
            f"grants/s: {(len(server) - 1) / span:.2f} (rate 7/s in a {PER} s window = "
            f"{7 / PER:.2f}/s ceiling); {len(server)} grants"
        )
        print(
            f"max grants in any 1-s window: {max_in_window(server)} (Redis clock), "
            f"{max_in_window(local)} (callers' clock when acquire returned)"
        )
        print(f"Redis calls per grant: {calls / len(server):.2f}")

        # The round trip: one acquire that never waits (10 per 10 us: the window stays as small
        # as amoCRM's and never throttles), so this times the script and the network alone.
        lim = RedisLimits.from_url(url, prefix=prefix)
        fast = lim.rate_limiter("amocrm", "idle.amocrm.ru", 1e6, per=1e-5)
        costs = []
        for _ in range(2000):
            t = time.perf_counter()
            fast.acquire()
            costs.append((time.perf_counter() - t) * 1e6)
        lim.redis.delete(*lim.redis.keys(f"{prefix}:*") or ["-"])
        costs.sort()
        print(
            f"Redis round trip per acquire (idle portal, EVALSHA): median "
            f"{statistics.median(costs):.0f} us, p99 {costs[int(len(costs) * 0.99)]:.0f} us"
        )
    finally:
        if proc:
            proc.terminate()
            proc.wait()


if __name__ == "__main__":
    main()
