"""The Bitrix24 throttle (requests in flight, AIMD) and the operating budget, without timing."""

from __future__ import annotations

import threading

import responses

from adapters.bitrix24.adapter import Bitrix24Adapter
from adapters.bitrix24.limits import OperatingBudget
from adapters.bitrix24.throttle import Answer, Throttle
from connector.config.loader import SourceConfig

HOOK = "https://portal.example.com/rest/1/s3cretcode/"
DEALS = "crm.deal.list"


def client(**kw):
    cfg = SourceConfig(name="b24", kind="bitrix24", webhook_url=HOOK, requests_per_second=1000.0, **kw)
    a = Bitrix24Adapter(cfg, None)
    a.client.sleep = a.client.http.sleep = lambda s: None
    return a


def healthy(t: Throttle, n: int = 1) -> None:
    for _ in range(n):
        with t.slot((DEALS,)):
            t.answered([Answer(DEALS, seconds=0.1, calls=1)])


def test_starts_wide_but_never_above_the_bucket_or_max_workers():
    assert client().client.throttle.ceiling == 48  # bucket 50, two kept in reserve
    assert client(bucket_size=10).client.throttle.ceiling == 8
    assert client(max_workers=3).client.throttle.ceiling == 3  # the admin's ceiling
    a = client(bucket_size=10)
    assert a.pager.workers == 8 and a.client.throttle.limit == 8


class Held:
    """`n` requests in flight in other threads, each holding its slot until `done()`."""

    def __init__(self, t: Throttle, methods: tuple, n: int, each=None):
        self.release = threading.Event()
        inside = threading.Barrier(n + 1, timeout=30)
        reported = threading.Barrier(n + 1, timeout=30)

        def request():
            with t.slot(methods):
                inside.wait()
                if each:
                    each()
                reported.wait()
                self.release.wait(30)

        self.threads = [threading.Thread(target=request) for _ in range(n)]
        for th in self.threads:
            th.start()
        inside.wait()
        reported.wait()

    def done(self):
        self.release.set()
        for th in self.threads:
            th.join()


@responses.activate
def test_a_503_halves_the_requests_in_flight_once_per_round_and_healthy_answers_grow_them_back():
    a = client()
    t = a.client.throttle
    responses.post(
        HOOK + "profile",
        status=503,
        json={"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"},
    )
    responses.post(HOOK + "profile", json={"result": {"ID": 1}, "time": {"duration": 0.1}})
    a.client.call("profile")  # one 503, retried, then answered
    assert t.cuts == 1 and 24 <= t.limit < 25
    # Three requests in flight all meet 503s: one cut, not three.
    Held(t, (DEALS,), 3, each=t.congested).done()
    assert t.cuts == 2 and 12 <= t.limit < 13
    with t.slot((DEALS,)):  # sent after that cut: cuts again
        t.congested()
    assert t.cuts == 3 and 6 <= t.limit < 7
    for _ in range(5):
        t.congested()  # outside any request: each is a cut, down to one and no lower
    assert t.limit == 1.0 and t.lowest == 1.0
    seen = [t.limit]
    while t.limit < t.ceiling:
        healthy(t)
        seen.append(t.limit)
    assert seen == sorted(seen) and t.limit == t.ceiling == 48
    healthy(t, 50)
    assert t.limit == 48  # never past the ceiling


def test_a_sub_call_far_slower_than_its_pace_cuts_and_the_pace_is_per_kind_of_call():
    t = Throttle(16)
    fast, full = Answer(DEALS, 0.05, 1, kind="ids"), Answer(DEALS, 0.5, 1, kind="full")
    for a in (fast, full, fast, full):
        with t.slot((DEALS,)):
            t.answered([a])
    assert t.cuts == 0  # a full page is slower than an id page, but not slow for its kind
    with t.slot((DEALS,)):
        t.answered([Answer(DEALS, 10 * 2.0, 10, kind="full")])  # 2 s a page: the portal queues
    assert t.cuts == 1 and t.limit == 8


def test_in_flight_requests_never_plan_more_server_time_than_the_budget_has_left():
    t = Throttle(48)
    with t.slot((DEALS, "crm.item.list")):
        # 2.5 s of each method per request; 5 s of deals' budget left, plenty of the links'
        t.answered([Answer(DEALS, 2.5, 25, left=5.0), Answer("crm.item.list", 2.5, 25, left=300.0)])
    assert t.caps == {DEALS: 2, "crm.item.list": 48}
    held = Held(t, (DEALS,), 2)  # two deals requests in flight
    assert not t._may_start((DEALS,))  # a third would plan 7.5 s into 5 s
    assert not t._may_start((DEALS, "crm.item.list"))
    assert t._may_start(("crm.item.list",))  # the other method keeps going
    held.done()
    assert t._may_start((DEALS,))
    with t.slot((DEALS,)):
        t.answered([Answer(DEALS, 2.5, 25, left=0.0)])  # spent: one probe, the budget waits
    assert t.caps[DEALS] == 1


def test_concurrent_slots_never_exceed_the_limit():
    t = Throttle(5)
    t.congested()  # limit 2.5: two at a time
    inside, peak, lock = [0], [0], threading.Lock()
    go = threading.Barrier(2, timeout=30)  # the first two must be inside together

    def work(i):
        with t.slot((DEALS,)):
            with lock:
                inside[0] += 1
                peak[0] = max(peak[0], inside[0])
            if i < 2:
                go.wait()
            with lock:
                inside[0] -= 1

    threads = [threading.Thread(target=work, args=(i,)) for i in range(12)]
    for th in threads[:2]:
        th.start()
    for th in threads[:2]:
        th.join()
    for th in threads[2:]:
        th.start()
    for th in threads[2:]:
        th.join()
    assert peak[0] == 2 and t.inflight == 0 and t.peak == 2


class FakeClock:
    def __init__(self):
        self.t = 1_000_000.0
        self.slept: list[float] = []
        self.on_sleep = None

    def __call__(self):
        return self.t

    def sleep(self, s):
        self.t += s
        self.slept.append(s)
        if self.on_sleep:
            self.on_sleep()


def test_budget_reservations_never_pass_what_is_left_in_the_window():
    c = FakeClock()
    ob = OperatingBudget(480, safety_s=5, clock=c, sleep=c.sleep)
    ob.release(ob.take({DEALS: 1})[1])
    ob.observe(DEALS, {"operating": 470.0, "operating_reset_at": c.t + 60, "duration": 0.1})
    n1, held1 = ob.take({DEALS: 50, "crm.item.list": 50})
    assert n1 == 1  # the links' total is unknown: one call probes it
    ob.release(held1)
    ob.observe("crm.item.list", {"operating": 10.0, "operating_reset_at": c.t + 60, "duration": 0.1})
    n2, held2 = ob.take({DEALS: 50, "crm.item.list": 50})
    assert n2 * 0.1 <= 480 - 5 - 470 + 1e-9 and n2 >= 1  # deals' room sizes the batch

    def answered():  # the in-flight batch reports: deals' budget is now spent
        ob.release(held2)
        ob.observe(DEALS, {"operating": 476.0, "operating_reset_at": c.t + 60, "duration": 0.1})
        c.on_sleep = None

    c.on_sleep = answered
    start = c.t
    n3, held3 = ob.take({DEALS: 50})
    assert c.t - start >= 60 and n3 == 1  # waited for the window to reset, then one probe


def test_released_reservations_leave_nothing_in_flight_and_probes_are_a_second_apart():
    c = FakeClock()
    ob = OperatingBudget(480, safety_s=5, clock=c, sleep=c.sleep)
    ob.release(ob.take({DEALS: 1})[1])
    ob.observe(DEALS, {"operating": 10.0, "operating_reset_at": c.t + 60, "duration": 0.13})
    helds = [ob.take({DEALS: k})[1] for k in (1, 3, 9)]
    for held in helds:
        ob.release(held)
    assert ob.state(DEALS)["inflight"] == 0.0  # no float residue that reads as a call in flight
    c.t += 5  # later: spent, and the reported reset already passed (whole seconds)
    ob.observe(DEALS, {"operating": 476.0, "operating_reset_at": c.t - 0.5, "duration": 0.1})
    n, held = ob.take({DEALS: 50})
    assert n == 1 and c.slept == []
    ob.release(held)
    ob.observe(DEALS, {"operating": 476.0, "operating_reset_at": c.t - 0.2, "duration": 0.1})
    ob.take({DEALS: 50})
    assert abs(sum(c.slept) - 1.0) < 1e-6  # the next probe waited a second


def test_a_stop_ends_the_wait_for_a_free_slot():
    from adapters.errors import Interrupted

    t = Throttle(ceiling=1)
    t.stop = threading.Event()
    holding, release, outcome = threading.Event(), threading.Event(), []

    def hold():
        with t.slot(("crm.deal.list",)):
            holding.set()
            release.wait(10)

    def wait_for_slot():
        try:
            with t.slot(("crm.deal.list",)):
                outcome.append("got a slot")
        except Interrupted:
            outcome.append("interrupted")

    holder = threading.Thread(target=hold)
    holder.start()
    assert holding.wait(10)
    waiter = threading.Thread(target=wait_for_slot)
    waiter.start()
    t.stop.set()
    waiter.join(5)
    assert not waiter.is_alive() and outcome == ["interrupted"]  # while the slot is still held
    release.set()
    holder.join(10)
