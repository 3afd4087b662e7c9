"""The adapter's paced limiter: even spacing inside a slightly longer window."""

from adapters.amocrm.client import WINDOW_MARGIN_S, PacedLimiter
from tests.unit.test_amocrm_support import make_adapter


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, s):
        self.now += s


def test_requests_are_spaced_evenly_and_never_8_in_a_second():
    clock = Clock()
    lim = PacedLimiter(7, per=1.0 + WINDOW_MARGIN_S)
    lim.clock, lim.sleep = clock, clock.sleep
    stamps = []
    for _ in range(50):
        lim.acquire()
        stamps.append(clock.now)
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    assert min(gaps) >= (1.0 + WINDOW_MARGIN_S) / 7 - 1e-9
    assert all(stamps[i + 7] - stamps[i] > 1.0 for i in range(len(stamps) - 7))
    # and the pace is still close to 7/s
    assert 6.5 < 49 / (stamps[-1] - stamps[0]) <= 7.0


def test_adapter_uses_configured_rate(tmp_path):
    a = make_adapter(tmp_path, requests_per_second=5.0)
    assert isinstance(a.http.limiter, PacedLimiter) and a.http.limiter.limit == 5
    slow = make_adapter(tmp_path, requests_per_second=0.5)
    assert slow.http.limiter.per == 2.0
