"""On the celery engine `serve` queues a portal's next refresh only once the worker has
finished its previous one, as the local engine runs them: one portal's refreshes never run
side by side (an older read saved over a newer one; the refresh share split into many small
batches), while other portals' go on. A fake fleet stands for Redis and the workers."""

from __future__ import annotations

import threading
import time

from adapters.hooks import Change
from connector.config import loader
from connector.hooks.service import Service

SECRET = "s" * 32


class FakeFleet:
    """Tasks queued by `enqueue_refresh`, finished when the test says (`finish`)."""

    limits = None

    def __init__(self):
        self.tasks: list[tuple[str, list[Change], threading.Event]] = []
        self.lock = threading.Lock()

    def enqueue_refresh(self, source, changes):
        with self.lock:
            self.tasks.append((source.name, sorted(changes, key=lambda c: c.id), threading.Event()))
            return str(len(self.tasks) - 1)

    def await_task(self, task_id, timeout_s, stop):
        done = self.tasks[int(task_id)][2]
        while not done.wait(0.01):
            if stop.is_set():
                return False
        return True

    def queued(self, source: str) -> list[list[int]]:
        with self.lock:
            return [[c.id for c in changes] for name, changes, _ in self.tasks if name == source]

    def finish(self, source: str) -> None:
        with self.lock:
            for name, _, done in self.tasks:
                if name == source:
                    done.set()


def config(tmp_path):
    path = tmp_path / "config.toml"
    sources = "".join(
        f"""
[[sources]]
name = "{name}"
kind = "amocrm"
base_url = "https://{name}.amocrm.ru"
access_token = "token"
webhook_secret = "{SECRET}"
"""
        for name in ("a", "b")
    )
    path.write_text(
        f'[storage]\npath = "{tmp_path / "mirror.db"}"\n{sources}\n[webhooks]\ndebounce_s = 0.05\n'
    )
    return loader.load(str(path))


def wait_for(pred, what: str, deadline_s: float = 5.0):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_portals_next_refresh_is_queued_once_its_worker_has_finished_the_last(tmp_path):
    fleet = FakeFleet()
    service = Service(config(tmp_path), fleet)
    try:
        service.debouncer.add("a", [Change("deals", 1)])
        wait_for(lambda: fleet.queued("a") == [[1]], "the first refresh of a")
        service.debouncer.add("a", [Change("deals", 2)])
        service.debouncer.add("a", [Change("deals", 3)])
        service.debouncer.add("b", [Change("deals", 9)])
        # b's refresh is not held up by a's; a's next one waits for its first (6 windows here)
        wait_for(lambda: fleet.queued("b") == [[9]], "b's refresh beside a's")
        time.sleep(0.3)
        assert fleet.queued("a") == [[1]]
        fleet.finish("a")
        wait_for(lambda: fleet.queued("a") == [[1], [2, 3]], "a's next refresh, both changes in one")
    finally:
        fleet.finish("a")
        fleet.finish("b")
        service.close()


def test_closing_stops_waiting_for_the_workers(tmp_path):
    fleet = FakeFleet()
    service = Service(config(tmp_path), fleet)
    service.debouncer.add("a", [Change("deals", 1)])
    wait_for(lambda: fleet.queued("a") == [[1]], "the refresh of a")
    t0 = time.monotonic()
    service.close()  # the task never finishes: serve stops all the same
    assert time.monotonic() - t0 < 5
