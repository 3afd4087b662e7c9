"""The APScheduler jobs under a controlled clock: on time, coalesce, misfire, max_instances.

APScheduler 3 reads the time with `datetime.now()` in its scheduler and executor modules; we
swap that `datetime` for one whose now() we set, and drive `_process_jobs()` by hand.
"""

import threading
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import apscheduler.executors.base
import apscheduler.schedulers.base
import pytest
from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED
from apscheduler.executors.debug import DebugExecutor
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.base import BaseScheduler

import connector.run.scheduler
from connector.config import loader as config_mod
from connector.run.scheduler import build_scheduler

MSK = ZoneInfo("Europe/Moscow")
CONFIG = """
[storage]
path = "{db}"

[[sources]]
name = "main"
kind = "amocrm"
base_url = "https://example.amocrm.ru"
access_token = "tok"

[schedule]
timezone = "Europe/Moscow"
sync = "0 2 * * *"
misfire_grace_s = 3600
{extra}
"""


class FakeClock(datetime):
    current = datetime(2026, 11, 23, 1, 59, tzinfo=MSK)

    @classmethod
    def now(cls, tz=None):
        return cls.current.astimezone(tz) if tz else cls.current.replace(tzinfo=None)


class ManualScheduler(BaseScheduler):
    """Runs due jobs only when the test calls tick()."""

    def wakeup(self):
        pass

    def shutdown(self, wait=True):
        super().shutdown(wait)

    def tick(self, at: datetime):
        FakeClock.current = at
        self._process_jobs()


class FakeRunner:
    def __init__(self):
        self.calls = []

    def nightly(self, source):
        self.calls.append(("nightly", source, FakeClock.current))

    def incremental(self, source):
        self.calls.append(("incremental", source, FakeClock.current))


@pytest.fixture
def clock(monkeypatch):
    monkeypatch.setattr(apscheduler.schedulers.base, "datetime", FakeClock)
    monkeypatch.setattr(apscheduler.executors.base, "datetime", FakeClock)
    monkeypatch.setattr(connector.run.scheduler, "datetime", FakeClock)  # run_now's "now"
    FakeClock.current = datetime(2026, 11, 23, 1, 59, tzinfo=MSK)
    return FakeClock


def make(tmp_path, extra="", executor=None, runner=None, **kw):
    path = tmp_path / "config.toml"
    path.write_text(CONFIG.format(db=tmp_path / "m.db", extra=extra))
    cfg = config_mod.load(str(path))
    runner = runner or FakeRunner()
    sched = ManualScheduler(timezone=MSK, executors={"default": executor or DebugExecutor()})
    events = []
    sched.add_listener(lambda ev: events.append(ev), EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES)
    build_scheduler(cfg, runner, scheduler=sched, **kw)
    sched.start()
    return sched, runner, events


def at(day, hour, minute=0, second=0):
    return datetime(2026, 11, day, hour, minute, second, tzinfo=MSK)


def test_jobs_carry_coalesce_max_instances_and_grace(tmp_path, clock):
    sched, _, _ = make(tmp_path, 'incremental = "*/30 9-18 * * 1-5"')
    jobs = {j.id: j for j in sched.get_jobs()}
    assert set(jobs) == {"sync:main", "incremental:main"}
    for j in jobs.values():
        assert j.coalesce is True and j.max_instances == 1 and j.misfire_grace_time == 3600
    assert jobs["sync:main"].next_run_time == at(23, 2)
    assert jobs["incremental:main"].next_run_time == at(23, 9)
    sched.shutdown(wait=False)


def test_runs_on_time_once(tmp_path, clock):
    sched, runner, events = make(tmp_path)
    sched.tick(at(23, 1, 59, 59))
    assert runner.calls == []
    sched.tick(at(23, 2, 0, 3))
    sched.tick(at(23, 2, 0, 9))
    assert [c[:2] for c in runner.calls] == [("nightly", "main")]
    assert sched.get_job("sync:main").next_run_time == at(24, 2)
    assert events == []
    sched.shutdown(wait=False)


def test_three_missed_nights_coalesce_into_one_run(tmp_path, clock):
    sched, runner, events = make(tmp_path)
    sched.tick(at(26, 2, 10))  # asleep over 02:00 on the 23rd, 24th, 25th and 26th
    # without coalesce the three older run times would each be reported missed
    assert len(runner.calls) == 1
    assert sched.get_job("sync:main").next_run_time == at(27, 2)
    assert events == []
    sched.shutdown(wait=False)


def test_later_than_grace_is_skipped_not_run_at_noon(tmp_path, clock):
    sched, runner, events = make(tmp_path)
    sched.tick(at(23, 3, 30))  # 90 minutes late, grace is 60
    assert runner.calls == []
    assert [e.code for e in events] == [EVENT_JOB_MISSED]
    assert events[0].scheduled_run_time == at(23, 2)
    assert sched.get_job("sync:main").next_run_time == at(24, 2)
    sched.tick(at(24, 2, 0, 1))  # and the next night runs normally
    assert len(runner.calls) == 1
    sched.shutdown(wait=False)


def test_short_grace_skips_a_five_minute_late_run(tmp_path, clock):
    path = tmp_path / "config.toml"
    path.write_text(
        CONFIG.format(db=tmp_path / "m.db", extra="").replace(
            "misfire_grace_s = 3600", "misfire_grace_s = 60"
        )
    )
    cfg = config_mod.load(str(path))
    runner = FakeRunner()
    sched = ManualScheduler(timezone=MSK, executors={"default": DebugExecutor()})
    build_scheduler(cfg, runner, scheduler=sched)
    sched.start()
    sched.tick(at(23, 2, 5))
    assert runner.calls == []
    sched.shutdown(wait=False)


def test_a_run_still_going_is_not_started_twice(tmp_path, clock):
    started, release = threading.Event(), threading.Event()

    class SlowRunner(FakeRunner):
        def nightly(self, source):
            super().nightly(source)
            started.set()
            release.wait(30)

    sched, runner, events = make(tmp_path, executor=ThreadPoolExecutor(4), runner=SlowRunner(), interval_s=60)
    first = sched.get_job("sync:main").next_run_time
    sched.tick(first + timedelta(seconds=1))
    assert started.wait(10)
    sched.tick(first + timedelta(seconds=61))  # the next interval, while the first still runs
    assert [e.code for e in events] == [EVENT_JOB_MAX_INSTANCES]
    release.set()
    sched.shutdown(wait=True)
    assert len(runner.calls) == 1


def test_run_now_schedules_the_nightly_job_immediately(tmp_path, clock):
    sched, runner, _ = make(tmp_path, run_now=True)
    assert sched.get_job("sync:main").next_run_time == at(23, 1, 59)
    sched.tick(at(23, 1, 59, 1))
    assert len(runner.calls) == 1
    assert sched.get_job("sync:main").next_run_time == at(23, 2)
    sched.shutdown(wait=False)
