"""amoCRM's wider reads on a schedule (`adapters.amocrm.reread`): which window a read of a
`changes` stream takes, and the config keys that set the schedule."""

from datetime import datetime, timedelta, timezone

import pytest

from adapters.amocrm.reread import plan
from connector.config import loader as config
from connector.config.loader import ConfigError, SourceConfig

RUN = datetime(2026, 11, 23, 2, 0, tzinfo=timezone.utc)
RUN_ISO = "2026-11-23T02:00:00Z"


def cfg(**kw):
    return SourceConfig(name="main", kind="amocrm", base_url="https://x.amocrm.ru", access_token="t", **kw)


def at(hours_before: float) -> str:
    return (RUN - timedelta(hours=hours_before)).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_defaults_are_a_48_hour_reread_every_day_and_a_full_read_every_week():
    c = cfg()
    assert (c.reread_hours, c.reread_every_hours, c.reconcile_hours) == (48.0, 24.0, 168.0)


def test_first_read_is_full_and_counts_as_both_wider_reads():
    w = plan({}, RUN, cfg(), backdated=True)
    assert (w.start, w.kind, w.reread_at, w.reconciled_at) == (None, "full", RUN_ISO, RUN_ISO)


def test_between_rereads_the_window_starts_overlap_minutes_before_the_bookmark():
    saved = {"since": at(1), "reread_at": at(1), "reconciled_at": at(1)}
    w = plan(saved, RUN, cfg(), backdated=True)
    assert (w.start, w.kind) == (RUN - timedelta(hours=1, minutes=5), "incremental")
    assert (w.reread_at, w.reconciled_at) == (at(1), at(1))  # kept until a wider read is done


def test_a_day_after_the_last_reread_the_window_starts_48_hours_before_the_bookmark():
    saved = {"since": at(24), "reread_at": at(24), "reconciled_at": at(48)}
    w = plan(saved, RUN, cfg(), backdated=True)
    assert (w.start, w.kind) == (RUN - timedelta(hours=24 + 48), "reread")
    assert (w.reread_at, w.reconciled_at) == (RUN_ISO, at(48))
    # a nightly run a few minutes early still counts as a day later
    early = plan({**saved, "reread_at": at(23.9)}, RUN, cfg(), backdated=True)
    assert early.kind == "reread"


def test_a_week_after_the_last_reconcile_the_read_is_full():
    saved = {"since": at(24), "reread_at": at(24), "reconciled_at": at(168)}
    w = plan(saved, RUN, cfg(), backdated=True)
    assert (w.start, w.kind, w.reread_at, w.reconciled_at) == (None, "reconcile", RUN_ISO, RUN_ISO)


def test_keys_turn_rereads_off_or_make_them_every_run():
    saved = {"since": at(24), "reread_at": at(24), "reconciled_at": at(48)}
    assert plan(saved, RUN, cfg(reread_hours=0), backdated=True).kind == "incremental"
    fresh = {**saved, "reread_at": at(0.1)}
    assert plan(fresh, RUN, cfg(reread_every_hours=0), backdated=True).kind == "reread"
    assert plan(saved, RUN, cfg(reconcile_hours=0), backdated=True).kind == "reconcile"


def test_streams_amocrm_stamps_itself_and_old_bookmarks():
    # events cannot be dated back: always incremental, no wider-read times kept
    w = plan({"since": at(500)}, RUN, cfg(), backdated=False)
    assert (w.kind, w.reread_at, w.reconciled_at) == ("incremental", None, None)
    # a bookmark from before the wider reads counts from its `since`
    assert plan({"since": at(2)}, RUN, cfg(), backdated=True).kind == "incremental"
    assert plan({"since": at(30)}, RUN, cfg(), backdated=True).kind == "reread"


@pytest.mark.parametrize(
    "line,problem",
    [
        ("reread_hours = -1", "must be at least 0 and at most 8784, got -1"),
        ("reconcile_hours = 10000", "must be at least 0 and at most 8784, got 10000"),
        ('reread_every_hours = "daily"', "must be a number, got a string"),
    ],
)
def test_bad_reread_keys_name_the_file_and_key(tmp_path, line, problem):
    key = line.split(" ")[0]
    path = tmp_path / "config.toml"
    path.write_text(
        '[[sources]]\nname = "main"\nkind = "amocrm"\nbase_url = "https://x.amocrm.ru"\n'
        f'access_token = "t"\n{line}\n'
    )
    with pytest.raises(ConfigError) as err:
        config.load(str(path))
    assert str(err.value).startswith(f"{path}: sources[0]") and f".{key}: " in str(err.value)
    assert problem in str(err.value)
