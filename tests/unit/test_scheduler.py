"""The Runner (sync -> KPI chaining, locks, alerts) and schedule parsing, with fake jobs."""

import threading
from datetime import datetime, timezone

import pytest
from click.testing import CliRunner

from connector.cli import main
from connector.config import loader as config_mod
from connector.config.cron import cron_day_of_week
from connector.run.locks import LockTimeout, source_lock
from connector.run.notify import Notifier
from connector.run.scheduler import Runner, next_runs, triggers
from connector.run.sync import StreamResult

BASE = """
[storage]
path = "{db}"

[[sources]]
name = "main"
kind = "amocrm"
base_url = "https://example.amocrm.ru"
access_token = "tok-xyz-1234567890"

[[sources]]
name = "b24"
kind = "bitrix24"
webhook_url = "https://portal.bitrix24.ru/rest/1/whsecret123/"
"""


def load_cfg(tmp_path, schedule="", notify=""):
    path = tmp_path / "config.toml"
    path.write_text(BASE.format(db=tmp_path / "mirror.db") + schedule + notify)
    return config_mod.load(str(path))


class FakeAdapter:
    def __init__(self, source):
        self.source, self.closed = source, False

    def close(self):
        self.closed = True


class Summary:
    def __init__(self, failed=0):
        self.clients, self.changed, self.requests, self.failed = 10, 4, 2, failed

    def line(self):
        return f"{self.clients} clients, {self.changed} changed, {self.failed} failed"


class Harness:
    """A Runner whose sync, KPI job, adapters and alerts are recorded fakes."""

    def __init__(self, cfg, statuses=("ok", "ok"), kpi=None, on_sync=None):
        self.calls, self.alerts, self.adapters = [], [], []
        self.statuses, self.kpi_result, self.on_sync = statuses, kpi, on_sync
        self.stop = threading.Event()
        self.runner = Runner(
            cfg,
            self.stop,
            Notifier(cfg.notify, sender=self._alert),
            sync_fn=self._sync,
            kpi_fn=self._kpi,
            adapter_fn=self._adapter,
        )

    def _alert(self, title, body):
        self.alerts.append((title, body))

    def _adapter(self, cfg, src):
        a = FakeAdapter(src.name)
        self.adapters.append(a)
        return a

    def _sync(self, mirror, adapter, streams=None, *, full=False, progress=None, stop=None):
        assert stop is self.stop and not full
        self.calls.append(("sync", adapter.source))
        if self.on_sync:
            self.on_sync(adapter)
        return [
            StreamResult(
                adapter.source,
                f"s{i}",
                st,
                rows=5,
                requests=1,
                error=None if st in ("ok", "skipped") else f"{st} here",
            )
            for i, st in enumerate(self.statuses)
        ]

    def _kpi(self, cfg, mirror, src, adapter, *, dry_run=False, only=None):
        assert adapter is self.adapters[-1] and not adapter.closed  # same adapter, still open
        assert not dry_run and only is None
        assert mirror.conn.execute("SELECT count(*) FROM sync_state").fetchone() is not None
        self.calls.append(("kpi", src.name))
        if isinstance(self.kpi_result, Exception):
            raise self.kpi_result
        return self.kpi_result or Summary()


def test_nightly_runs_kpi_right_after_a_successful_sync(tmp_path):
    h = Harness(load_cfg(tmp_path), statuses=("ok", "ok"))
    out = h.runner.nightly("main")
    assert h.calls == [("sync", "main"), ("kpi", "main")]
    assert out.status == "ok" and out.kpi.line().startswith("10 clients")
    assert h.alerts == [] and h.adapters[0].closed


def test_nightly_skips_kpi_after_a_stream_skipped_for_a_missing_scope(tmp_path):
    # its tables are incomplete, so no KPI runs on partial data
    h = Harness(load_cfg(tmp_path), statuses=("ok", "skipped"))
    out = h.runner.nightly("main")
    assert h.calls == [("sync", "main")] and out.status == "failed"


def test_failed_stream_means_no_kpi_and_one_alert(tmp_path):
    h = Harness(load_cfg(tmp_path), statuses=("ok", "failed"))
    out = h.runner.nightly("main")
    assert h.calls == [("sync", "main")]
    assert out.status == "failed" and "s1: failed here" in out.error
    assert len(h.alerts) == 1 and "main/s1" in h.alerts[0][0] and "failed here" in h.alerts[0][1]


def test_interrupted_sync_means_no_kpi_and_no_alert(tmp_path):
    h = Harness(load_cfg(tmp_path), statuses=("ok", "interrupted"))
    out = h.runner.nightly("main")
    assert h.calls == [("sync", "main")] and out.status == "interrupted" and h.alerts == []


def test_stop_during_sync_skips_kpi(tmp_path):
    h = Harness(load_cfg(tmp_path), on_sync=lambda a: h.stop.set())
    assert h.runner.nightly("main").status == "interrupted"
    assert h.calls == [("sync", "main")]
    assert h.runner.nightly("main").status == "interrupted"  # and nothing starts after a stop
    assert h.calls == [("sync", "main")]


def test_kpi_after_sync_false_and_incremental_jobs_only_sync(tmp_path):
    h = Harness(load_cfg(tmp_path, "[schedule]\nkpi_after_sync = false\n"))
    h.runner.nightly("main")
    h.runner.incremental("b24")
    assert h.calls == [("sync", "main"), ("sync", "b24")]


def test_kpi_crash_is_reported_not_raised(tmp_path):
    h = Harness(load_cfg(tmp_path), kpi=RuntimeError("no such field"))
    out = h.runner.nightly("main")
    assert out.status == "failed" and "KPI job: RuntimeError: no such field" in out.error
    assert len(h.alerts) == 1 and "main/kpi" in h.alerts[0][0]


def test_rejected_writebacks_alert(tmp_path):
    h = Harness(load_cfg(tmp_path), kpi=Summary(failed=3))
    out = h.runner.nightly("main")
    assert out.status == "failed" and "3 value(s) rejected" in h.alerts[0][1]


def test_success_alert_only_when_asked(tmp_path):
    h = Harness(load_cfg(tmp_path, notify="[notify]\non_success = true\n"))
    h.runner.nightly("main")
    assert len(h.alerts) == 1 and "ok: main" in h.alerts[0][0] and "10 clients" in h.alerts[0][1]


def test_job_holds_the_source_lock_while_syncing(tmp_path):
    cfg = load_cfg(tmp_path)
    seen = []

    def try_lock(adapter):
        with pytest.raises(LockTimeout):
            with source_lock(cfg, "main", timeout_s=0):
                pass
        with source_lock(cfg, "b24", timeout_s=0):  # other sources stay free
            seen.append("b24 free")

    h = Harness(cfg, on_sync=try_lock)
    assert h.runner.nightly("main").status == "ok" and seen == ["b24 free"]
    with source_lock(cfg, "main", timeout_s=0):  # released afterwards
        pass


def test_busy_source_nightly_alerts_incremental_does_not(tmp_path):
    cfg = load_cfg(tmp_path, "[schedule]\nlock_timeout_s = 0\n")
    h = Harness(cfg)
    with source_lock(cfg, "main", timeout_s=0):
        inc = h.runner.incremental("main")
        assert h.alerts == []
        night = h.runner.nightly("main")
    assert inc.status == night.status == "busy" and h.calls == []
    assert len(h.alerts) == 1 and "source 'main' is busy" in h.alerts[0][1]


def test_adapter_failure_is_one_alert_without_secrets(tmp_path):
    cfg = load_cfg(tmp_path)
    h = Harness(cfg)

    def broken(cfg, src):
        raise ValueError(f"cannot use {src.access_token}")

    h.runner.adapter_fn = broken
    out = h.runner.nightly("main")
    assert out.status == "failed" and "tok-xyz-1234567890" not in out.error
    assert len(h.alerts) == 1 and "tok-xyz-1234567890" not in h.alerts[0][1]


# -- schedule parsing ---------------------------------------------------------------------------


def test_triggers_follow_the_schedule_and_time_zone(tmp_path):
    cfg = load_cfg(
        tmp_path,
        '[schedule]\ntimezone = "Europe/Moscow"\nsync = "30 1 * * *"\nincremental = "0 9-18 * * 1-5"\n',
    )
    trig = triggers(cfg)
    assert set(trig) == {"sync", "incremental"}
    assert str(trig["sync"].timezone) == "Europe/Moscow"
    now = datetime(2026, 11, 23, 10, 0, 1, tzinfo=timezone.utc)  # a Monday, 13:00 in Moscow
    assert trig["sync"].get_next_fire_time(None, now) == datetime(2026, 11, 23, 22, 30, tzinfo=timezone.utc)
    assert trig["incremental"].get_next_fire_time(None, now) == datetime(
        2026, 11, 23, 11, 0, tzinfo=timezone.utc
    )
    friday_night = datetime(2026, 11, 27, 20, 0, tzinfo=timezone.utc)
    assert trig["incremental"].get_next_fire_time(None, friday_night) == datetime(
        2026, 11, 30, 6, 0, tzinfo=timezone.utc
    )  # Monday 09:00, not Saturday


@pytest.mark.parametrize(
    "field, days",
    [
        ("1-5", "mon,tue,wed,thu,fri"),
        ("0", "sun"),
        ("7", "sun"),
        ("*", "*"),
        ("5-7", "sun,fri,sat"),
        ("*/2", "sun,tue,thu,sat"),
        ("1/3", "mon,thu"),
        ("sat,sun", "sun,sat"),
        ("mon-wed", "mon,tue,wed"),
    ],
)
def test_cron_day_of_week_uses_cron_numbering(field, days):
    assert cron_day_of_week(field) == days


def test_bad_day_of_week_is_rejected():
    with pytest.raises(ValueError, match="day-of-week"):
        cron_day_of_week("5-2")


def test_default_schedule_is_2am_utc_with_no_incremental(tmp_path):
    rows = next_runs(load_cfg(tmp_path), now=datetime(2026, 11, 23, 10, 0, tzinfo=timezone.utc))
    assert rows == [
        {
            "source": "main",
            "job": "sync",
            "schedule": "0 2 * * *",
            "kpi": True,
            "next_run": "2026-11-24T02:00:00Z",
            "next_run_local": "2026-11-24 02:00 UTC",
        },
        {
            "source": "b24",
            "job": "sync",
            "schedule": "0 2 * * *",
            "kpi": True,
            "next_run": "2026-11-24T02:00:00Z",
            "next_run_local": "2026-11-24 02:00 UTC",
        },
    ]


def test_next_runs_lists_incremental_jobs_in_local_time(tmp_path):
    cfg = load_cfg(
        tmp_path,
        '[schedule]\ntimezone = "Asia/Yekaterinburg"\nincremental = "*/15 * * * *"\nkpi_after_sync = false\n',
    )
    rows = next_runs(cfg, now=datetime(2026, 11, 23, 10, 7, tzinfo=timezone.utc))
    inc = [r for r in rows if r["job"] == "incremental"]
    assert [r["source"] for r in inc] == ["main", "b24"]
    assert inc[0]["next_run"] == "2026-11-23T10:15:00Z"
    assert inc[0]["next_run_local"] == "2026-11-23 15:15 Asia/Yekaterinburg"
    assert inc[0]["kpi"] is False and rows[0]["kpi"] is False


def test_interval_override_for_testing(tmp_path):
    rows = next_runs(load_cfg(tmp_path), now=datetime(2026, 11, 23, 10, 0, tzinfo=timezone.utc), interval_s=5)
    assert rows[0]["schedule"] == "every 5s" and rows[0]["next_run"] is not None


@pytest.mark.parametrize(
    "schedule, key",
    [
        ('sync = "0 25 * * *"', "schedule.sync"),
        ('incremental = "every hour"', "schedule.incremental"),
        ('timezone = "Mars/Olympus"', "schedule.timezone"),
    ],
)
def test_bad_schedule_is_a_config_error_exit_2(tmp_path, schedule, key):
    load_cfg(tmp_path)  # writes a good file first: the error below is the schedule's alone
    path = tmp_path / "config.toml"
    path.write_text(path.read_text() + f"[schedule]\n{schedule}\n")
    res = CliRunner().invoke(main, ["--config", str(path), "run", "--once"])
    assert res.exit_code == 2
    assert key in res.output and "error:" in res.output


def invoke_run(tmp_path, monkeypatch, args, schedule=""):
    monkeypatch.setattr("connector.cli.run._on_signals", lambda stop: None)  # keep pytest's handlers
    cfg = load_cfg(tmp_path, schedule)
    return cfg, CliRunner().invoke(main, ["--config", cfg.path, "run", *args])


def test_once_with_busy_sources_fails_nightly_but_not_incremental(tmp_path, monkeypatch):
    cfg = load_cfg(tmp_path)
    with source_lock(cfg, "main", timeout_s=0), source_lock(cfg, "b24", timeout_s=0):
        _, nightly = invoke_run(tmp_path, monkeypatch, ["--once"], "[schedule]\nlock_timeout_s = 0\n")
        _, inc = invoke_run(
            tmp_path, monkeypatch, ["--once", "--incremental"], "[schedule]\nlock_timeout_s = 0\n"
        )
    assert nightly.exit_code == 1 and "main: busy" in nightly.output and "b24: busy" in nightly.output
    assert "source 'main' is busy" in nightly.output
    assert inc.exit_code == 0 and "main: busy" in inc.output


def test_incremental_flag_needs_once(tmp_path, monkeypatch):
    _, res = invoke_run(tmp_path, monkeypatch, ["--incremental"])
    assert res.exit_code == 2 and "--incremental goes with --once" in res.output


def test_unknown_source_is_exit_2(tmp_path, monkeypatch):
    _, res = invoke_run(tmp_path, monkeypatch, ["--once", "--source", "nope"])
    assert res.exit_code == 2 and "no source named 'nope'" in res.output


def test_kpi_job_work_left_in_an_open_transaction_is_kept(tmp_path):
    cfg = load_cfg(tmp_path)
    h = Harness(cfg)

    def kpi_leaving_a_transaction(cfg, mirror, src, adapter, **_):
        mirror.conn.execute(
            "INSERT INTO kpi_runs (source, computed_at, kpis, clients, values_changed, "
            "seconds) VALUES ('main', '2026-11-23T02:00:00Z', 'x', 1, 1, 0.1)"
        )
        return Summary()

    h.runner.kpi_fn = kpi_leaving_a_transaction
    assert h.runner.nightly("main").status == "ok"
    from connector.mirror.store import Mirror

    with Mirror(cfg.storage_path) as m:
        assert m.conn.execute("SELECT count(*) FROM kpi_runs").fetchone()[0] == 1


def test_runs_left_running_by_a_dead_process_are_closed_under_the_lock(tmp_path):
    cfg = load_cfg(tmp_path)
    from connector.mirror.store import Mirror

    with Mirror(cfg.storage_path) as m:
        m.start_run("dead", "main", "deals", "2026-11-23T02:00:00Z")
        m.start_run("dead", "b24", "deals", "2026-11-23T02:00:00Z")
    Harness(cfg).runner.nightly("main")
    with Mirror(cfg.storage_path) as m:
        rows = dict(m.conn.execute("SELECT source, status FROM sync_runs WHERE run_id = 'dead'").fetchall())
    assert rows == {"main": "interrupted", "b24": "running"}  # b24 was not ours to judge
