"""The portals' API limits in Redis (`adapters.redis_limits`), against a real redis-server.

Grant times are the Redis server's clock, as the scripts return them, so the window checks
do not depend on how the test's processes are scheduled. Several processes (spawned, each
with its own connections) and threads in each work on one portal at once.
"""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
import threading
import time

import pytest

from adapters.bitrix24.limits import OperatingBudget
from adapters.redis_limits import RedisLimits, RedisOperatingBudget

PROCS, THREADS = 3, 3
AMO = "acme.amocrm.ru"
B24 = "b24-acme.bitrix24.ru"
MARGIN = 0.05  # amoCRM's window margin (adapters.amocrm.client.WINDOW_MARGIN_S)


def server_now(r) -> float:
    s, us = r.time()
    return s + us / 1e6


def limits(url: str, prefix: str, **kw) -> RedisLimits:
    import redis

    return RedisLimits(redis.Redis.from_url(url), prefix=prefix, **kw)


def max_in_window(stamps: list[float], width: float) -> int:
    """The most stamps in any half-open window [t, t + width)."""
    stamps = sorted(stamps)
    best, j = 0, 0
    for i, t in enumerate(stamps):
        while j < len(stamps) and stamps[j] < t + width:
            j += 1
        best = max(best, j - i)
    return best


def bucket_peak(stamps: list[float], drain: float) -> float:
    """The highest level a bucket draining `drain`/s reaches with one request at each stamp."""
    level, at, peak = 0.0, None, 0.0
    for t in sorted(stamps):
        level = max(0.0, level - (t - at) * drain) if at is not None else 0.0
        level, at = level + 1, t
        peak = max(peak, level)
    return peak


# ---- workers (module level: spawned processes import them) ---------------------------------


def _run_threads(target, threads: int, barrier) -> list:
    out, lock = [], threading.Lock()

    def run():
        barrier.wait()
        got = target()
        with lock:
            out.extend(got)

    ts = [threading.Thread(target=run) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return out


def amo_worker(barrier, results, threads, url, prefix, portal, each):
    lim = limits(url, prefix)

    def grants():
        limiter = lim.rate_limiter("amocrm", portal, 7, per=1.0 + MARGIN)
        return [limiter.acquire() for _ in range(each)]

    results.put(_run_threads(grants, threads, barrier))


def amo_hammer(url, prefix, portal, threads, stop):
    lim = limits(url, prefix)

    def run():
        limiter = lim.rate_limiter("amocrm", portal, 7, per=1.0 + MARGIN)
        while not stop.is_set():
            limiter.acquire()

    ts = [threading.Thread(target=run) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


def bucket_worker(barrier, results, threads, url, prefix, each):
    lim = limits(url, prefix)

    def grants():
        bucket = lim.leaky_bucket("bitrix24", B24, size=10, drain=20.0, margin=2.0)
        return [bucket.acquire() for _ in range(each)]

    results.put(_run_threads(grants, threads, barrier))


class Enough(Exception):
    """Raised by a test's sleep: the budget wanted to wait."""


def budget_worker(barrier, results, threads, url, prefix):
    lim = limits(url, prefix)

    def grants():
        budget = lim.operating_budget("bitrix24", B24, budget_s=480.0)
        budget.sleep = _refuse
        got = []
        try:
            while True:
                n, _ = budget.take({"crm.deal.list": 5})  # held, never released
                got.append(n)
        except Enough:
            return got

    results.put(_run_threads(grants, threads, barrier))


def _refuse(_seconds):
    raise Enough()


def _spawn(target, *args, procs=PROCS, threads=THREADS):
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(procs * threads), ctx.Queue()
    ps = [ctx.Process(target=target, args=(barrier, results, threads, *args)) for _ in range(procs)]
    for p in ps:
        p.start()
    out = []
    for _ in ps:
        out.extend(results.get(timeout=120))
    for p in ps:
        p.join(30)
        assert p.exitcode == 0
    return out


# ---- amoCRM: 7 requests/s per account --------------------------------------------------------


@pytest.mark.redis
def test_many_processes_and_threads_never_put_8_requests_in_any_second(redis_url, redis_prefix):
    each = 3
    stamps = _spawn(amo_worker, redis_url, redis_prefix, AMO, each)
    assert len(stamps) == PROCS * THREADS * each
    assert max_in_window(stamps, 1.0) <= 7
    assert max_in_window(stamps, 1.0 + MARGIN) <= 7  # the window we keep is the longer one
    rate = (len(stamps) - 1) / (max(stamps) - min(stamps))
    assert 5.0 < rate <= 7.0  # and yet close to the rate


def test_the_window_itself_admits_7_then_says_how_long_to_wait(redis_url, redis_prefix):
    lim = limits(redis_url, redis_prefix).rate_limiter("amocrm", AMO, 7, per=1.0)
    answers = [lim._call("commit", f"m{i}") for i in range(8)]  # no pacing: the window alone
    assert [ok for ok, _, _ in answers] == [True] * 7 + [False]
    first, (_, wait, now) = answers[0][2], answers[7]
    assert wait == pytest.approx(first + 1.0 - now, abs=1e-3) and 0.8 < wait <= 1.0


@pytest.mark.redis
def test_a_busy_portal_does_not_slow_another(redis_url, redis_prefix, redis_client):
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    ps = [
        ctx.Process(target=amo_hammer, args=(redis_url, redis_prefix, "busy.amocrm.ru", 4, stop))
        for _ in range(2)
    ]
    for p in ps:
        p.start()
    try:
        lim = limits(redis_url, redis_prefix)
        busy_next = lim.key("amocrm", "busy.amocrm.ru", "rate") + ":next"
        deadline = time.monotonic() + 60
        while float(redis_client.get(busy_next) or 0) - server_now(redis_client) < 1.0:
            assert time.monotonic() < deadline, "the busy portal never queued a second's work"
            time.sleep(0.05)
        queued = float(redis_client.get(busy_next)) - server_now(redis_client)
        quiet = lim.rate_limiter("amocrm", "quiet.amocrm.ru", 7, per=1.0 + MARGIN)
        start = server_now(redis_client)
        grants = [quiet.acquire() for _ in range(7)]
    finally:
        stop.set()
        for p in ps:
            p.join(30)
    assert queued >= 1.0
    assert grants[0] - start < 0.2  # no wait behind the busy portal's queue
    assert grants[-1] - grants[0] < 6 * quiet.gap + 0.5  # its own pace only


def test_rate_keys_expire(redis_url, redis_prefix, redis_client):
    lim = limits(redis_url, redis_prefix).rate_limiter("amocrm", AMO, 7, per=1.0 + MARGIN)
    lim.acquire()
    lim.acquire()
    keys = list(redis_client.scan_iter(f"{redis_prefix}:*"))
    assert len(keys) == 2
    assert all(0 < redis_client.pttl(k) <= 3000 for k in keys)


# ---- Bitrix24: the leaky bucket ----------------------------------------------------------------


@pytest.mark.redis
def test_many_processes_never_overfill_the_bucket(redis_url, redis_prefix):
    each = 8
    stamps = _spawn(bucket_worker, redis_url, redis_prefix, each)
    n = PROCS * THREADS * each
    assert len(stamps) == n
    assert bucket_peak(stamps, 20.0) <= 8 + 1e-3  # size 10, kept 2 under
    assert bucket_peak(stamps, 20.0) > 7  # and it was full
    assert max(stamps) - min(stamps) >= (n - 8) / 20.0 - 1e-3


def test_the_real_bucket_lets_48_through_then_one_every_half_second(redis_url, redis_prefix, redis_client):
    bucket = limits(redis_url, redis_prefix).leaky_bucket("bitrix24", B24)  # 50 deep, 2/s
    assert bucket.capacity == 48
    pipe = redis_client.pipeline(transaction=True)  # 60 requests in one instant of the server
    for _ in range(60):
        bucket._script(
            keys=[bucket.key], args=[repr(bucket.capacity), repr(bucket.drain), "acquire"], client=pipe
        )
    out = [(float(w), float(at)) for w, at, _ in pipe.execute()]
    waits = [w for w, _ in out]
    assert sum(1 for w in waits if w == 0) == 48
    assert waits[48] == pytest.approx(0.5, abs=0.01)
    assert waits[59] == pytest.approx(6.0, abs=0.01)
    ats = [at for _, at in out]
    assert all(b - a == pytest.approx(0.5, abs=1e-6) for a, b in zip(ats[48:], ats[49:]))
    assert bucket_peak(ats, 2.0) <= 48 + 1e-6


def test_penalise_fills_the_bucket(redis_url, redis_prefix, redis_client):
    bucket = limits(redis_url, redis_prefix).leaky_bucket("bitrix24", B24)
    wait, _ = bucket.reserve()
    assert wait == 0
    bucket.penalise()
    wait, _ = bucket.reserve()
    assert wait == pytest.approx(0.5, abs=0.02)
    key = bucket.key
    assert 0 < redis_client.pttl(key) <= 26_000 + 1000  # empty after 49/2 s: gone soon after


def test_bucket_acquire_sleeps_what_the_script_says(redis_url, redis_prefix):
    bucket = limits(redis_url, redis_prefix).leaky_bucket("bitrix24", B24, size=3, drain=2.0, margin=1.0)
    slept = []
    bucket.sleep = slept.append
    for _ in range(4):
        bucket.acquire()
    assert slept and len(slept) == 2 and slept[0] == pytest.approx(0.5, abs=0.02)
    assert slept[1] == pytest.approx(1.0, abs=0.02)


# ---- Bitrix24: the operating budget ------------------------------------------------------------


def in_process(operating: float, budget_s=480.0) -> OperatingBudget:
    ob = OperatingBudget(budget_s)
    ob.observe("m", {"operating": operating})
    return ob


def test_take_grants_what_the_in_process_budget_grants(redis_url, redis_prefix):
    ob = limits(redis_url, redis_prefix).operating_budget("bitrix24", B24)
    ob.observe("m", {"operating": 460.0})
    n, held = ob.take({"m": 100})
    assert n == in_process(460.0).take({"m": 100})[0] == 51  # (480 - 9.6 - 460) // 0.2
    assert held == {"m": pytest.approx(n * 0.2)}
    assert ob.state("m")["inflight"] == pytest.approx(n * 0.2)
    ob.release(held)
    assert ob.state("m")["inflight"] == 0.0


def test_take_sizes_chains_exactly_as_the_in_process_budget_does(redis_url, redis_prefix):
    lim = limits(redis_url, redis_prefix)
    for i, operating in enumerate([0.0, 100.3, 333.33, 460.4, 465.0, 470.0, 470.2, 470.39]):
        for duration in (None, 0.07, 0.3, 1.9):
            method = f"m{i}-{duration}"
            ob, local = lim.operating_budget("bitrix24", B24), OperatingBudget(480.0)
            for b in (ob, local):
                b.observe(method, {"operating": operating, "duration": duration})
                b.observe(method, {"operating": operating, "duration": duration})
            n, held = ob.take({method: 1000})
            want, local_held = local.take({method: 1000})
            assert (n, held[method]) == (want, pytest.approx(local_held[method])), method


def test_budget_blocks_when_the_reported_total_would_cross_it(redis_url, redis_prefix, redis_client):
    ob = limits(redis_url, redis_prefix).operating_budget("bitrix24", B24)
    reset = server_now(redis_client) + 3.0
    ob.observe("m", {"operating": 470.3, "operating_reset_at": reset, "duration": 0.2})
    slept = []

    def sleep(s):
        slept.append(s)
        raise Enough()

    ob.sleep = sleep
    with pytest.raises(Enough):
        ob.take({"m": 1})
    assert slept[0] == pytest.approx(3.05, abs=0.1)  # until the oldest minute drops out
    assert ob.waited_s == pytest.approx(slept[0])
    ob.sleep = time.sleep
    ob.observe("m", {"operating": 400.0})  # the window moved on
    assert ob.take({"m": 1})[0] == 1


@pytest.mark.redis
def test_processes_never_reserve_more_than_the_budget_has_left(redis_url, redis_prefix):
    limits(redis_url, redis_prefix).operating_budget("bitrix24", B24).observe(
        "crm.deal.list", {"operating": 460.4}
    )
    counts = _spawn(budget_worker, redis_url, redis_prefix)
    room = in_process(460.4).take({"m": 10**6})[0]  # (480 - 9.6 - 460.4) / 0.2
    assert room == 49  # 10.0 // 0.2, as Python floors it
    assert sum(counts) == room  # all of it, and not one call more


def test_an_unknown_method_is_probed_with_one_call_first(redis_url, redis_prefix):
    lim = limits(redis_url, redis_prefix)
    a = lim.operating_budget("bitrix24", B24)
    b = lim.operating_budget("bitrix24", B24)  # another worker
    n, held = a.take({"m": 10})
    assert n == 1
    b.sleep = _refuse
    with pytest.raises(Enough):  # waits for the probe's report
        b.take({"m": 10})
    a.release(held)
    a.observe("m", {"operating": 1.0, "duration": 0.2})
    assert b.take({"m": 10})[0] == 10


def test_block_holds_every_worker_until_the_reset(redis_url, redis_prefix, redis_client):
    lim = limits(redis_url, redis_prefix)
    a, b = lim.operating_budget("bitrix24", B24), lim.operating_budget("bitrix24", B24)
    a.observe("m", {"operating": 100.0})
    a.block("m", server_now(redis_client) + 2.0)
    slept = []

    def sleep(s):
        slept.append(s)
        raise Enough()

    b.sleep = sleep
    with pytest.raises(Enough):
        b.take({"m": 1, "other": 1})
    assert slept[0] == pytest.approx(2.0, abs=0.1)
    assert b.state("m")["known"] is False


def test_a_dead_workers_reservation_expires(redis_url, redis_prefix, redis_client):
    lim = limits(redis_url, redis_prefix, hold_ttl_s=0.3)
    ob = lim.operating_budget("bitrix24", B24)
    ob.observe("m", {"operating": 1.0})
    ob.take({"m": 20})  # never released
    first = ob.state("m")
    assert first["inflight"] == pytest.approx(4.0)
    deadline = time.monotonic() + 10
    while (now := ob.state("m"))["inflight"] > 0:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert now["now"] - first["now"] >= 0.3 - 0.05  # not before its time
    for key in redis_client.scan_iter(f"{redis_prefix}:*"):
        assert redis_client.ttl(key) > 0  # nothing without an expiry


# ---- the injection point -----------------------------------------------------------------------


def test_adapters_take_redis_limits_keyed_by_portal(redis_url, redis_prefix, tmp_path):
    from adapters import registry
    from adapters.bitrix24.limits import LeakyBucket
    from adapters.http import RateLimiter
    from adapters.redis_limits import RedisLeakyBucket, RedisRateLimiter
    from connector.config.loader import SourceConfig
    from connector.mirror.tokens import TokenStore

    tokens = TokenStore(str(tmp_path / "tokens.json"))
    lim = limits(redis_url, redis_prefix)
    amo = SourceConfig(
        name="main", kind="amocrm", base_url="https://Acme.amocrm.ru", access_token="t0ken-0123456789"
    )
    a = registry.get("amocrm").make_adapter(amo, tokens, limits=lim)
    assert isinstance(a.http.limiter, RedisRateLimiter)
    assert a.http.limiter.key == f"{redis_prefix}:amocrm:{{acme.amocrm.ru}}:rate"
    assert (a.http.limiter.limit, a.http.limiter.gap) == (7, pytest.approx(1.25 / 7))
    assert isinstance(registry.get("amocrm").make_adapter(amo, tokens).http.limiter, RateLimiter)

    b24 = SourceConfig(
        name="b", kind="bitrix24", webhook_url="https://b24-acme.bitrix24.ru/rest/1/abcdefgh12345678/"
    )
    b = registry.get("bitrix24").make_adapter(b24, None, limits=lim)
    assert isinstance(b.client.bucket, RedisLeakyBucket) and b.client.bucket.capacity == 48
    assert isinstance(b.client.budget, RedisOperatingBudget) and b.client.budget.budget == 480
    assert b.client.budget.key == f"{redis_prefix}:bitrix24:{{{B24}}}:budget"
    assert b.client.http.limiter is b.client.bucket
    assert isinstance(registry.get("bitrix24").make_adapter(b24, None).client.bucket, LeakyBucket)


@pytest.mark.redis
@pytest.mark.parametrize("kind", ["amocrm", "bitrix24"])
def test_a_sync_through_redis_limits_mirrors_what_a_local_one_does(
    kind, redis_url, redis_prefix, tmp_path, request
):
    import sqlite3

    from adapters import registry
    from connector.config.loader import SourceConfig
    from connector.mirror.store import Mirror
    from connector.mirror.tokens import TokenStore
    from connector.run.sync import sync_source

    srv = request.getfixturevalue("amo_sandbox" if kind == "amocrm" else "b24_sandbox")
    cfg = registry.get(kind).sandbox_source(srv)
    source = SourceConfig(name="s", kind=kind, requests_per_second=500.0, max_workers=4, **cfg)
    tokens = TokenStore(str(tmp_path / "tokens.json"))
    tables = {}
    for how, backend in (("local", None), ("redis", limits(redis_url, redis_prefix))):
        adapter = registry.get(kind).make_adapter(source, tokens, limits=backend)
        db = str(tmp_path / f"{how}.db")
        with Mirror(db) as mirror:
            results = sync_source(mirror, adapter)
        adapter.close()
        assert all(r.status == "ok" for r in results), [(r.stream, r.error) for r in results]
        with sqlite3.connect(db) as conn:
            names = [
                n
                for (n,) in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE '\\_%' ESCAPE '\\'"
                )
            ]
            tables[how] = {n: conn.execute(f"SELECT count(*) FROM [{n}]").fetchone()[0] for n in names}
    assert tables["redis"] == tables["local"] and sum(tables["local"].values()) > 100


def test_the_local_engine_never_imports_redis():
    code = (
        "import sys\n"
        "import adapters.redis_limits, adapters.limits, connector.fleet.lease\n"
        "from adapters import registry\n"
        "from connector.config.loader import SourceConfig\n"
        "registry.get('bitrix24').make_adapter(SourceConfig(name='b', kind='bitrix24', "
        "webhook_url='https://x.bitrix24.ru/rest/1/abcdefgh12345678/'), None)\n"
        "assert 'redis' not in sys.modules, 'redis imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.redis
def test_one_limiter_object_shared_by_many_threads_holds(redis_url, redis_prefix):
    """Streams side by side share their source's limiter objects: 8 threads on one rate
    limiter never put 8 grants in any second, and its counters miss none of them."""
    limiter = limits(redis_url, redis_prefix).rate_limiter("amocrm", AMO, 7, per=1.0 + MARGIN)
    bucket = limits(redis_url, redis_prefix).leaky_bucket("bitrix24", B24, size=10, drain=20.0, margin=2.0)
    stamps = _run_threads(lambda: [limiter.acquire() for _ in range(3)], 8, threading.Barrier(8))
    assert len(stamps) == 24 and max_in_window(stamps, 1.0) <= 7
    assert limiter.round_trips >= 24 and limiter.last_grant == max(stamps)
    grants = _run_threads(lambda: [bucket.acquire() for _ in range(5)], 8, threading.Barrier(8))
    assert len(grants) == 40 and bucket.round_trips == 40
