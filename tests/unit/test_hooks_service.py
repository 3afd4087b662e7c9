"""`connector.hooks.service.Service` on the local engine: every refresh of a source gets the
same adapter (its limiters hold the refresh share from one refresh to the next), and a
source's refreshes never overlap, whoever flushes them (the debouncer or the catch-up)."""

from __future__ import annotations

import threading
import time

from adapters.hooks import Change
from connector.config.loader import load
from connector.hooks.service import Service


def config(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(f"""
[storage]
path = "{tmp_path / "mirror.db"}"

[[sources]]
name = "amo"
kind = "amocrm"
base_url = "https://example.amocrm.ru"
access_token = "token-not-used-here"
webhook_secret = "{"s" * 32}"
""")
    return load(str(path))


def test_every_refresh_of_a_source_gets_the_same_adapter_and_they_never_overlap(tmp_path):
    seen, inside, most = [], [0], [0]
    lock = threading.Lock()
    release = threading.Event()

    def refresh(cfg, source, changes, adapter=None):
        with lock:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        release.wait(5)
        seen.append(adapter)
        with lock:
            inside[0] -= 1

    svc = Service(config(tmp_path), refresh=refresh)
    try:
        threads = [threading.Thread(target=svc.flush, args=("amo", [Change("deals", i)])) for i in (1, 2)]
        threads[0].start()
        end = time.monotonic() + 5
        while not inside[0] and time.monotonic() < end:  # the first refresh is under way,
            threads[0].join(0.01)  # holding on `release`
        assert inside[0] == 1
        threads[1].start()
        threads[1].join(0.3)  # the second one may not start its refresh meanwhile
        assert threads[1].is_alive() and inside[0] == 1
        release.set()
        for t in threads:
            t.join(10)
        assert len(seen) == 2 and seen[0] is not None and seen[0] is seen[1]
        assert most[0] == 1 and svc.refreshes == 2
    finally:
        svc.close()
