"""Full and nightly Bitrix24 sync against the sandbox with its cost model on, and the peers.

    python -m benchmarks.bench_bitrix24_sync [--deals 100000] [--streams deals]
        [--workers 50] [--window-s 600] [--peer-cap 450] [--skip-peers] [--skip-nightly]

The server (a real portal's limits, docs/api-notes.md): leaky bucket 50 / 2 req/s, 0.1 s of server
time per `start=-1` list page, a page that counts `total` 2e-5 s more per matching row, batch
sub-calls one after another, concurrent requests served concurrently, 480 s of operating
time per method per 600 s (ten baskets), 100 ms latency. `--window-s` shortens the window
with the budget in proportion (same bound: 400 rows/s per method). Each server runs in its
own child process (fresh budget, its dataset off our heap): the peak RSS printed is ours.

Prints: a full sync (of every stream, or `--streams`) into an empty mirror (per stream: time,
rows/s, requests; limit errors, requests in flight, the deals' rate against the budget-bound
rate), peak RSS; a nightly incremental after 1% of deals changed; then the deal listing by
fast-bitrix24 (`get_all("crm.deal.list")`) and b24pysdk (`crm.deal.list().as_list_fast()`) on
the same server. Those two are not project dependencies: if absent, the comparison is
skipped. A peer still running at `--peer-cap` seconds is reported with the rows it had.
`--nightly-only` preloads on a server without limits and measures only the nightly run.

Streams side by side (`--parallel-streams`, default 8; 1: one after another), 2026-12-06, 2
cores shared with other sessions (load 4-9), every stream of the 20,000-deal portal (208k rows),
0 limit errors in every run:
- standard bucket (50 / 2 req/s): 135.6 s side by side, 132.9 s in turn: 308 requests, so the
  bucket alone needs 130 s; the deals stream alone 7.0 s in turn, 124 s side by side (it shares
  the bucket). fast-bitrix24 read the deals alone in 31.5 s: our whole sync is 0.23x of its
  speed, and no ordering of streams can reach the 3x target while the sync needs ~310 requests
  (only fuller batches can: every stream's rows in 50-call batches are ~110 requests).
- `--window-s 60` (48 s of server time per method per 60 s: the budget binds, same 400 rows/s
  per method): 289.5 s side by side against 570.8 s in turn; crm.activity.list (calls'
  activities and the activities stream) used 196 s of server time, so at least 185 s; the
  bucket 226 s (499 requests: the budget cuts batches short).
- `--enterprise` (250 / 5 req/s): 40.4 s side by side, 50.5 s in turn (the same load), 316
  requests; fast-bitrix24's deals alone 38.6 s (a run beside other benchmarks).
- 500k deals was not run: its slowest method needs ~4,900 s of server time, at least 92 minutes
  at 480 s per 10 minutes, one after another about 3.5 hours.

Fuller batches (windows planned as about one full batch each, 2026-12-06, same machine, load
4-9), with the activity bindings (one crm.activity.binding.list sub-call per activity):
- `--deals 2000 --skip-nightly --skip-peers`: before 85.3 s, 211 requests (every stream but
  the bindings 81); after 58.8 s, 160 requests (34), 0 limit errors; the bucket's bound 56 s.
  The activities stream alone: 130 requests, of which ~120 are full batches of bindings.
- `--deals 20000` (request counts on the same portal without limits): 1,567 -> 1,398, of which
  ~1,212 are binding batches (60,596 activities). With the standard limits that run is bound by
  crm.activity.binding.list's operating time (60,596 x 0.05 s = 3,030 s of server time at 480 s
  per 600 s: ~63 minutes), not by requests; it was not run to the end.

The floor the documented limits leave any client (`--floor-only`; printed after every full
sync too), 2026-12-06: every listed row read once at 2,500 rows a request, one
crm.activity.binding.list sub-call per activity (the method takes one activityId and no list
method returns bindings), the bucket's burst then its drain rate, the bindings' server time
against their method's budget:
- 20,000 deals (218,837 listed rows, 60,918 activities): >= 88 requests for the rows alone,
  19.0 s on the standard bucket; with the bindings >= 1,307 requests, 628.5 s; their 3,046 s of
  server time >= 3,207 s budget-bound. fast-bitrix24 read the deals alone in 26.6 s, so the 3x
  target is <= 8.9 s: below even the rows-alone floor (19.0 s), and 360x below the floor with
  bindings. On an Enterprise bucket (250 / 5 req/s) the rows alone fit its burst, the bindings
  still need >= 211 s of bucket and >= 3,207 s of budget.
- 2,000 deals, measured: full sync of every stream 58.7 s, 160 requests, 0 limit errors
  (1.05x the bucket's bound for those 160 requests, 56.0 s); floor 131 requests, 40.5 s.
  fast-bitrix24 6.0 s, b24pysdk 8.5 s for the deals alone.

Adaptive throttle (up to the bucket's burst, ten-basket budget; 2026-11-26, 2 cores shared
with other sessions, load 2-4):
- `--deals 20000 --peer-cap 300`: deals stream 8.0 s for 19,843 deals + 21,825 links (42
  requests, up to 48 in flight, 0 cuts, 0 limit errors); fast-bitrix24 27.4 s for the deals
  alone on the same server (3.4x; target 3x). Before: 22.3 s with 4 windows. Full sync of
  every stream 109.3 s (156k rows, 260 requests, 0 limit errors), peak RSS 120 MB; nightly
  (1% of deals changed) 4.3 s, 11 requests. b24pysdk 174.7 s (one window; 80 QUERY_LIMIT_EXCEEDED).
- `--deals 500000 --streams deals --skip-nightly --peer-cap 300`: 1,250.7 s for 495,847 deals
  + 545,814 links (592 requests, 0 limit errors), 396 deals/s = 0.99 of the budget-bound rate
  (400 rows/s per method), peak RSS 197 MB. fast-bitrix24 failed after 60.3 s with
  OPERATION_TIME_LIMIT (a counted page costs 10.1 s here; the server counted 49 such
  errors); b24pysdk had 32,250 deals at the 300 s cap (107/s, one window, ~4,651 s
  projected: ours 3.7x) and caused 144 QUERY_LIMIT_EXCEEDED.

Before the adaptive throttle (4 windows at a time; counting cost 0.5 s per 100k rows in the table):
measured 2026-11-23 (2 cores; portal: 100k deals, 30k contacts, 8k companies, 10k leads,
50k tasks, 200k calls, 348k stage changes), 4 workers, 0 limit errors on either side:
full sync of every stream 1,086 s (18 min; 870k rows + 109k deal-contact links, 589
requests): deals 105 s (945 deals/s), calls 221 s (904/s, each with its activity),
stage history 699 s (521/s: 7,000 pages = 700 s of server time > the 480 s budget of one
method per 10 min, so one wait for the window), the rest 60 s. Nightly (1% of deals
changed): 13.2 s, 14 requests. Peak RSS of the connector 110-127 MB. fast-bitrix24 failed
after 15.6 s (OPERATION_TIME_LIMIT: it counts `total` on every page, ~0.6 s each here);
b24pysdk had 47,400 deals at the 450 s cap (105/s; ours >= 4.3x).

Redesign check (declared streams, 2026-11-26), `--deals 30000 --skip-peers`, same machine:
before 204.6 s and 208.9 s (two runs), after 210.0 s for the full sync, 245 requests on both
sides, same per-stream requests (deals 34, calls 76, stage history 85); nightly 4.5 / 4.4 s and
11 requests on both sides; peak RSS 68 / 67 MB.
With tasks reconciled and closing moments from stage history, same size: full 204.1 s,
245 requests, 0 limit errors, 71 MB; nightly 4.3 s, 11 requests.
With the activities stream (60k calls + 17.6k other activities in one id sequence; UTM
and call votes), same size: full 260.2 s, 278 requests, 0 limit errors, 81 MB, of which
activities 44.5 s / 33 requests (77,644 rows, 1,745/s), the other streams as before; nightly
5.6 s, 12 requests (activities 1).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import multiprocessing as mp
import os
import random
import resource
import tempfile
import threading
import time

from adapters.bitrix24.adapter import Bitrix24Adapter
from connector.config.loader import SourceConfig
from connector.mirror.store import Mirror
from connector.run.sync import sync_source

KNOBS = dict(
    limits=True,
    bucket_size=50,
    drain_rate=2.0,
    cost_model=True,
    page_cost_s=0.1,
    count_cost_s=2e-5,
    operating_budget_s=480.0,
    operating_window_s=600.0,
    latency_ms=100,
)
NO_LIMITS = dict(limits=False)


# ---- the server, in a child process ---------------------------------------------------------


def _serve(conn, deals: int, knobs: dict, touch: bool, now: int) -> None:
    """Child: build the dataset, serve it, answer "stats" until "stop"."""
    from sandbox.bitrix24 import Bitrix24Sandbox
    from sandbox.bitrix24.activities import rows as activity_rows
    from sandbox.data import generate

    ds = generate(seed=1, size=deals, now=now)  # same `now` in every child: same timestamps
    if touch:  # the nightly case: 1% of deals changed since the last sync
        for d in random.Random(7).sample(ds.deals, len(ds.deals) // 100):
            if not d.get("is_deleted"):
                ds.update("deal", d["id"], amount=float(d["amount"]) + 1)
    sizes = {
        k: len(getattr(ds, k))
        for k in ("deals", "contacts", "companies", "leads", "tasks", "calls", "stage_changes")
    }
    sizes["activities"] = len(activity_rows(ds))  # calls' activities and the other interactions
    # Peers that give up drop connections: keep the server's tracebacks off the report.
    with contextlib.redirect_stderr(io.StringIO()), Bitrix24Sandbox(ds, **knobs) as srv:
        spent: dict[str, float] = {}  # server seconds each method used, over the whole run
        charge = srv.operating.charge

        def charged(method: str, seconds: float) -> None:
            spent[method] = spent.get(method, 0.0) + seconds
            charge(method, seconds)

        srv.operating.charge = charged
        conn.send(
            {
                "webhook_url": srv.webhook_url,
                "url": srv.url,
                "cert": srv.cert_path if knobs.get("https") else None,
                "user": srv.webhook_user,
                "secret": srv.webhook_secret,
                "sizes": sizes,
            }
        )
        while True:
            msg = conn.recv()
            srv.request_log.clear()  # unbounded otherwise
            stats = {
                "limits": dict(srv.limit_counts),
                "operating": {m: srv.operating.used(m)[0] for m in ("crm.deal.list",)},
                "spent": dict(spent),
            }
            spent.clear()
            conn.send(stats)
            if msg == "stop":
                return


class Server:
    """A Bitrix24Sandbox in a child process: `with Server(deals, knobs) as s: s.info["webhook_url"]`."""

    now = int(time.time()) // 3600 * 3600  # one clock for every child of this run

    def __init__(self, deals: int, knobs: dict, touch: bool = False):
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child, deals, knobs, touch, Server.now), daemon=True)

    def __enter__(self) -> "Server":
        self.proc.start()
        self.info = self.conn.recv()
        return self

    def stats(self) -> dict:
        self.conn.send("stats")
        return self.conn.recv()

    def __exit__(self, *exc) -> None:
        try:
            self.conn.send("stop")
            self.final = self.conn.recv()
        except (EOFError, OSError):
            self.final = {}
        self.proc.join(30)
        if self.proc.is_alive():
            self.proc.terminate()


# ---- our client -----------------------------------------------------------------------------


def peak_mb() -> float:
    """Peak RSS of this process only (the servers are children, not counted)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# the source's parallel_streams (--parallel-streams) and its bucket, as the server's (--enterprise)
SOURCE = {"parallel_streams": 8, "bucket_size": 50, "requests_per_second": 2.0}


def adapter(url: str, workers: int, budget_s: float = 480.0) -> Bitrix24Adapter:
    return Bitrix24Adapter(
        SourceConfig(
            name="b24",
            kind="bitrix24",
            webhook_url=url,
            max_workers=workers,
            operating_budget_s=budget_s,
            **SOURCE,
        ),
        None,
    )


def run_all(
    db: str, url: str, workers: int, full: bool, streams: list[str] | None = None, budget_s: float = 480.0
) -> dict:
    with Mirror(db) as m:
        a = adapter(url, workers, budget_s)
        t0 = time.monotonic()
        results = sync_source(
            m, a, streams=streams, full=full
        )  # one run, as `crm-connector sync [--full]` does
        total_s = time.monotonic() - t0
        out = {
            "results": results,
            "limits": a.client.limit_errors,
            "seconds": total_s,
            "requests": a.requests,
            "budget_wait_s": a.client.budget.waited_s,
            "peak": peak_mb(),
            "throttle": a.client.throttle.state(),
            "links": m.conn.execute("SELECT count(*) FROM deal_contacts").fetchone()[0],
        }
        a.close()
    return out


def print_run(title: str, r: dict) -> None:
    print(
        f"\n{title}: {r['seconds']:.1f}s, {r['requests']} requests, "
        f"{sum(x.rows for x in r['results'])} rows, limit errors caused {r['limits']}, "
        f"waited for the operating budget {r['budget_wait_s']:.0f}s (summed over workers), "
        f"peak RSS {r['peak']:.0f} MB"
    )
    t = r["throttle"]
    print(
        f"  requests in flight: at most {t['peak']}, limit at the end {t['limit']:.0f}, {t['cuts']} cuts "
        f"(lowest {t['lowest']:.0f})"
    )
    print(f"  {'stream':14} {'status':7} {'rows':>8} {'seconds':>8} {'rows/s':>8} {'requests':>8}")
    for x in r["results"]:
        rate = x.rows / x.seconds if x.seconds > 0 else 0
        print(
            f"  {x.stream:14} {x.status:7} {x.rows:8d} {x.seconds:8.1f} {rate:8.0f} {x.requests:8d}"
            + (f"  {x.error}" if x.error else "")
        )


def ours(
    deals: int,
    workers: int,
    tmp: str,
    knobs: dict,
    streams: list[str] | None = None,
    nightly_only: bool = False,
    nightly: bool = True,
) -> dict:
    db = os.path.join(tmp, "mirror.db")
    budget = knobs["operating_budget_s"]
    with Server(deals, NO_LIMITS if nightly_only else knobs) as srv:
        sizes = srv.info["sizes"]
        print(f"portal: {sizes}; server knobs {knobs}", flush=True)
        full = run_all(db, srv.info["webhook_url"], workers, True, streams, budget)
    full["server"] = srv.final
    if nightly_only:
        full = None  # the preload ran without the cost model: no figure
    if not nightly:
        return {"full": full, "nightly": None, "sizes": sizes}
    with Server(deals, knobs, touch=True) as srv:
        later = run_all(db, srv.info["webhook_url"], workers, False, streams, budget)
    later["server"] = srv.final
    return {"full": full, "nightly": later, "sizes": sizes}


def print_bounds(r: dict, knobs: dict) -> None:
    """The run against what the portal's limits allow. A method whose server time exceeds its
    budget waits for the window to refill the rest (budget per window): at least
    (used - budget) / refill rate. Streams side by side can do no better than the slowest
    method; one after another they add up, about the sum. The bucket: every request past its
    burst at the drain rate."""
    spent = r["server"].get("spent") or {}
    budget, window = knobs["operating_budget_s"], knobs["operating_window_s"]
    bounds = {m: max(0.0, s - budget) * window / budget for m, s in spent.items()}
    if not bounds:
        return
    print(f"  server time per method (budget {budget:.0f} s per {window:.0f} s):")
    for m, b in sorted(bounds.items(), key=lambda x: -spent[x[0]])[:6]:
        print(f"    {m:28} {spent[m]:8.1f} s used -> at least {b:7.1f} s budget-bound")
    slowest = max(bounds, key=bounds.get)
    bucket = max(0.0, (r["requests"] - (knobs["bucket_size"] - 2)) / knobs["drain_rate"])
    print(
        f"  bounds: slowest method {slowest} {bounds[slowest]:.1f} s; every method in turn "
        f"{sum(bounds.values()):.1f} s; the bucket ({r['requests']} requests at "
        f"{knobs['drain_rate']:g}/s after its burst) {bucket:.1f} s"
    )
    floor = max(bounds[slowest], bucket)
    if floor > 0:
        print(
            f"  full sync {r['seconds']:.1f} s = {r['seconds'] / floor:.2f} x the tighter of the slowest "
            f"method's and the bucket's bound ({floor:.1f} s)"
        )


# What every full sync must read at least once (one `crm.*.list`-style row each)
LISTED = ("deals", "contacts", "companies", "leads", "tasks", "calls", "activities", "stage_changes")


def floor(sizes: dict, knobs: dict) -> dict:
    """The least any client can do against the portal's documented limits: every listed row
    read once at 50 rows a sub-call and 50 sub-calls a request (2,500 rows a request, what no
    client beats), plus one `crm.activity.binding.list` sub-call per activity (the method takes
    one activityId; no list method returns bindings), 50 a request. The bucket lets `bucket_size`
    requests through at once and `drain_rate` a second after that. The bindings' server time
    (the sandbox's cost of a call that is no list page: half a page) against their method's
    budget gives a second bound."""
    rows = sum(sizes.get(k, 0) for k in LISTED)
    lists = -(-rows // 2500)
    bindings = -(-sizes.get("activities", 0) // 50)

    def bucket(n: int) -> float:
        return max(0.0, (n - knobs["bucket_size"]) / knobs["drain_rate"])

    spent = sizes.get("activities", 0) * knobs["page_cost_s"] / 2
    budget, window = knobs["operating_budget_s"], knobs["operating_window_s"]
    return {
        "rows": rows,
        "list_requests": lists,
        "list_bucket_s": bucket(lists),
        "binding_requests": bindings,
        "all_bucket_s": bucket(lists + bindings),
        "binding_server_s": spent,
        "binding_budget_s": max(0.0, spent - budget) * window / budget,
    }


def print_floor(sizes: dict, knobs: dict) -> dict:
    f = floor(sizes, knobs)
    print(
        f"floor (documented limits, any client): {f['rows']} listed rows need >= {f['list_requests']} requests "
        f"(2,500 rows each) -> >= {f['list_bucket_s']:.1f} s on the bucket ({knobs['bucket_size']} at once, "
        f"{knobs['drain_rate']:g}/s after); with one binding sub-call per activity >= "
        f"{f['list_requests'] + f['binding_requests']} requests -> >= {f['all_bucket_s']:.1f} s; the bindings' "
        f"{f['binding_server_s']:.0f} s of server time -> >= {f['binding_budget_s']:.0f} s budget-bound "
        f"({knobs['operating_budget_s']:.0f} s per {knobs['operating_window_s']:.0f} s)"
    )
    return f


def budget_bound(knobs: dict) -> float:
    """Rows per second one method reads when its budget is the bound: 50 rows a page,
    budget / page cost pages per window."""
    return 50 * knobs["operating_budget_s"] / knobs["page_cost_s"] / knobs["operating_window_s"]


# ---- peers ----------------------------------------------------------------------------------


def capped(fn, cap: float, box: dict) -> tuple[float, bool]:
    """Run fn(box) in a thread; (seconds, finished) with at most `cap` seconds waited."""

    def run():
        try:
            fn(box)
        except Exception as err:  # reported, not raised: a peer's failure is a data point
            box["error"] = err

    t = threading.Thread(target=run, daemon=True)
    t0 = time.monotonic()
    t.start()
    t.join(cap)
    return time.monotonic() - t0, not t.is_alive()


def fast_bitrix24(deals: int, cap: float, knobs: dict):
    try:
        from fast_bitrix24 import Bitrix
    except ImportError:
        return None
    with Server(deals, dict(knobs, https=True)) as srv:
        os.environ["SSL_CERT_FILE"] = srv.info["cert"]
        b = Bitrix(srv.info["webhook_url"], verbose=False, ssl=False)
        box: dict = {}
        secs, done = capped(lambda bx: bx.update(rows=b.get_all("crm.deal.list")), cap, box)
    return secs, done, box, srv.final


def b24pysdk(deals: int, cap: float, knobs: dict):
    try:
        from b24pysdk import BitrixWebhook, Client
    except ImportError:
        return None
    with Server(deals, dict(knobs, https=True)) as srv:
        os.environ["REQUESTS_CA_BUNDLE"] = srv.info["cert"]
        host = srv.info["url"].split("://", 1)[1]
        client = Client(BitrixWebhook(domain=host, webhook_token=f"{srv.info['user']}/{srv.info['secret']}"))
        box: dict = {"rows": []}

        def listing(bx):
            for row in client.crm.deal.list().as_list_fast().result:
                bx["rows"].append(row)

        secs, done = capped(listing, cap, box)
        got, err = len(box["rows"]), box.get("error")  # at the cap: stopping the server fails it later
    return secs, done, {"n": got, "error": err}, srv.final


def counted_page_s(deals: int) -> float:
    """Server seconds of a page that counts `total` (the sandbox's cost model)."""
    return KNOBS["page_cost_s"] + KNOBS["count_cost_s"] * deals


def report_peers(deals: int, ours_s: float | None, cap: float, knobs: dict) -> float | None:
    """Print the peers' figures; fast-bitrix24's seconds for the deals, when it finished."""
    fb24_s = None
    run = fast_bitrix24(deals, cap, knobs)
    name = "fast-bitrix24 get_all('crm.deal.list')"
    if run is None:
        print(f"{name}: not installed (`pip install fast-bitrix24`; benchmark only)")
    else:
        secs, done, box, server = run
        pages = deals / 50
        why = (
            f"it pages with start=N, so every page counts `total`: ~{counted_page_s(deals):.2f} s of server "
            f"time per page here, {pages:.0f} pages need ~{pages * counted_page_s(deals):.0f} s of the "
            f"{knobs['operating_budget_s']:.0f} s operating budget per {knobs['operating_window_s']:.0f} s"
        )
        if "error" in box:
            err = box["error"]
            print(
                f"{name}: failed after {secs:.1f}s: {type(err).__name__}: {str(err)[:160]}\n  why: {why}; "
                f"server counted {server.get('limits')}, crm.deal.list operating used "
                f"{server.get('operating', {}).get('crm.deal.list', 0):.0f} s"
            )
        elif not done:
            print(
                f"{name}: still running at the {cap:.0f}s cap; {why}; server counted {server.get('limits')}"
            )
        else:
            fb24_s = secs
            vs = f"; our full sync is {secs / ours_s:.1f}x faster (target 3x)" if ours_s else ""
            print(
                f"{name}: {secs:.1f}s for {len(box['rows'])} deals{vs}; server counted {server.get('limits')}"
            )
    if ours_s is None:
        return fb24_s
    run = b24pysdk(deals, cap, knobs)
    name = "b24pysdk crm.deal.list().as_list_fast()"
    if run is None:
        print(f"{name}: not installed (`pip install b24pysdk`; benchmark only)")
        return fb24_s
    secs, done, box, server = run
    rate = box["n"] / secs if secs else 0
    if box["error"] is not None:
        print(
            f"{name}: failed after {secs:.1f}s with {box['n']} rows: {type(box['error']).__name__}: "
            f"{str(box['error'])[:160]}"
        )
    elif not done:
        left = (deals - box["n"]) / rate if rate else float("inf")
        print(
            f"{name}: not finished at the {secs:.0f}s cap: {box['n']} of ~{deals} deals ({rate:.0f} rows/s, "
            f"one sequential window; ~{secs + left:.0f}s projected); ours is ~{(secs + left) / ours_s:.1f}x faster "
            f"(target 1.5x); server counted {server.get('limits')}"
        )
    else:
        print(
            f"{name}: {secs:.1f}s for {box['n']} rows; ours is {secs / ours_s:.1f}x faster (target 1.5x); "
            f"server counted {server.get('limits')}"
        )
    return fb24_s


def print_target(fb24_s: float | None, f: dict) -> None:
    """The 3x target (a third of fast-bitrix24's deals-only time) against the floor."""
    if fb24_s is None:
        return
    target = fb24_s / 3
    least = max(f["all_bucket_s"], f["binding_budget_s"])
    print(
        f"target: a full sync of every stream in <= {target:.1f} s (a third of fast-bitrix24's "
        f"{fb24_s:.1f} s); no client can go below {least:.1f} s here (the listed rows alone "
        f"{f['list_bucket_s']:.1f} s): {'reachable' if least <= target else 'out of reach'}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--deals", type=int, default=100_000)
    ap.add_argument("--workers", type=int, default=50, help="max_workers: the ceiling on requests in flight")
    ap.add_argument("--streams", help="comma-separated streams to sync (default: all)")
    ap.add_argument(
        "--enterprise", action="store_true", help="an Enterprise portal's bucket: 250 deep, drains 5/s"
    )
    ap.add_argument(
        "--parallel-streams", type=int, default=8, help="streams synced at once (1: one after another)"
    )
    ap.add_argument(
        "--window-s",
        type=float,
        default=600.0,
        help="the operating budget's window; the budget shrinks with it (480 s per 600 s)",
    )
    ap.add_argument("--peer-cap", type=float, default=450.0, help="seconds to wait for each peer")
    ap.add_argument("--skip-peers", action="store_true")
    ap.add_argument("--skip-nightly", action="store_true")
    ap.add_argument(
        "--floor-only",
        action="store_true",
        help="print the least time the portal's limits allow and fast-bitrix24's time, no sync of ours",
    )
    ap.add_argument(
        "--nightly-only",
        action="store_true",
        help="preload on a server without limits, measure only the nightly run",
    )
    args = ap.parse_args()
    knobs = dict(KNOBS, operating_window_s=args.window_s, operating_budget_s=480.0 * args.window_s / 600)
    if args.enterprise:
        knobs.update(bucket_size=250, drain_rate=5.0)
    SOURCE.update(
        parallel_streams=args.parallel_streams,
        bucket_size=knobs["bucket_size"],
        requests_per_second=knobs["drain_rate"],
    )
    streams = args.streams.split(",") if args.streams else None
    which = "every stream" if streams is None else ", ".join(streams)
    if args.floor_only:
        with Server(args.deals, NO_LIMITS) as srv:
            sizes = srv.info["sizes"]
        print(f"portal: {sizes}; server knobs {knobs}")
        f = print_floor(sizes, knobs)
        if not args.skip_peers:
            with contextlib.redirect_stderr(io.StringIO()):
                print_target(report_peers(args.deals, None, args.peer_cap, knobs), f)
        return
    with tempfile.TemporaryDirectory() as tmp:
        r = ours(args.deals, args.workers, tmp, knobs, streams, args.nightly_only, not args.skip_nightly)
    full, nightly = r["full"], r["nightly"]
    if full is None:
        print_run(f"nightly incremental, {which} (1% of deals changed)", nightly)
        print(f"peak RSS of the connector process: {nightly['peak']:.0f} MB")
        return
    print_run(
        f"full sync, {which}, empty mirror (max_workers {args.workers}, parallel_streams "
        f"{args.parallel_streams})",
        full,
    )
    print_bounds(full, knobs)
    f = print_floor(r["sizes"], knobs)
    deals = next(x for x in full["results"] if x.stream == "deals")
    n = deals.rows  # a run's rows are its deals (the links are counted apart)
    bound = budget_bound(knobs)
    print(
        f"  deals stream: {n} deals + {full['links']} contact links in {deals.seconds:.1f}s: {n / deals.seconds:.0f} "
        f"deals/s = {n / deals.seconds / bound:.2f} of the budget-bound rate ({bound:.0f} rows/s per method: "
        f"50 x {knobs['operating_budget_s']:.0f} s / {knobs['page_cost_s']} s per {knobs['operating_window_s']:.0f} s; "
        "the links, crm.item.list, on their own budget at the same pace)"
    )
    print(f"  server counted limit errors {full['server'].get('limits')}")
    peak = full["peak"]
    if nightly is not None:
        print_run(f"nightly incremental, {which} (1% of deals changed)", nightly)
        print(f"  server counted limit errors {nightly['server'].get('limits')}")
        peak = max(peak, nightly["peak"])
    print(f"\npeak RSS of the connector process: {peak:.0f} MB (servers run in child processes)")
    if not args.skip_peers:
        print(flush=True)
        # A peer's abandoned tasks log tracebacks when they die with their server: not our report.
        with contextlib.redirect_stderr(io.StringIO()):
            # theirs: the deals alone; ours: the whole sync (every stream, or --streams)
            print(
                f"ours: full sync ({which}) {full['seconds']:.1f} s; the deals stream {deals.seconds:.1f} s"
            )
            print_target(report_peers(args.deals, full["seconds"], args.peer_cap, knobs), f)
            gc.collect()


if __name__ == "__main__":
    main()
